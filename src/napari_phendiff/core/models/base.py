"""What every loaded model offers, and the two ways a model translates.

A *diffusion* model (pixel PhenDiff, latent Phen-LDiff) is inverted to noise under the source condition and
regenerated under the target (core/translate.py needs only encode, predict, decode and noise_shape from it). A
*direct* model (the CycleGAN baseline) maps an image of one condition to another in one call (`map`).
The engine asks which of the two a model is with `isinstance`, never by the kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..images import Normalization
from ..options import condition_name


@dataclass
class ConditionedModel:
    """What every loaded model offers: its conditions and channels by name, where it came from, and release().
    A kind adds its networks as keyword-only fields and names the one to move in `network()`."""

    conditions: list[str]
    channel_names: list[str]
    image_size: int
    normalization: Normalization
    manifest: dict = field(default_factory=dict)
    path: Path | None = None
    kind = ""

    @property
    def bytes_per_pixel(self) -> int:
        """Peak activation memory per pixel of one image in one network call, for choosing whole fields or tiles
        (core/tiling.py); a cautious guess where nothing was measured (latent: the VAE at full resolution)."""
        return 16_384

    @property
    def size_multiple(self) -> int:
        """Each side of a field the network takes is a multiple of this (a UNet's downsamplings); fields are
        padded to it. 1 where the network takes any size."""
        return 1

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def condition_index(self, name: str) -> int:
        """The index of a condition, whichever Unicode form its name was written in (options.condition_name)."""
        known = [condition_name(c) for c in self.conditions]
        if condition_name(name) not in known:
            raise CheckpointError(
                f"Condition {name!r} is not in checkpoint {self.path or ''}: it knows {', '.join(self.conditions)}."
            )
        return known.index(condition_name(name))

    @staticmethod
    def described_by(manifest: dict, path: Path) -> dict:
        """The fields every kind reads from its manifest, for its constructor."""
        return dict(
            conditions=list(manifest["conditions"]),
            channel_names=list(manifest["channel_names"]),
            image_size=int(manifest["image_size"]),
            normalization=Normalization.from_dict(manifest["normalization"]),
            manifest=manifest,
            path=path,
        )

    def network(self) -> torch.nn.Module:
        """The weights that translate (what `device` reports and `release` moves)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.network().parameters()).device

    def release(self) -> None:
        """Move the weights off the GPU and return its memory to the driver."""
        self.network().to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class DiffusionModel(ConditionedModel):
    """A conditional denoiser: translated by DDIM inversion under the source and regeneration under the target.

    Subclasses give encode (normalised image -> what is diffused), decode (the reverse), noise_shape(n) and
    predict(x, t, labels) (noise or v, as `scheduler_config` says); label `null_condition` means "no condition".
    """

    scheduler_config: dict

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, C, H, W) -> what is diffused."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """What is diffused -> normalised images (B, C, H, W)."""
        raise NotImplementedError

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the noise from which n new images are generated."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The network's prediction (noise or v, as `scheduler_config` says) for conditions `labels`."""
        raise NotImplementedError

    def deep_feature_cache(self):
        """A DeepFeatureCache (models/deep_features.py) over this model's network, for regenerations that reuse
        deep features between steps. Only kinds whose UNet it knows give one."""
        raise ConfigError(
            f"{self.kind} checkpoints cannot reuse deep features between steps (deep cache); set it to 1 (off)."
        )

    @property
    def null_condition(self) -> int:
        """Class index meaning "no condition" (used by classifier-free guidance)."""
        return len(self.conditions)

    def kept_in_walk(self, keep: list[int]) -> list[int]:
        """The kept channels the DDIM walk itself can hold at the inversion's values: all of them when the model
        diffuses the image's own channels (the default); a model that diffuses something else keeps none in the
        walk, and the engine pastes them after decoding."""
        return keep

    def blended_condition(self, condition: int, other: int, weight: float):
        """A context in which `condition` means weight x its own embedding + (1 - weight) x `other`'s (the morph's
        embedding path). Only kinds that condition through an embedding table give one."""
        raise ConfigError(f"{self.kind} checkpoints cannot blend two conditions; morph by strength instead.")


class DirectModel(ConditionedModel):
    """A model that maps normalised images (B, C, H, W) of one condition to another in one call: `map`."""

    def map(self, x: torch.Tensor, source: int, target: int) -> torch.Tensor:
        raise NotImplementedError


def is_direct(model) -> bool:
    """A direct mapping between conditions (CycleGAN's generators) rather than a diffusion model."""
    return isinstance(model, DirectModel)
