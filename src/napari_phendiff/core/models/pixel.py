"""PhenDiff (kind "pixel"): a class-conditional diffusers UNet2DModel on the normalised image itself, trained from
scratch, with the DDIM schedule. This module owns the kind: its loaded class, files, load, write and trainer.

    <checkpoint>/
      phendiff.json            manifest: kind, conditions, channels, normalisation, image size, config, provenance
      unet/                    diffusers UNet2DModel (EMA weights, safetensors): UNet2DModel.from_pretrained(ckpt/"unet")
      scheduler/               DDIMScheduler config: DDIMScheduler.from_pretrained(ckpt/"scheduler")
      training/                only to resume (core/training/)
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel

from ..checkpoint import manifest_kind, write_manifest
from ..device import get_device
from ..errors import CheckpointError, ConfigError
from ..options import PRESET_SIZES, TrainConfig
from ..training.diffusion import DiffusionTrainer
from .base import DiffusionModel
from .deep_features import DeepFeatureCache

REQUIRED_FILES = ["unet/diffusion_pytorch_model.safetensors", "unet/config.json", "scheduler/scheduler_config.json"]
# Three resolution levels would be the paper's; `tiny` adds a fourth so a CPU can afford attention (8x8 at 64 px).
PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=8),
    "small": dict(block_out_channels=(64, 128, 256), layers_per_block=2, norm_num_groups=32),
    "paper": dict(block_out_channels=(128, 256, 512), layers_per_block=2, norm_num_groups=32),
}
for _name, _spec in PRESETS.items():
    _spec["default_size"] = PRESET_SIZES[_name]

# Defaults chosen by measuring source->source reconstruction and translation on the simulator
# (docs/method.md, benchmarks/schedule_choice.py): v-prediction with the cosine schedule reconstructed best and came
# closest to the ground-truth translation. "leading" spacing keeps inversion off the last, ill-conditioned timestep
# of the cosine schedule (trailing spacing diverged there for epsilon models). Clipping stays off: it breaks the
# exactness of inversion.
SCHEDULE_DEFAULTS: dict = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="v_prediction",
    timestep_spacing="leading",
    steps_offset=0,
    clip_sample=False,
    set_alpha_to_one=True,
)


def build_unet(preset: str, channels: int, n_conditions: int, image_size: int) -> UNet2DModel:
    """A randomly initialised noise predictor with one class embedding per condition plus a null condition
    (index n_conditions) for classifier-free guidance."""
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    spec = PRESETS[preset]
    levels = len(spec["block_out_channels"])
    factor = 2 ** (levels - 1)
    if image_size % factor:
        raise ConfigError(f"Image size {image_size} must be a multiple of {factor} for the {preset!r} preset.")
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=spec["block_out_channels"],
        layers_per_block=spec["layers_per_block"],
        norm_num_groups=spec["norm_num_groups"],
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=n_conditions + 1,
    )


def size_multiple(unet: UNet2DModel) -> int:
    """Image sides the UNet accepts are multiples of this."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


