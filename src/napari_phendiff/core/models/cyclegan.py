"""The CycleGAN baseline (Zhu et al. 2017), as the PhenDiff papers compare against it: two ResNet generators that
map condition A to B and B to A directly, and two 70x70 PatchGAN discriminators that only training needs.

    <checkpoint>/
      phendiff.json            manifest with kind "cyclegan" and the architecture
      cyclegan.safetensors     both generators: "ab.*" maps conditions[0] -> conditions[1], "ba.*" the reverse
      training/                only to resume: discriminators, optimizers, image pools (safetensors + JSON)

This module owns the kind: its sizes (presets), the loaded model (a direct mapping, no inversion), load, write, and
the Trainer with the original objective (below). The networks, as in the reference implementation, are in
models/cyclegan_networks.py; only the widths are scaled down for a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
import torch.nn.functional as F
from torch import nn

from ..checkpoint import MANIFEST, load_training_state, save_training_state, write_manifest
from ..dataset import LabelledImages, TrainingSamples, scan_folder
from ..device import get_device
from ..errors import CheckpointError, ConfigError, DataError
from ..images import Normalization
from ..options import TrainConfig
from .base import DirectModel
from .cyclegan_networks import DISCRIMINATOR_LAYERS, build_discriminators, build_generators

WEIGHTS = "cyclegan.safetensors"
REQUIRED_FILES = [WEIGHTS]
# Same names as the diffusion presets; `paper` is the original CycleGAN (ngf = ndf = 64, 9 residual blocks).
PRESETS: dict[str, dict] = {
    "tiny": dict(ngf=16, ndf=16, n_blocks=6),
    "small": dict(ngf=32, ndf=32, n_blocks=6),
    "paper": dict(ngf=64, ndf=64, n_blocks=9),
}
SIZE_MULTIPLE = 4  # the generator halves the resolution twice, then doubles it twice
MIN_SIZE = 32  # the discriminator divides by 8 and its last two 4x4 convolutions each remove a pixel


def architecture(preset: str, channels: int) -> dict:
    """The architecture recorded in the manifest, from which `load` rebuilds the generators."""
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    return {
        "channels": channels,
        "generator": "resnet",
        "discriminator": "patchgan 70x70",
        "n_layers": DISCRIMINATOR_LAYERS,
        "norm": "instance",
        **PRESETS[preset],
    }


def check_image_size(image_size: int) -> None:
    if image_size % SIZE_MULTIPLE or image_size < MIN_SIZE:
        raise ConfigError(
            f"Image size {image_size} does not suit the CycleGAN: it must be a multiple of "
            f"{SIZE_MULTIPLE} and at least {MIN_SIZE} px (e.g. --image-size 64)."
        )


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
class CycleGANModel(DirectModel):
    """A loaded CycleGAN checkpoint: a direct mapping between its two conditions, no inversion."""

    generators: nn.ModuleDict = field(kw_only=True)
    kind = "cyclegan"
    size_multiple = SIZE_MULTIPLE

    def network(self) -> nn.ModuleDict:
        return self.generators

    def map(self, x: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """Normalised images (B, C, H, W) of condition `source` as the generator renders them in `target`."""
        if source == target:
            return x
        return self.generators["ab" if (source, target) == (0, 1) else "ba"](x)


def load(path: Path, manifest: dict, device: str | torch.device) -> CycleGANModel:
    """Both generators from `cyclegan.safetensors`, in eval mode on `device` (never from a pickle)."""
    device = get_device(device)
    if len(manifest["conditions"]) != 2 or manifest.get("architecture", {}).get("channels") != len(
        manifest["channel_names"]
    ):
        raise CheckpointError(
            f"{path / MANIFEST}: a CycleGAN maps two conditions with the channels of its "
            "architecture; the manifest names others (edited or damaged). Copy it again."
        )
    try:
        generators = build_generators(manifest["architecture"])
        generators.load_state_dict(load_file(path / WEIGHTS))
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path / WEIGHTS}: does not match the architecture in {MANIFEST} ({exc}); the "
            "checkpoint is damaged. Copy it again or re-train."
        ) from exc
    generators.to(device).eval().requires_grad_(False)
    return CycleGANModel(
        generators=generators,
        **CycleGANModel.described_by(manifest, path),
    )


def write_cyclegan(folder: Path, generators: nn.ModuleDict, manifest: dict) -> None:
    """Write the manifest and the generators into `folder` (normally one from checkpoint.atomic_folder)."""
    save_file({k: v.detach().float().contiguous().cpu() for k, v in generators.state_dict().items()}, folder / WEIGHTS)
    write_manifest(folder, manifest)


# --- training -------------------------------------------------------------------------------------------------------
# The objective is the original one (Zhu et al. 2017), with A = conditions[0] and B = conditions[1]:
#
#     generators:      LSGAN  (D_b(G_ab(a)) - 1)^2 + (D_a(G_ba(b)) - 1)^2
#                    + cycle  10 * (|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b|)
#                    + identity 0.5 * 10 * (|G_ab(b) - b| + |G_ba(a) - a|)
#     discriminators:  0.5 * ((D(real) - 1)^2 + D(translated from the pool of 50)^2), for D_a and D_b
#
# Adam (lr 2e-4, betas 0.5 and 0.999) for both pairs, the learning rate constant for the first half of the steps and
# then decaying linearly to 0. The unpaired batches of step s are a pure function of (seed, s), and the image pools
# are saved with the checkpoint, so a resumed run continues exactly as if it had not stopped. One device, full
# precision; the original uses batches of 1, and 1-4 is usual (the batch size is used as given).

LAMBDA_CYCLE = 10.0
LAMBDA_IDENTITY = 0.5  # times LAMBDA_CYCLE
POOL_SIZE = 50
BETAS = (0.5, 0.999)
OBJECTIVE = {
    "gan": "lsgan",
    "lambda_cycle": LAMBDA_CYCLE,
    "lambda_identity": LAMBDA_IDENTITY,
    "pool_size": POOL_SIZE,
    "optimizer": "adam",
    "betas": list(BETAS),
    "lr_schedule": "constant for the first half of the steps, then linear decay to 0",
}


class Trainer:
    """What core/training/run.py drives for the CycleGAN: the generators' and discriminators' steps; the "step" loss
    is the generators' loss."""

    is_main = True  # one device, one process

    @classmethod
    def prepare(cls, config: TrainConfig) -> TrainConfig:
        folder = scan_folder(config.data)
        if len(folder.conditions) != 2:
            raise DataError(
                f"{config.data}: the CycleGAN maps between exactly two conditions, but the folder has "
                f"{len(folder.conditions)} ({', '.join(folder.conditions)}). Give a folder with two "
                "subfolders, e.g. one holding links to the untreated and one to the treated images."
            )
        if config.optimizer != "adamw":
            raise ConfigError(
                f"The CycleGAN baseline trains with its paper's Adam; leave out optimizer {config.optimizer!r}."
            )
        if config.mixed_precision not in ("auto", "no"):
            raise ConfigError(
                f"The CycleGAN baseline trains in full precision; leave out mixed precision "
                f"{config.mixed_precision!r} (or give 'no')."
            )
        assert config.image_size is not None  # a kind trained from scratch: its preset's size when not given
        check_image_size(config.image_size)
        return config

    @classmethod
    def resume_problems(cls, manifest: dict, config: TrainConfig) -> list[str]:
        return []

    def __init__(self, config: TrainConfig, data: LabelledImages, normalization: Normalization):
        assert config.lr is not None and config.steps is not None  # TrainConfig sets both when made
        self.config, self.data, self.normalization = config, data, normalization
        self.device = get_device(config.device)
        self.arch = architecture(config.preset, data.channels)
        torch.manual_seed(config.seed)  # same initial weights for the same seed
        self.generators = build_generators(self.arch).to(self.device)
        self.discriminators = build_discriminators(self.arch).to(self.device)
        self.opt_g = torch.optim.Adam(self.generators.parameters(), lr=config.lr, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.discriminators.parameters(), lr=config.lr, betas=BETAS)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, _linear_decay(config.steps))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, _linear_decay(config.steps))
        self.pools = {"a": ImagePool(POOL_SIZE), "b": ImagePool(POOL_SIZE)}

    def wait(self) -> None:
        pass

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.generators.parameters(), *self.discriminators.parameters()]

    def load_state(self, folder: Path) -> int:
        weights, state = load_training_state(folder / "generators", self.opt_g, self.sched_g)
        self.generators.load_state_dict(weights)
        weights, _ = load_training_state(folder / "discriminators", self.opt_d, self.sched_d)
        self.discriminators.load_state_dict(weights)
        for key, stacked in load_file(folder / "pools.safetensors").items():
            self.pools[key].load(stacked, self.device)
        return int(state["step"])

    def batches(self, start: int):
        """Condition A's batch is stream 0 and B's is stream 1 of the step; the pools draw from stream 2."""
        config = self.config
        assert config.image_size is not None and config.steps is not None  # TrainConfig sets both when made
        samples = [
            TrainingSamples(
                _one_condition(self.data, c),
                self.normalization,
                config.image_size,
                resize=config.resize,
                seed=config.seed,
            )
            for c in (0, 1)
        ]
        self.generators.train()
        self.discriminators.train()
        for step in range(start, config.steps):
            yield (
                samples[0].batch(step, 0, config.batch_size)[0].to(self.device),
                samples[1].batch(step, 1, config.batch_size)[0].to(self.device),
                np.random.default_rng([config.seed, step, 2]),
            )

    def step(self, batch, step: int) -> tuple[float, float, str]:
        real_a, real_b, rng = batch
        loss_g, loss_d = _step(
            self.generators, self.discriminators, self.opt_g, self.opt_d, self.pools, real_a, real_b, rng
        )
        self.sched_g.step()
        self.sched_d.step()
        return loss_g, float(self.sched_g.get_last_lr()[0]), f"discriminators {loss_d:.4f}"

    def write(self, folder: Path, manifest: dict) -> None:
        write_cyclegan(folder, self.generators, manifest)

    def save_state(self, folder: Path, step: int) -> None:
        save_training_state(
            folder / "generators", self.generators.state_dict(), self.opt_g, self.sched_g, {"step": step}
        )
        save_training_state(
            folder / "discriminators", self.discriminators.state_dict(), self.opt_d, self.sched_d, {"step": step}
        )
        save_file({k: p.state().contiguous().cpu() for k, p in self.pools.items()}, folder / "pools.safetensors")

    def manifest(self) -> dict:
        return {"architecture": self.arch, "objective": OBJECTIVE}

    def describe(self) -> str:
        return f"CycleGAN {self.config.preset} ({self.data.conditions[0]} <-> {self.data.conditions[1]})"

    def hardware(self) -> str:
        return f"{self.device}, batch {self.config.batch_size} per condition"


