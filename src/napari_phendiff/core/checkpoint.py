"""The checkpoint on disk: a folder any diffusers user can open, written atomically, loaded without pickle.

    <checkpoint>/
      phendiff.json            manifest: kind, conditions, channels, normalisation, image size, config, provenance
      unet/                    diffusers UNet2DModel (EMA weights, safetensors): UNet2DModel.from_pretrained(ckpt/"unet")
      scheduler/               DDIMScheduler config: DDIMScheduler.from_pretrained(ckpt/"scheduler")
      training/                only to resume: raw weights, their moving average (average.safetensors), optimizer
                               and LR-scheduler state (safetensors + JSON)

That is a pixel (PhenDiff) checkpoint; a latent one (models/latent.py) holds a reference to its base model and only
the trained parameters, a CycleGAN one (models/cyclegan.py) its two generators in cyclegan.safetensors. This module is
the format only (manifest, weights digest, pickle refusal, training state); writing.py writes it safely (atomic
folders, one writer at a time), each kind's module writes and loads its own files, and models.load_checkpoint picks
the kind from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .writing import check_writable, output_lock

# Read from here by the checkpoints' writers (training, calibration, the docks) with the format; defined in writing.py.
from .writing import atomic_folder, check_free_space, claim_new_folder  # noqa: F401

FORMAT_VERSION = 1
MANIFEST = "phendiff.json"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "demo"
NAMED_CHECKPOINTS = {"demo": DEMO_CHECKPOINT}


def is_shipped(path_or_name: str | Path) -> bool:
    """Whether a checkpoint is one the package ships (by its name, or its folder), which no command may change."""
    if str(path_or_name) in NAMED_CHECKPOINTS:
        return True
    return Path(path_or_name).expanduser().resolve() in {folder.resolve() for folder in NAMED_CHECKPOINTS.values()}


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint folder from a path or a shipped name ("demo")."""
    if str(path_or_name) in NAMED_CHECKPOINTS:
        return NAMED_CHECKPOINTS[str(path_or_name)]
    path = Path(path_or_name).expanduser()
    recover_interrupted_swap(path)
    if not path.is_dir():
        names = ", ".join(repr(n) for n in NAMED_CHECKPOINTS)
        raise CheckpointError(
            f"{path}: no such checkpoint folder. Give a folder written by `phendiff train`, "
            f"or one of the shipped checkpoints: {names}."
        )
    return path


def read_format(path: Path) -> dict:
    """The manifest of a checkpoint folder, after checking it is readable, of this format version and holds no
    pickle (models.read_manifest also checks the kind's files)."""
    refuse_pickles(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{path}: is not a napari-phendiff checkpoint ({MANIFEST} is missing). "
            "Point at the folder written by `phendiff train`."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: cannot be read ({exc}); the checkpoint is damaged.") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: format version {version!r}, this napari-phendiff reads version "
            f"{FORMAT_VERSION}. Upgrade napari-phendiff, or re-train with this version."
        )
    check_manifest(manifest, manifest_path)
    return manifest


def manifest_kind(manifest: dict) -> str:
    """The model kind a manifest records (checkpoints written before kinds existed are pixel models)."""
    return manifest.get("kind", "pixel")


def check_weights(path: Path, manifest: dict) -> None:
    """Refuse weights other than those the manifest was written with, and a manifest that records no digest of
    its weights' bytes (nothing would show they are the ones it was trained with)."""
    sign = f"If you trust this checkpoint as it is (you edited it on purpose), sign it: phendiff sign {path}"
    if manifest.get("weights_digest") != DIGEST_VERSION or not manifest.get("weights_sha256"):
        raise CheckpointError(
            f"{path}: {MANIFEST} records no digest of its weights' bytes (an older "
            "napari-phendiff wrote it, or it was edited), so nothing shows its weights are the "
            f"ones it was trained with. {sign}."
        )
    if manifest["weights_sha256"] != weights_digest(path, manifest):
        raise CheckpointError(
            f"{path}: its weights and {MANIFEST} do not belong together (the recorded digest "
            f"of the weight files and of {', '.join(DIGESTED_KEYS)} differs): the manifest was "
            "edited or files were mixed from two checkpoints. Copy the whole checkpoint folder "
            f"again, or re-train. {sign}."
        )


