"""Train a model on a labelled folder: ONE loop for every kind, yielding events.

The loop owns what every kind shares: the output-folder check, the labelled images and their normalisation, resuming,
the events, saving atomically every `checkpoint_every` steps and on Stop, and the manifest. What a kind adds comes from
its `Trainer` (core/models/<kind>.py, found through models.KINDS):

    Trainer.prepare(config) -> config        cheap checks and completed settings, before any image is read
    Trainer.resume_problems(manifest, config) what would make resuming this checkpoint wrong, in words
    Trainer(config, data, normalization)     the networks and optimisers, seeded by config.seed
    .load_state(folder) -> step              restore from <checkpoint>/training
    .batches(start)                          one batch per step from `start` (a pure function of seed and step)
    .step(batch, step) -> (loss, lr, note)   one optimisation step
    .write(folder, manifest); .save_state(folder, step)   the checkpoint's files and its training state
    .describe(), .hardware(), .manifest(), .is_main, .wait()

Closing the generator (a Stop button, Ctrl-C) saves a resumable checkpoint first.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..checkpoint import MANIFEST, atomic_folder
from ..dataset import LabelledImages, load_folder
from ..errors import CheckpointError, DataError
from ..images import Normalization
from ..models import kind_module, read_manifest
from ..options import TrainConfig


@dataclass(frozen=True)
class TrainEvent:
    """kind: "start", "step", "checkpoint" or "done"; `path` is set for checkpoints."""

    kind: str
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    path: Path | None = None
    message: str = ""


def train(config: TrainConfig) -> Path:
    """Run training to the end (no progress display) and return the checkpoint folder."""
    for _ in iter_train(config):
        pass
    return config.out


def iter_train(config: TrainConfig) -> Iterator[TrainEvent]:
    """Train step by step. Closing the generator (a Stop button, Ctrl-C) saves a resumable checkpoint first."""
    trainer_class = kind_module(config.model).Trainer
    config = trainer_class.prepare(config)
    resume_from = check_out_folder(config)
    data, normalization, channel_names = load_training_data(config, resume_from, trainer_class.resume_problems)
    trainer = trainer_class(config, data, normalization)
    start = trainer.load_state(config.out / "training") if resume_from else 0
    manifest = {**_manifest(config, data, normalization, channel_names), **trainer.manifest()}

    def save(step: int) -> Path:
        if trainer.is_main:
            with atomic_folder(config.out) as folder:
                trainer.write(folder, {**manifest, "trained_steps": step})
                trainer.save_state(folder / "training", step)
        trainer.wait()
        return config.out

    yield TrainEvent("start", start, config.steps, message=_start_message(config, data, start, trainer))
    step = start
    try:
        for batch in trainer.batches(start):
            loss, lr, note = trainer.step(batch, step)
            step += 1
            yield TrainEvent("step", step, config.steps, loss=loss, lr=lr, message=note)
            if step % config.checkpoint_every == 0 and step < config.steps:
                yield TrainEvent("checkpoint", step, config.steps, path=save(step))
    except GeneratorExit:
        if step > start:
            save(step)  # Stop: keep what was learned, resumable
        raise
    yield TrainEvent("done", step, config.steps, path=save(step))


def check_out_folder(config: TrainConfig) -> bool:
    """True when resuming from an existing checkpoint; refuse to overwrite anything else."""
    out = config.out
    has_checkpoint = (out / MANIFEST).is_file()
    if config.resume:
        if has_checkpoint and not (out / "training").is_dir():
            raise CheckpointError(f"{out}: this checkpoint holds no training state, so it cannot be resumed.")
        return has_checkpoint
    if out.exists() and any(out.iterdir()):
        what = "a checkpoint" if has_checkpoint else "files"
        raise CheckpointError(f"{out}: already holds {what}. Add --resume to continue that training, or choose "
                              "another output folder.")
    return False


def load_training_data(config: TrainConfig, resume_from: bool, resume_problems=None
                       ) -> tuple[LabelledImages, Normalization, list[str]]:
    """The labelled images, their normalisation (the checkpoint's when resuming, so intensities keep their meaning)
    and the channel names, after checking that a resumed run still fits its checkpoint."""
    data = load_folder(config.data, min_size=None if config.resize else config.image_size)
    if resume_from:
        manifest = read_manifest(config.out)
        _check_resume_fits(manifest, data, config, resume_problems)
        normalization = Normalization.from_dict(manifest["normalization"])
    else:
        normalization = Normalization.fit(data.images)
    channel_names = config.channel_names or [f"channel {i + 1}" for i in range(data.channels)]
    if len(channel_names) != data.channels:
        raise DataError(f"{len(channel_names)} channel names given for images with {data.channels} channels.")
    return data, normalization, channel_names


def _check_resume_fits(manifest: dict, data, config: TrainConfig, resume_problems=None) -> None:
    saved = manifest["training"]
    problems = [f"{name}: checkpoint {saved[name]!r}, now {value!r}"
                for name, value in (("preset", config.preset), ("image_size", config.image_size))
                if saved[name] != value]
    if manifest.get("kind", "pixel") != config.model:
        problems.append(f"model: checkpoint {manifest.get('kind', 'pixel')!r}, now {config.model!r}")
    elif resume_problems is not None:
        problems += resume_problems(manifest, config)
    if manifest["conditions"] != data.conditions:
        problems.append(f"conditions: checkpoint {manifest['conditions']}, folder {data.conditions}")
    if len(manifest["channel_names"]) != data.channels:
        problems.append(f"channels: checkpoint {len(manifest['channel_names'])}, images {data.channels}")
    if int(manifest["trained_steps"]) >= config.steps:
        problems.append(f"already trained {manifest['trained_steps']} steps; ask for more with --steps")
    if problems:
        raise CheckpointError(f"{config.out}: cannot resume with these settings ({'; '.join(problems)}).")


def _manifest(config: TrainConfig, data, normalization: Normalization, channel_names: list[str]) -> dict:
    from ... import __version__

    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {
        "kind": config.model,
        **({} if config.kind.fine_tunes else {"preset": config.preset}),
        "conditions": data.conditions,
        "channel_names": channel_names,
        "image_size": config.image_size,
        "normalization": normalization.to_dict(),
        "training": training,
        "metadata": config.metadata,
        "provenance": {
            "napari_phendiff": __version__,
            "torch": torch.__version__,
            "data_folder": str(Path(config.data).resolve()),
            "images_per_condition": {c: int(np.sum(np.asarray(data.labels) == i))
                                     for i, c in enumerate(data.conditions)},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
        },
    }


def _start_message(config: TrainConfig, data, start: int, trainer) -> str:
    counts = ", ".join(f"{c}: {sum(1 for l in data.labels if l == i)}" for i, c in enumerate(data.conditions))
    what = f"resuming at step {start}" if start else "starting"
    return (f"{what}: {trainer.describe()}, {config.image_size} px, {data.channels} channel(s), images {counts}; "
            f"{trainer.hardware()}")