@dataclass
class PixelModel(DiffusionModel):
    """A loaded PhenDiff checkpoint, ready to translate."""

    unet: UNet2DModel = field(kw_only=True)
    scheduler_config: dict = field(kw_only=True)
    kind = "pixel"

    def network(self) -> UNet2DModel:
        return self.unet

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (the UNet halves the resolution at each level)."""
        return size_multiple(self.unet)

    @property
    def bytes_per_pixel(self) -> int:
        """64 bytes per pixel and channel of the UNet's first level: `tiny` (32 channels) peaked at about 2.0 KB
        per pixel on whole fields (benchmarks/field_memory.py), rounded up."""
        return 64 * int(self.unet.config.block_out_channels[0])

    # What translate.py needs from a diffusion model. A pixel model diffuses the normalised image itself; a latent
    # model (models/latent.py) encodes it with a VAE and conditions through embeddings.
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the noise from which n new images are generated."""
        return (n, self.channels, self.image_size, self.image_size)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction (noise or v, as the scheduler config says) for conditions `labels`."""
        return self.unet(x, t, class_labels=labels).sample

    def deep_feature_cache(self) -> DeepFeatureCache:
        return DeepFeatureCache(self.unet)

    @contextlib.contextmanager
    def blended_condition(self, condition: int, other: int, weight: float):
        """While active, label `condition` gets weight x its class embedding + (1 - weight) x `other`'s: a forward
        hook on the UNet's embedding table (diffusers' UNet2DModel takes labels, not embeddings)."""
        table = self.unet.class_embedding
        with torch.no_grad():
            mixed = (1.0 - weight) * table.weight[other] + weight * table.weight[condition]

        def hook(module, inputs, output):
            rows = inputs[0] == condition
            if not bool(rows.any()):
                return output
            output = output.clone()
            output[rows] = mixed.to(output.dtype)
            return output

        handle = table.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


PhenDiffModel = PixelModel  # the name scripts written for earlier versions import


def load(path: Path, manifest: dict, device: str | torch.device) -> PixelModel:
    """The UNet (EMA weights, from safetensors) in eval mode on `device`, with the checkpoint's schedule."""
    device = get_device(device)
    unet = UNet2DModel.from_pretrained(path / "unet", use_safetensors=True).float()
    conditions, channels = len(manifest["conditions"]), len(manifest["channel_names"])
    if unet.config.num_class_embeds != conditions + 1 or unet.config.in_channels != channels:
        raise CheckpointError(
            f"{path}: the UNet knows {unet.config.num_class_embeds - 1} condition(s) and "
            f"{unet.config.in_channels} channel(s), the manifest names {conditions} and {channels}: "
            "the manifest was edited or belongs to another model. Copy the checkpoint again."
        )
    unet.to(device).eval().requires_grad_(False)
    return PixelModel(
        unet=unet,
        scheduler_config=dict(DDIMScheduler.load_config(path / "scheduler")),
        **PixelModel.described_by(manifest, path),
    )


def ddim_config(schedule: dict) -> dict:
    """The DDIM scheduler's config for a training schedule, as a checkpoint's scheduler/ folder holds it."""
    return dict(DDIMScheduler.from_config(schedule).config)


def write(folder: Path, unet: UNet2DModel, scheduler_config: dict, manifest: dict, half: bool = False) -> None:
    """Write manifest, unet/ and scheduler/ into `folder` (normally one from checkpoint.atomic_folder)."""
    if half:
        unet = _half_copy(unet)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    DDIMScheduler.from_config(scheduler_config).save_pretrained(folder / "scheduler")
    write_manifest(folder, manifest)


def _half_copy(unet: UNet2DModel) -> UNet2DModel:
    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    return copy.half()


# --- training -------------------------------------------------------------------------------------------------------


class PixelTrainable:
    """PhenDiff's pixel UNet, trained from scratch: every weight, on the normalised images themselves."""

    micro_batch = None  # the whole batch in one pass

    def __init__(self, config: TrainConfig, conditions: list[str], channels: int):
        self.preset = config.preset
        self.started_from = None
        if config.start_from:
            self.unet, self.schedule, self.started_from = start_from(config.start_from, conditions, channels)
        else:
            assert config.image_size is not None  # a kind trained from scratch: its preset's size when not given
            self.unet = build_unet(config.preset, channels, len(conditions), config.image_size)
            self.schedule = {**SCHEDULE_DEFAULTS, **config.schedule}
        self.denoiser = ClassConditional(self.unet)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.unet.named_parameters())

    def encode(self, clean: torch.Tensor) -> torch.Tensor:
        return clean

    def raw_weights(self) -> dict[str, torch.Tensor]:
        return self.unet.state_dict()

    def load_raw_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.unet.load_state_dict(weights)

    def manifest(self) -> dict:
        return {"started_from": self.started_from} if self.started_from else {}

    def write(self, folder: Path, manifest: dict) -> None:
        write(folder, self.unet, self.schedule, manifest)

    def as_model(self, fields: dict) -> PixelModel:
        """The UNet being trained, as a loaded checkpoint would hold it (for previews)."""
        return PixelModel(unet=self.unet, scheduler_config=ddim_config(self.schedule), **fields)

    def describe(self) -> str:
        if self.started_from:
            rows = self.started_from["condition_rows"]
            return (
                f"{self.preset} pixel model started from {self.started_from['checkpoint']} ("
                + ", ".join(f"{new} <- {old}" for new, old in rows.items())
                + ")"
            )
        return f"{self.preset} pixel model"