def check_manifest(manifest: dict, where: Path) -> None:
    """The keys every kind reads, of the right types and ranges (an edited manifest fails here, not later)."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{where}: {what}. The manifest was edited or damaged; copy the checkpoint again or re-train."
        )

    if not isinstance(manifest, dict):
        raise bad("is not a JSON object")
    missing = [k for k in ("conditions", "channel_names", "image_size", "normalization") if k not in manifest]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    conditions, channels = manifest["conditions"], manifest["channel_names"]
    if (
        not isinstance(conditions, list)
        or len(conditions) < 2
        or len(set(conditions)) != len(conditions)
        or not all(isinstance(c, str) and c for c in conditions)
    ):
        raise bad(f"conditions must be two or more different names, not {conditions!r}")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise bad(f"channel_names must be a list of names, not {channels!r}")
    size = manifest["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise bad(f"image_size must be a whole number of pixels >= 8, not {size!r}")
    norm = manifest["normalization"]
    try:
        low, high = (np.asarray(norm[k], dtype=float) for k in ("low", "high"))
    except (TypeError, KeyError, ValueError):
        raise bad("normalization must hold lists 'low' and 'high'") from None
    if low.shape != (len(channels),) or high.shape != (len(channels),):
        raise bad(f"normalization has {low.size} low and {high.size} high values for {len(channels)} channel(s)")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise bad(
            f"normalization must be finite with high > low per channel, not low {norm['low']}, high {norm['high']}"
        )


# What the weights mean: editing any of these apart from the weights (a reversed condition list) changes the digest.
DIGESTED_KEYS = ("conditions", "channel_names", "image_size", "normalization")


DIGEST_VERSION = "sha256-bytes-1"  # manifest["weights_digest"]: what `weights_sha256` covers
_FILE_DIGESTS: dict[tuple, str] = {}  # (file, size, mtime, ctime, inode) -> sha256: a file read again is free


def weights_digest(folder: Path, manifest: dict) -> str:
    """SHA-256 over every byte of the checkpoint's weight files outside training/ (with their names) and the
    manifest's DIGESTED_KEYS: it changes when a weight file is replaced, even by another checkpoint's of the same
    architecture, or the manifest is edited apart from its weights. A 3.5 GiB weight file (a fully fine-tuned SD2
    UNet) took 4.9 s on a 2-core CPU; a file is read once per process (keyed by size, modification and change times
    and inode), so loading it again costs nothing."""
    digest = hashlib.sha256(json.dumps({k: manifest.get(k) for k in DIGESTED_KEYS}, sort_keys=True).encode())
    for file in sorted(p for p in folder.rglob("*.safetensors") if _is_weight_file(p.relative_to(folder))):
        digest.update(file.relative_to(folder).as_posix().encode() + _file_digest(file).encode())
    return digest.hexdigest()


def _is_weight_file(relative: Path) -> bool:
    """A weight file of the model: not its training state, nor the condition classifier a calibration keeps beside
    it (features.CLASSIFIER_FOLDER, also while it is being written)."""
    first = relative.parts[0]
    return "training" not in relative.parts and first.lstrip(".").split(".")[0] != "condition_classifier"


def _file_digest(file: Path) -> str:
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(2**22), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def stamp_weights(folder: Path) -> None:
    """Record `weights_digest` in the manifest of a checkpoint just written in `folder`."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(weights_digest=DIGEST_VERSION, weights_sha256=weights_digest(folder, manifest))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def sign_checkpoint(path: str | Path) -> Path:
    """Record the digest of a checkpoint's weights as they are now (`phendiff sign`): for one an older
    napari-phendiff wrote, or one the user edited on purpose and trusts. The manifest is replaced atomically."""
    path = Path(path)
    if is_shipped(path):
        raise CheckpointError(f"{str(path)!r} is a shipped checkpoint; it is signed already.")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: is not a napari-phendiff checkpoint ({MANIFEST} is missing).")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: cannot be read ({exc}); the checkpoint is damaged.") from exc
    check_manifest(manifest, manifest_path)
    refuse_pickles(path)
    check_writable(path)
    with output_lock(path, "signing"):
        manifest.update(weights_digest=DIGEST_VERSION, weights_sha256=weights_digest(path, manifest))
        tmp = manifest_path.with_name(f".{MANIFEST}.writing")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, manifest_path)
    return path


