"""The CycleGAN's networks (Zhu et al. 2017): ResNet generators that map one condition's images to the other's,
and 70x70 PatchGAN discriminators that judge patches as real or translated.

Layers follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix): instance norm without affine
parameters, reflection padding, weights drawn from N(0, 0.02). models/cyclegan.py sizes them (its presets), loads,
writes and trains them.
"""

from __future__ import annotations

import torch
from torch import nn

DISCRIMINATOR_LAYERS = 3  # convolutions of stride 2 after the first: each output pixel then judges a 70x70 patch


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection-padded so the size is kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n x R4ngf, u2ngf, ungf, c7s1-C, tanh: an image in, an image of the same size out."""

    def __init__(self, channels: int, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                _norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                _norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """C64-C128-C256-C512 (4x4 convolutions, LeakyReLU 0.2, no norm on the first) then a 1-channel map: each output
    pixel judges one 70x70 patch of the input (with n_layers = 3) as real or translated."""

    def __init__(self, channels: int, ndf: int = 64, n_layers: int = DISCRIMINATOR_LAYERS):
        super().__init__()
        layers = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            previous, width = width, ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(previous, width, 4, stride=stride, padding=1), _norm(width), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def receptive_field(module: nn.Module) -> int:
    """Side in pixels of the input patch that one output pixel of a stack of convolutions sees."""
    field_size, jump = 1, 1
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            field_size += (layer.kernel_size[0] - 1) * jump
            jump *= layer.stride[0]
    return field_size


def init_weights(module: nn.Module) -> None:
    """The reference initialisation: convolution weights from N(0, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_generators(arch: dict) -> nn.ModuleDict:
    """ "ab" maps condition A (conditions[0]) to B, "ba" maps B to A."""
    generators = nn.ModuleDict(
        {key: ResnetGenerator(arch["channels"], arch["ngf"], arch["n_blocks"]) for key in ("ab", "ba")}
    )
    init_weights(generators)
    return generators


def build_discriminators(arch: dict) -> nn.ModuleDict:
    """ "a" tells real images of condition A from translated ones, "b" the same for condition B."""
    discriminators = nn.ModuleDict(
        {key: PatchDiscriminator(arch["channels"], arch["ndf"], arch["n_layers"]) for key in ("a", "b")}
    )
    init_weights(discriminators)
    return discriminators