def start_from(checkpoint: str, conditions: list[str], channels: int) -> tuple[UNet2DModel, dict, dict]:
    """A UNet holding a pixel checkpoint's weights for a new folder's conditions, its schedule, and what was done.

    Every weight is the checkpoint's except the condition rows of the class-embedding table: a condition of the new
    folder with the same name as one of the checkpoint's keeps that row; a new one starts from the checkpoint's null
    condition (so at step 0 it generates as the unconditioned model does), and the null row stays the null row.
    """
    from ..checkpoint import NAMED_CHECKPOINTS, resolve_checkpoint
    from . import read_manifest

    path = resolve_checkpoint(checkpoint)
    manifest = read_manifest(path)
    if manifest_kind(manifest) != "pixel":
        raise ConfigError(
            f"{path}: is a {manifest.get('kind')!r} checkpoint; a pixel model starts only from a pixel "
            "checkpoint (PhenDiff). Choose one trained with the pixel model, or train from scratch."
        )
    old = load(path, manifest, "cpu").unet
    if old.config.in_channels != channels:
        raise ConfigError(
            f"{path}: was trained on images with {old.config.in_channels} channel(s) "
            f"({', '.join(manifest['channel_names'])}), the folder's have {channels}. Start from a "
            "checkpoint trained on the same channels, or train from scratch."
        )
    old_conditions = list(manifest["conditions"])
    unet = UNet2DModel.from_config({**old.config, "num_class_embeds": len(conditions) + 1})
    weights = {k: v for k, v in old.state_dict().items() if not k.startswith("class_embedding.")}
    unet.load_state_dict(weights, strict=False)
    table, null = old.class_embedding.weight.detach(), len(old_conditions)
    rows = {c: (c if c in old_conditions else "null") for c in conditions}
    with torch.no_grad():
        for i, condition in enumerate(conditions):
            unet.class_embedding.weight[i] = table[
                old_conditions.index(condition) if condition in old_conditions else null
            ]
        unet.class_embedding.weight[len(conditions)] = table[null]
    schedule = dict(manifest.get("schedule") or DDIMScheduler.load_config(path / "scheduler"))
    schedule = {k: v for k, v in schedule.items() if not k.startswith("_")}
    source = str(checkpoint) if str(checkpoint) in NAMED_CHECKPOINTS else str(path.resolve())
    return (
        unet.train(),
        schedule,
        {
            "checkpoint": source,
            "trained_steps": manifest.get("trained_steps"),
            "conditions": old_conditions,
            "condition_rows": rows,
        },
    )


class ClassConditional(torch.nn.Module):
    """The pixel UNet called as the loop calls every denoiser: (noisy, t, condition labels) -> prediction."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, t, class_labels=labels).sample


class Trainer(DiffusionTrainer):
    @classmethod
    def prepare(cls, config: TrainConfig) -> TrainConfig:
        if config.start_from:
            _check_start_preset(config, config.start_from)
        factor = 2 ** (len(PRESETS[config.preset]["block_out_channels"]) - 1)
        if config.image_size % factor:  # before any image is read
            raise ConfigError(
                f"Image size {config.image_size} must be a multiple of {factor} for the "
                f"{config.preset!r} preset (e.g. {max(factor, config.image_size // factor * factor)})."
            )
        return super().prepare(config)

    def make_trainable(self, config: TrainConfig, data) -> PixelTrainable:
        return PixelTrainable(config, data.conditions, data.channels)


def _check_start_preset(config: TrainConfig, checkpoint: str) -> None:
    """A run that starts from a checkpoint has that checkpoint's architecture: refuse a preset that says otherwise
    (before any image is read) rather than record a preset the weights are not."""
    from ..checkpoint import resolve_checkpoint
    from . import read_manifest

    path = resolve_checkpoint(checkpoint)
    preset = read_manifest(path).get("preset")
    if preset is not None and preset != config.preset:
        raise ConfigError(
            f"{path}: is a {preset!r} model, but the preset is {config.preset!r}. Choose the preset "
            f"{preset!r} (--preset {preset}) to start from it."
        )
