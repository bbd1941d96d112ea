"""Resuming a training run: the labelled images checked against the checkpoint's settings (a resumed run must be the
run its manifest records), its training state and its loss curve so far."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import manifest_kind
from ..dataset import LabelledImages, load_folder
from ..errors import CheckpointError, DataError, PhenDiffError
from ..images import Normalization
from ..models import read_manifest
from ..options import TrainConfig

LOSSES = "losses.json"  # beside the resumable state in <checkpoint>/training: the loss curve so far


def loss_history(folder: Path, start: int) -> list[list]:
    """The (step, loss) pairs saved with the training state, up to `start` (none for a checkpoint saved before
    they were kept, or if the file is damaged: the curve then starts at the resumed step)."""
    try:
        pairs = json.loads((folder / LOSSES).read_text())
        return [[int(s), float(v)] for s, v in pairs if int(s) <= start]
    except (OSError, ValueError, TypeError):
        return []


def load_state(trainer, folder: Path) -> int:
    """Restore the trainer from a checkpoint's training state and return the step it reached; a damaged state is one
    line saying the run cannot be resumed."""
    from safetensors import SafetensorError

    try:
        return trainer.load_state(folder)
    except PhenDiffError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{folder}: the training state cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); it is truncated or damaged, so this run cannot be resumed. Start "
            "a new run into another folder (the checkpoint itself still translates)."
        ) from exc


def load_training_data(
    config: TrainConfig, resume_from: bool, resume_problems=None
) -> tuple[LabelledImages, Normalization, list[str]]:
    """The labelled images, their normalisation (the checkpoint's when resuming, so intensities keep their meaning)
    and the channel names, after checking that a resumed run still fits its checkpoint."""
    data = load_folder(config.data, min_size=None if config.resize else config.image_size)
    if resume_from:
        manifest = read_manifest(config.out)
        check_resume_fits(manifest, data, config, resume_problems)
        normalization = Normalization.from_dict(manifest["normalization"])
        return data, normalization, list(manifest["channel_names"])  # the names the run was trained with
    normalization = Normalization.fit(data.images)
    channel_names = (
        config.channel_names or data.recorded_channel_names() or [f"channel {i + 1}" for i in range(data.channels)]
    )
    if len(channel_names) != data.channels:
        raise DataError(f"{len(channel_names)} channel names given for images with {data.channels} channels.")
    return data, normalization, channel_names


def check_resume_fits(manifest: dict, data, config: TrainConfig, resume_problems=None) -> None:
    assert config.steps is not None  # TrainConfig sets them when made
    saved = manifest["training"]
    problems = [
        f"{name}: checkpoint {saved[name]!r}, now {value!r}"
        for name, value in (("preset", config.preset), ("image_size", config.image_size))
        if saved[name] != value
    ]
    # Settings that shape the optimisation: a resumed run that changed them would not be the run its manifest
    # records (the learning-rate schedule and the batches are functions of them).
    problems += [
        f"{name}: checkpoint {saved[name]!r}, now {getattr(config, name)!r}"
        for name in (
            "lr",
            "seed",
            "batch_size",
            "warmup_steps",
            "weight_decay",
            "grad_clip",
            "ema_decay",
            "condition_dropout",
            "snr_gamma",
            "noise_offset",
            "optimizer",
            "resize",
            "start_from",
        )
        if name in saved and saved[name] != getattr(config, name)
    ]
    if manifest_kind(manifest) != config.model:
        problems.append(f"model: checkpoint {manifest.get('kind', 'pixel')!r}, now {config.model!r}")
    elif resume_problems is not None:
        problems += resume_problems(manifest, config)
    if saved.get("data") and not _same_folder(Path(saved["data"]), Path(config.data)):
        problems.append(
            f"data: checkpoint trained on {saved['data']}, now {config.data} (a resumed run continues on "
            "the same images; train a new run, or start from this checkpoint, for others)"
        )
    if manifest["conditions"] != data.conditions:
        problems.append(f"conditions: checkpoint {manifest['conditions']}, folder {data.conditions}")
    if len(manifest["channel_names"]) != data.channels:
        problems.append(f"channels: checkpoint {len(manifest['channel_names'])}, images {data.channels}")
    elif config.channel_names and list(config.channel_names) != list(manifest["channel_names"]):
        problems.append(
            f"channel names: checkpoint {', '.join(manifest['channel_names'])}, now "
            f"{', '.join(config.channel_names)} (a resumed run keeps its names; leave them out)"
        )
    if int(manifest["trained_steps"]) >= config.steps:
        problems.append(f"already trained {manifest['trained_steps']} steps; ask for more with --steps")
    if problems:
        raise CheckpointError(f"{config.out}: cannot resume with these settings ({'; '.join(problems)}).")


def _same_folder(recorded: Path, given: Path) -> bool:
    """Whether a data folder is the one a checkpoint recorded: the same folder, or one of the same name when the
    record is relative (the run started elsewhere)."""
    if recorded.is_absolute():
        return recorded.resolve() == given.resolve()
    return recorded.name == given.resolve().name
