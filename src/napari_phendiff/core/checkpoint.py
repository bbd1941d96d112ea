"""The checkpoint on disk: a folder any diffusers user can open, written atomically, loaded without pickle.

    <checkpoint>/
      phendiff.json            manifest: kind, conditions, channels, normalisation, image size, config, provenance
      unet/                    diffusers UNet2DModel (EMA weights, safetensors): UNet2DModel.from_pretrained(ckpt/"unet")
      scheduler/               DDIMScheduler config: DDIMScheduler.from_pretrained(ckpt/"scheduler")
      training/                only to resume: raw weights, their moving average (average.safetensors), optimizer
                               and LR-scheduler state (safetensors + JSON)

That is a pixel (PhenDiff) checkpoint; a latent one (models/latent.py) holds a reference to its base model and only
the trained parameters, a CycleGAN one (models/cyclegan.py) its two generators in cyclegan.safetensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from .device import get_device
from .errors import CheckpointError
from .images import Normalization
from .models.pixel import size_multiple

FORMAT_VERSION = 1
MANIFEST = "phendiff.json"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "demo"
NAMED_CHECKPOINTS = {"demo": DEMO_CHECKPOINT}
# What each model kind must hold, besides the manifest.
REQUIRED_FILES = {
    "pixel": ["unet/diffusion_pytorch_model.safetensors", "unet/config.json", "scheduler/scheduler_config.json"],
    "latent": ["scheduler/scheduler_config.json", "conditions.safetensors"],
    "cyclegan": ["cyclegan.safetensors"],
}


class ConditionedModel:
    """What every loaded model offers (pixel, latent, CycleGAN): its conditions and channels, by name."""

    conditions: list[str]
    channel_names: list[str]
    path: Path | None
    # Peak activation memory per pixel of one image in one network call, for choosing whole fields or tiles
    # (core/translate.py); a cautious guess where nothing was measured (latent: the VAE at full resolution).
    bytes_per_pixel: int = 16_384

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def condition_index(self, name: str) -> int:
        if name not in self.conditions:
            raise CheckpointError(
                f"Condition {name!r} is not in checkpoint {self.path or ''}: it knows {', '.join(self.conditions)}."
            )
        return self.conditions.index(name)


@dataclass
class PhenDiffModel(ConditionedModel):
    """A loaded checkpoint, ready to translate."""

    unet: UNet2DModel
    scheduler_config: dict
    conditions: list[str]
    channel_names: list[str]
    image_size: int
    normalization: Normalization
    manifest: dict = field(default_factory=dict)
    path: Path | None = None
    kind = "pixel"

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def null_condition(self) -> int:
        """Class index meaning "no condition" (used by classifier-free guidance)."""
        return len(self.conditions)

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (the UNet halves the resolution at each level)."""
        return size_multiple(self.unet)

    @property
    def bytes_per_pixel(self) -> int:
        """64 bytes per pixel and channel of the UNet's first level: `tiny` (32 channels) peaked at about 2.0 KB
        per pixel on whole fields (benchmarks/field_memory.py), rounded up."""
        return 64 * int(self.unet.config.block_out_channels[0])

    # The three methods translate.py needs from a diffusion model. A pixel model diffuses the normalised image
    # itself; a latent model (models/latent.py) encodes it with a VAE and conditions through embeddings.
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

    def release(self) -> None:
        """Move the weights off the GPU and return its memory to the driver."""
        self.unet.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint folder from a path or a shipped name ("demo")."""
    if str(path_or_name) in NAMED_CHECKPOINTS:
        return NAMED_CHECKPOINTS[str(path_or_name)]
    path = Path(path_or_name).expanduser()
    if not path.is_dir():
        names = ", ".join(repr(n) for n in NAMED_CHECKPOINTS)
        raise CheckpointError(f"{path}: no such checkpoint folder. Give a folder written by `phendiff train`, "
                              f"or one of the shipped checkpoints: {names}.")
    return path


def read_manifest(path: str | Path) -> dict:
    """The manifest of a checkpoint folder, after checking the folder is complete and holds no pickle."""
    path = resolve_checkpoint(path)
    refuse_pickles(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: is not a napari-phendiff checkpoint ({MANIFEST} is missing). "
                              "Point at the folder written by `phendiff train`.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: cannot be read ({exc}); the checkpoint is damaged.") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format version {version!r}, this napari-phendiff reads version "
                              f"{FORMAT_VERSION}. Upgrade napari-phendiff, or re-train with this version.")
    kind = manifest.get("kind", "pixel")
    if kind not in REQUIRED_FILES:
        raise CheckpointError(f"{manifest_path}: unknown model kind {kind!r} (this napari-phendiff knows "
                              f"{', '.join(REQUIRED_FILES)}). Upgrade napari-phendiff.")
    for needed in REQUIRED_FILES[kind]:
        if not (path / needed).is_file():
            raise CheckpointError(f"{path}: {needed} is missing; the checkpoint is incomplete (was it "
                                  "copied while training was writing it?). Copy it again or re-train.")
    return manifest


def refuse_pickles(path: Path) -> None:
    """Pickled weights can run arbitrary code when loaded: refuse them without opening them."""
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise CheckpointError(
            f"{path}: contains pickled weights ({', '.join(str(p.relative_to(path)) for p in found[:3])}), which "
            "napari-phendiff never loads because unpickling can execute code. Convert them to safetensors "
            "(load them yourself if you trust their source, then save_pretrained(..., safe_serialization=True))."
        )


def load_checkpoint(path_or_name: str | Path = "demo", device: str | torch.device = "auto"):
    """Load a checkpoint folder (or the shipped "demo") for translation, with its EMA weights in eval mode.

    Returns a PhenDiffModel (pixel diffusion), a LatentModel (Phen-LDiff) or a CycleGANModel, by the manifest's kind.
    """
    path = resolve_checkpoint(path_or_name)
    manifest = read_manifest(path)
    kind = manifest.get("kind", "pixel")
    if kind == "latent":
        from .models.latent import load_latent

        return load_latent(path, manifest, get_device(device))
    if kind == "cyclegan":
        from .models.cyclegan import load_cyclegan

        return load_cyclegan(path, manifest, get_device(device))
    unet = UNet2DModel.from_pretrained(path / "unet", use_safetensors=True).float()
    unet.to(get_device(device)).eval().requires_grad_(False)
    scheduler_config = dict(DDIMScheduler.load_config(path / "scheduler"))
    return PhenDiffModel(
        unet=unet,
        scheduler_config=scheduler_config,
        conditions=list(manifest["conditions"]),
        channel_names=list(manifest["channel_names"]),
        image_size=int(manifest["image_size"]),
        normalization=Normalization.from_dict(manifest["normalization"]),
        manifest=manifest,
        path=path,
    )


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success it replaces `out`, on failure it is removed,
    so a crash never leaves a half-written checkpoint where a reader would look."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    try:
        yield tmp
        _readable_by_all(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readable_by_all(folder: Path) -> None:
    """Temporary folders and files are private (0700/0600); a checkpoint gets the usual permissions (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_checkpoint(folder: Path, unet: UNet2DModel, scheduler_config: dict, manifest: dict,
                     half: bool = False) -> None:
    """Write manifest, unet/ and scheduler/ into `folder` (normally one from `atomic_folder`)."""
    if half:
        unet = _half_copy(unet)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    DDIMScheduler.from_config(scheduler_config).save_pretrained(folder / "scheduler")
    (folder / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, default=str))