def refuse_pickles(path: Path) -> None:
    """Pickled weights can run arbitrary code when loaded: refuse them without opening them."""
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise CheckpointError(
            f"{path}: contains pickled weights ({', '.join(str(p.relative_to(path)) for p in found[:3])}), which "
            "napari-phendiff never loads because unpickling can execute code. Convert them to safetensors "
            "(load them yourself if you trust their source, then save_pretrained(..., safe_serialization=True))."
        )


def recover_interrupted_swap(out: Path) -> bool:
    """Put back the previous checkpoint when a kill came between the two renames of `atomic_folder` (it left
    `.NAME.old` and no NAME); True when it did."""
    out = Path(out)
    old = out.with_name(f".{out.name}.old")
    if out.exists() or not (old / MANIFEST).is_file():
        return False
    old.rename(out)
    return True


def write_manifest(folder: Path, manifest: dict) -> None:
    """The manifest, stamped with this format version (every kind's writer ends with it)."""
    (folder / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, default=str))


# --- resumable training state, without pickle -------------------------------------------------------------------


def save_training_state(
    folder: Path,
    model_state: dict,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
) -> None:
    """Raw (non-EMA) weights, the optimizer's tensors (safetensors) and everything else as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, folder / "model.safetensors")
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    _flatten(opt["state"], "", tensors, scalars)
    save_file(tensors, folder / "optimizer.safetensors")
    sched = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    (folder / "state.json").write_text(
        json.dumps(
            {
                **state,
                "optimizer_param_groups": opt["param_groups"],
                **({"optimizer_scalars": scalars} if scalars else {}),
                "lr_scheduler": sched,
            },
            indent=2,
            default=str,
        )
    )


def _flatten(value, key: str, tensors: dict, scalars: dict) -> None:
    """An optimizer's per-weight state as dotted keys: tensors for safetensors, anything else (bitsandbytes keeps the
    step as an int and its quantisation state as a nested dict) for JSON."""
    if isinstance(value, dict):
        for name, inner in value.items():
            _flatten(inner, f"{key}.{name}" if key else str(name), tensors, scalars)
    elif isinstance(value, torch.Tensor):
        value = value.detach().contiguous().cpu()
        shared = any(value.data_ptr() == t.data_ptr() for t in tensors.values() if t.numel() == value.numel())
        tensors[key] = value.clone() if shared else value  # bitsandbytes shares one quantisation map
    else:
        scalars[key] = value


def _nest(flat: dict) -> dict[int, dict]:
    """_flatten's keys back into {weight index: its state}."""
    per_param: dict[int, dict] = {}
    for key, value in flat.items():
        index, *path = key.split(".")
        where = per_param.setdefault(int(index), {})
        for name in path[:-1]:
            where = where.setdefault(name, {})
        where[path[-1]] = value
    return per_param


def load_training_state(
    folder: Path, optimizer: torch.optim.Optimizer, lr_scheduler: torch.optim.lr_scheduler.LRScheduler
) -> tuple[dict, dict]:
    """Restore optimizer and LR scheduler in place; return (raw model weights, JSON state)."""
    needed = [folder / n for n in ("model.safetensors", "optimizer.safetensors", "state.json")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: cannot resume, {', '.join(missing)} missing. The checkpoint was saved "
            "for inference only; start a new training run into another folder."
        )
    state = json.loads((folder / "state.json").read_text())
    per_param = _nest({**load_file(folder / "optimizer.safetensors"), **state.pop("optimizer_scalars", {})})
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_param_groups")})
    lr_state = lr_scheduler.state_dict()
    lr_state.update(state.pop("lr_scheduler"))
    lr_scheduler.load_state_dict(lr_state)
    return load_file(folder / "model.safetensors"), state
