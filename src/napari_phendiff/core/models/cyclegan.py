"""The CycleGAN baseline (Zhu et al. 2017), as the PhenDiff papers compare against it: two ResNet generators that
map condition A to B and B to A directly, and two 70x70 PatchGAN discriminators that only training needs.

    <checkpoint>/
      phendiff.json            manifest with kind "cyclegan" and the architecture
      cyclegan.safetensors     both generators: "ab.*" maps conditions[0] -> conditions[1], "ba.*" the reverse
      training/                only to resume: discriminators, optimizers, image pools (safetensors + JSON)

Layers follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix): instance norm without affine
parameters, reflection padding, weights drawn from N(0, 0.02). Only the widths are scaled down for a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import FORMAT_VERSION, MANIFEST, ConditionedModel
from ..errors import CheckpointError
from ..images import Normalization

WEIGHTS = "cyclegan.safetensors"
# Same names as the diffusion presets; `paper` is the original CycleGAN (ngf = ndf = 64, 9 residual blocks).
PRESETS: dict[str, dict] = {
    "tiny": dict(ngf=16, ndf=16, n_blocks=6),
    "small": dict(ngf=32, ndf=32, n_blocks=6),
    "paper": dict(ngf=64, ndf=64, n_blocks=9),
}
SIZE_MULTIPLE = 4        # the generator halves the resolution twice, then doubles it twice
MIN_SIZE = 32            # the discriminator divides by 8 and its last two 4x4 convolutions each remove a pixel
DISCRIMINATOR_LAYERS = 3


def architecture(preset: str, channels: int) -> dict:
    """The architecture recorded in the manifest, from which `load_cyclegan` rebuilds the generators."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    return {"channels": channels, "generator": "resnet", "discriminator": "patchgan 70x70",
            "n_layers": DISCRIMINATOR_LAYERS, "norm": "instance", **PRESETS[preset]}


def check_image_size(image_size: int) -> None:
    if image_size % SIZE_MULTIPLE or image_size < MIN_SIZE:
        raise ValueError(f"Image size {image_size} does not suit the CycleGAN: it must be a multiple of "
                         f"{SIZE_MULTIPLE} and at least {MIN_SIZE} px (e.g. --image-size 64).")


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection-padded so the size is kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n x R4ngf, u2ngf, ungf, c7s1-C, tanh: an image in, an image of the same size out."""

    def __init__(self, channels: int, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), _norm(ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
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
            previous, width = width, ndf * min(2 ** n, 8)
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
    """"ab" maps condition A (conditions[0]) to B, "ba" maps B to A."""
    generators = nn.ModuleDict({
        key: ResnetGenerator(arch["channels"], arch["ngf"], arch["n_blocks"]) for key in ("ab", "ba")})
    init_weights(generators)
    return generators


def build_discriminators(arch: dict) -> nn.ModuleDict:
    """"a" tells real images of condition A from translated ones, "b" the same for condition B."""
    discriminators = nn.ModuleDict({
        key: PatchDiscriminator(arch["channels"], arch["ndf"], arch["n_layers"]) for key in ("a", "b")})
    init_weights(discriminators)
    return discriminators


class ImagePool:
    """The last `size` translated images; the discriminator sees a mix of new and older ones, which damps the
    oscillation of adversarial training (Shrivastava et al. 2017). Draws come from a given numpy generator so a
    resumed run makes the same choices."""

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() > 0.5:
                index = int(rng.integers(self.size))
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> torch.Tensor:
        return torch.stack(self.images) if self.images else torch.zeros(0)

    def load(self, stacked: torch.Tensor, device: torch.device) -> None:
        self.images = [image.to(device) for image in stacked] if stacked.ndim == 4 else []


@dataclass
class CycleGANModel(ConditionedModel):
    """A loaded CycleGAN checkpoint: a direct mapping between its two conditions, no inversion."""

    generators: nn.ModuleDict
    conditions: list[str]
    channel_names: list[str]
    image_size: int
    normalization: Normalization
    manifest: dict = field(default_factory=dict)
    path: Path | None = None
    kind = "cyclegan"
    size_multiple = SIZE_MULTIPLE

    @property
    def device(self) -> torch.device:
        return next(self.generators.parameters()).device

    def map(self, x: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """Normalised images (B, C, H, W) of condition `source` as the generator renders them in `target`."""
        if source == target:
            return x
        return self.generators["ab" if (source, target) == (0, 1) else "ba"](x)

    def release(self) -> None:
        """Move the weights off the GPU and return its memory to the driver."""
        self.generators.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_cyclegan(path: Path, manifest: dict, device: torch.device) -> CycleGANModel:
    """Both generators from `cyclegan.safetensors`, in eval mode on `device` (never from a pickle)."""
    try:
        generators = build_generators(manifest["architecture"])
        generators.load_state_dict(load_file(path / WEIGHTS))
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path / WEIGHTS}: does not match the architecture in {MANIFEST} ({exc}); the "
                              "checkpoint is damaged. Copy it again or re-train.") from exc
    generators.to(device).eval().requires_grad_(False)
    return CycleGANModel(
        generators=generators,
        conditions=list(manifest["conditions"]),
        channel_names=list(manifest["channel_names"]),
        image_size=int(manifest["image_size"]),
        normalization=Normalization.from_dict(manifest["normalization"]),
        manifest=manifest,
        path=path,
    )


def write_cyclegan(folder: Path, generators: nn.ModuleDict, manifest: dict) -> None:
    """Write the manifest and the generators into `folder` (normally one from checkpoint.atomic_folder)."""
    save_file({k: v.detach().float().contiguous().cpu() for k, v in generators.state_dict().items()},
              folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, default=str))