def _half_copy(unet: UNet2DModel) -> UNet2DModel:
    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    return copy.half()


# --- resumable training state, without pickle -------------------------------------------------------------------

def save_training_state(folder: Path, model_state: dict, optimizer: torch.optim.Optimizer,
                        lr_scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    """Raw (non-EMA) weights, the optimizer's tensors (safetensors) and everything else as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, folder / "model.safetensors")
    opt = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().contiguous().cpu()
               for index, per_param in opt["state"].items() for name, value in per_param.items()}
    save_file(tensors, folder / "optimizer.safetensors")
    sched = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    (folder / "state.json").write_text(json.dumps(
        {**state, "optimizer_param_groups": opt["param_groups"], "lr_scheduler": sched}, indent=2, default=str))


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer,
                        lr_scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[dict, dict]:
    """Restore optimizer and LR scheduler in place; return (raw model weights, JSON state)."""
    needed = [folder / n for n in ("model.safetensors", "optimizer.safetensors", "state.json")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: cannot resume, {', '.join(missing)} missing. The checkpoint was saved "
                              "for inference only; start a new training run into another folder.")
    state = json.loads((folder / "state.json").read_text())
    per_param: dict[int, dict] = {}
    for key, value in load_file(folder / "optimizer.safetensors").items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_param_groups")})
    lr_state = lr_scheduler.state_dict()
    lr_state.update(state.pop("lr_scheduler"))
    lr_scheduler.load_state_dict(lr_state)
    return load_file(folder / "model.safetensors"), state