def _step(generators, discriminators, opt_g, opt_d, pools, real_a, real_b, rng) -> tuple[float, float]:
    """One optimisation step of the generators, then one of the discriminators; returns both losses."""
    g_ab, g_ba, d_a, d_b = generators["ab"], generators["ba"], discriminators["a"], discriminators["b"]
    fake_b, fake_a = g_ab(real_a), g_ba(real_b)

    discriminators.requires_grad_(False)  # the generators' loss must not train the discriminators
    loss_g = (
        _lsgan(d_b(fake_b), True)
        + _lsgan(d_a(fake_a), True)
        + LAMBDA_CYCLE * (F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b))
        + LAMBDA_CYCLE * LAMBDA_IDENTITY * (F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a))
    )
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    discriminators.requires_grad_(True)
    pooled_b, pooled_a = pools["b"].query(fake_b, rng), pools["a"].query(fake_a, rng)
    loss_d = 0.5 * (
        _lsgan(d_b(real_b), True)
        + _lsgan(d_b(pooled_b), False)
        + _lsgan(d_a(real_a), True)
        + _lsgan(d_a(pooled_a), False)
    )
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return float(loss_g.detach()), float(loss_d.detach())


def _lsgan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: the patch map is pushed towards 1 (real) or 0 (translated)."""
    return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if real else 0.0))


def _linear_decay(steps: int):
    """LR factor: 1 for the first half of the steps, then linearly down to 0 at the last step."""
    half = steps // 2

    def factor(step: int) -> float:
        return 1.0 - max(0, step - half) / max(1, steps - half)

    return factor


def _one_condition(data: LabelledImages, condition: int) -> LabelledImages:
    """The images of one condition, as a one-condition folder (so TrainingSamples draws from it alone)."""
    keep = [i for i, label in enumerate(data.labels) if label == condition]
    return LabelledImages(
        root=data.root,
        conditions=[data.conditions[condition]],
        images=[data.images[i] for i in keep],
        labels=[0] * len(keep),
        paths=[data.paths[i] for i in keep],
    )
