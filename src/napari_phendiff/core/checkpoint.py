"""The checkpoint on disk: a folder any diffusers user can open, written atomically, loaded without pickle.

    <checkpoint>/
      phendiff.json            manifest: kind, conditions, channels, normalisation, image size, config, provenance
      unet/                    diffusers UNet2DModel (EMA weights, safetensors): UNet2DModel.from_pretrained(ckpt/"unet")
      scheduler/               DDIMScheduler config: DDIMScheduler.from_pretrained(ckpt/"scheduler")
      training/                only to resume: raw weights, their moving average (average.safetensors), optimizer
                               and LR-scheduler state (safetensors + JSON)

That is a pixel (PhenDiff) checkpoint; a latent one (models/latent.py) holds a reference to its base model and only
the trained parameters, a CycleGAN one (models/cyclegan.py) its two generators in cyclegan.safetensors. This module is
the format only (manifest, pickle refusal, atomic folders, training state); each kind's module writes and loads its
own files, and models.load_checkpoint picks the kind from the manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

FORMAT_VERSION = 1
MANIFEST = "phendiff.json"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "demo"
NAMED_CHECKPOINTS = {"demo": DEMO_CHECKPOINT}


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


def read_format(path: Path) -> dict:
    """The manifest of a checkpoint folder, after checking it is readable, of this format version and holds no
    pickle (models.read_manifest also checks the kind's files)."""
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


def write_manifest(folder: Path, manifest: dict) -> None:
    """The manifest, stamped with this format version (every kind's writer ends with it)."""
    (folder / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, default=str))


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
