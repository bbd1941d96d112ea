"""Model kinds: one module each, found through the registry KINDS.

A kind's module (core/models/<module>.py) owns everything about it: its loaded class, REQUIRED_FILES (besides the
manifest), `load(path, manifest, device)` (device: a name such as "auto", or a torch.device) and `Trainer` (what core/training/run.py drives). A new kind is one module
and one line below; nothing else in the tree names a kind. Importing this package is light (no torch): the command
line reads the kinds' names and descriptions from here to build its choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import CheckpointError, PhenDiffError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Kind:
    """A model kind as options, docks and the loaders need to know it, without importing its module."""

    module: str  # core/models/<module>.py
    help: str  # for a biologist choosing one
    generates: bool = True  # draws new images from noise (training previews, the generalization analysis)
    fine_tunes: bool = False  # fine-tunes a pre-trained base (--base, --adapter); else from scratch at a --preset
    starts_from: bool = False  # a run can start from a checkpoint of this kind (--start-from) instead of random weights
    lr: float = 2e-4  # peak learning rate when trained from scratch (a fine-tuned kind's is its adapter's)
    deep_cache: int = 1  # a translation's deep cache when none is given (1: off; the kind's model must offer one)


KINDS: dict[str, Kind] = {
    # deep cache 2: the demo's transfer and medians kept both ways at 0.70-0.82 of the time; 3 was faster (0.59-0.63)
    # but overshot the demo's TNFa -> untreated median (0.50 vs 0.53 every step whole, 0.58 real): docs/benchmarks.md
    "pixel": Kind(
        "pixel",
        "PhenDiff, trained from scratch or from a checkpoint (--start-from)",
        starts_from=True,
        deep_cache=2,
    ),
    "latent": Kind(
        "latent",
        "Phen-LDiff, fine-tunes a pre-trained latent diffusion model: the shipped microscopy "
        "base or a Stable Diffusion (--base)",
        fine_tunes=True,
    ),
    "cyclegan": Kind("cyclegan", "the CycleGAN baseline", generates=False),  # 2e-4: its paper's rate
}


def kind_module(kind: str) -> ModuleType:
    """The module owning a model kind (imported on first use)."""
    if kind not in KINDS:
        raise CheckpointError(
            f"Unknown model kind {kind!r}: this napari-phendiff knows {', '.join(KINDS)}. "
            "Upgrade napari-phendiff if the checkpoint is from a newer version."
        )
    return import_module(f".{KINDS[kind].module}", __name__)


def read_manifest(path_or_name: str | Path) -> dict:
    """The manifest of a checkpoint folder (or "demo"), after checking the file format and that the folder holds
    every file its kind needs. Reads no weights."""
    from ..checkpoint import check_weights, manifest_kind, read_format, resolve_checkpoint

    path = resolve_checkpoint(path_or_name)
    manifest = read_format(path)
    kind = manifest_kind(manifest)
    if kind not in KINDS:
        raise CheckpointError(
            f"{path}: unknown model kind {kind!r} (this napari-phendiff knows "
            f"{', '.join(KINDS)}). Upgrade napari-phendiff."
        )
    for needed in kind_module(kind).REQUIRED_FILES:
        if not (path / needed).is_file():
            raise CheckpointError(
                f"{path}: {needed} is missing; the checkpoint is incomplete (was it "
                "copied while training was writing it?). Copy it again or re-train."
            )
    check_weights(path, manifest)
    return manifest


def inference_layout(network: nn.Module) -> None:
    """On a CPU, the network's weights in channels-last layout, which oneDNN's convolutions run faster: measured
    1.22x in bf16 and 1.29x in fp32 on a 1024-px field here, with the same transfer and identity (docs/benchmarks.md
    cpu_levers). GPUs: not measured, left as they are."""
    import torch  # here: the registry is read without torch (core/options.py)

    for parameter in network.parameters():  # what network.to(memory_format=...) does, typed
        if parameter.device.type == "cpu" and parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)


def load_checkpoint(path_or_name: str | Path = "demo", device="auto"):
    """Load a checkpoint folder (or the shipped "demo") for translation, with its EMA weights in eval mode.

    Returns the kind's model: a PixelModel (PhenDiff), a LatentModel (Phen-LDiff) or a CycleGANModel.
    """
    from ..checkpoint import manifest_kind, resolve_checkpoint

    from safetensors import SafetensorError

    path = resolve_checkpoint(path_or_name)
    manifest = read_manifest(path)
    try:
        model = kind_module(manifest_kind(manifest)).load(path, manifest, device)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, EnvironmentError) as exc:
        if isinstance(exc, PhenDiffError):
            raise
        raise CheckpointError(
            f"{path}: its weights cannot be loaded ({type(exc).__name__}: {str(exc)[:300]}). A "
            "file is truncated, damaged or from another model; copy the checkpoint again or "
            "re-train."
        ) from exc
    inference_layout(model.network())
    return model
