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
    .parameters()                            what is trained (sizes the checkpoint before the first step)
    .describe(), .hardware(), .manifest(), .is_main, .wait()
    .live_model(channel_names)               the model being trained, as loaded (previews; kinds that generate)

Closing the generator (a Stop button) or interrupting it (Ctrl-C, or SIGTERM through the CLI) saves a resumable
checkpoint first, when at least one step was trained. The output folder is checked (not inside the data, writable,
room for a checkpoint) before the images are read.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Generator, Iterator

import numpy as np
import torch
from safetensors import SafetensorError

from ..checkpoint import (
    MANIFEST,
    atomic_folder,
    check_free_space,
    check_writable,
    output_lock,
    recover_interrupted_swap,
    stamp_weights,
)
from ..errors import CheckpointError, ConfigError
from ..images import Normalization
from ..models import kind_module
from ..options import TrainConfig
from .previews import iter_previews
from .resume import LOSSES, load_state, load_training_data, loss_history


@dataclass(frozen=True)
class TrainEvent:
    """kind: "probe" (timing a time budget's steps first), "start", "step", "checkpoint", "preview" (making previews:
    what, in `message`), "previews" (the images, in `previews`: {condition: (n, C, S, S)}) or "done", always last;
    `path` is set for checkpoints. A resumed run's "start" carries the losses of the steps trained before, as (step,
    loss) pairs, in `history`."""

    kind: str
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    path: Path | None = None
    message: str = ""
    history: tuple = ()
    previews: dict | None = None


def train(config: TrainConfig) -> Path:
    """Run training to the end (no progress display) and return the checkpoint folder."""
    for _ in iter_train(config):
        pass
    return config.out


def iter_train(config: TrainConfig, previews: int = 0) -> Iterator[TrainEvent]:
    """Train step by step. Closing the generator (a Stop button) or Ctrl-C saves a resumable checkpoint first.
    One run per output folder: a second one into the same folder is refused while the first runs. With a time
    budget (config.minutes) the steps are set first by `fit_budget` ("probe" events). previews: images generated
    per condition from the model being trained after each checkpoint (training/previews.py), 0 for none."""
    if previews and not config.kind.generates:
        raise ConfigError(f"{config.model} models ({config.kind.help}) cannot generate images: ask for no previews.")
    with output_lock(config.out, "training"):
        if config.minutes is not None:
            config = yield from fit_budget(config)
        yield from _train_run(config, previews)


PROBE_STEPS = 8  # timed to set a time budget's steps; the first PROBE_WARMUP pay one-time set-up
PROBE_WARMUP = 3


def fit_budget(config: TrainConfig) -> Generator[TrainEvent, None, TrainConfig]:
    """Time PROBE_STEPS steps of this very run (same model, data, batch and device; written to a temporary folder
    and thrown away) and return the config with the steps that fit config.minutes, its warm-up and checkpoints
    scaled to them. Why not stop at the clock instead: the learning-rate schedule needs its length up front."""
    import os
    import tempfile

    if config.minutes is None:
        raise ConfigError("fit_budget sets the steps of a time budget: give the minutes (config.minutes).")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("A time budget (minutes) is timed in one process; with several, give the steps instead.")
    stamps = []
    with tempfile.TemporaryDirectory(prefix="phendiff-probe-") as folder:
        probe = replace(
            config,
            out=Path(folder) / "probe",
            steps=PROBE_STEPS,
            minutes=None,
            warmup_steps=0,
            checkpoint_every=PROBE_STEPS,
            resume=False,
        )
        for event in _train_run(probe):
            if event.kind == "step":
                stamps.append(time.perf_counter())
                yield TrainEvent(
                    "probe",
                    event.step,
                    PROBE_STEPS,
                    message=f"Timing training on this computer: step {event.step} of {PROBE_STEPS}…",
                )
    per_step = (stamps[-1] - stamps[PROBE_WARMUP - 1]) / (len(stamps) - PROBE_WARMUP)
    steps = max(10, int(config.minutes * 60 / per_step))
    return replace(
        config,
        steps=steps,
        warmup_steps=min(config.warmup_steps, steps // 10),
        checkpoint_every=min(config.checkpoint_every, steps),
        metadata={
            **config.metadata,
            "budget": {"minutes": config.minutes, "seconds_per_step": per_step, "steps": steps},
        },
    )


def _train_run(config: TrainConfig, previews: int = 0) -> Iterator[TrainEvent]:
    trainer_class = kind_module(config.model).Trainer
    config = trainer_class.prepare(config)
    assert config.steps is not None  # TrainConfig sets them when made
    resume_from = check_out_folder(config)
    data, normalization, channel_names = load_training_data(config, resume_from, trainer_class.resume_problems)
    trainer = trainer_class(config, data, normalization)
    replaces = resume_from or config.checkpoint_every < config.steps  # a checkpoint written over another one
    check_free_space(config.out, checkpoint_bytes(trainer), copies=2 if replaces else 1)
    start = load_state(trainer, config.out / "training") if resume_from else 0
    losses = loss_history(config.out / "training", start) if resume_from else []
    manifest, kept_note = kept_nucleus({**_manifest(config, data, normalization, channel_names), **trainer.manifest()})

    yield TrainEvent(
        "start",
        start,
        config.steps,
        message=_start_message(config, data, start, trainer) + kept_note,
        history=tuple(map(tuple, losses)),
    )
    step = saved_at = start
    try:
        for batch in trainer.batches(start):
            loss, lr, note = trainer.step(batch, step)
            if not math.isfinite(loss):
                raise _diverged(config, step, loss, saved_at)
            step += 1
            losses.append([step, float(loss)])
            yield TrainEvent("step", step, config.steps, loss=loss, lr=lr, message=note)
            if step % config.checkpoint_every == 0 and step < config.steps:
                path = _save(trainer, config, manifest, losses, step, saved_at)
                saved_at = step
                yield TrainEvent("checkpoint", step, config.steps, path=path)
                yield from _previews(trainer, channel_names, previews, step, config.steps)
    except (GeneratorExit, KeyboardInterrupt):
        # Stop, Ctrl-C, or SIGTERM (the CLI turns it into a KeyboardInterrupt): keep what was learned, resumable
        if step > saved_at:
            _save(trainer, config, manifest, losses, step, saved_at)
        raise
    path = _save(trainer, config, manifest, losses, step, saved_at)
    yield from _previews(trainer, channel_names, previews, step, config.steps)
    yield TrainEvent("done", step, config.steps, path=path)


def _previews(trainer, channel_names: list[str], n: int, step: int, total: int) -> Iterator[TrainEvent]:
    """The previews of the model at `step`, from the first process (the others wait for it)."""
    if n and trainer.is_main:
        lines = iter_previews(trainer, channel_names, n)
        while True:
            try:
                line = next(lines)
            except StopIteration as made:
                yield TrainEvent("previews", step, total, previews=made.value)
                break
            yield TrainEvent("preview", step, total, message=f"Making previews of step {step}: {line}…")
    if n:
        trainer.wait()


def _save(trainer, config: TrainConfig, manifest: dict, losses: list[list], step: int, saved_at: int) -> Path:
    """Write the checkpoint of `step` (weights, manifest, training state and loss curve) into config.out at once;
    a failed write says whether the checkpoint of step `saved_at` (0: none) is still there."""
    if trainer.is_main:
        try:
            with atomic_folder(config.out) as folder:
                trainer.write(folder, {**manifest, "trained_steps": step})
                stamp_weights(folder)
                trainer.save_state(folder / "training", step)
                (folder / "training" / LOSSES).write_text(json.dumps(losses))
        except (OSError, SafetensorError) as exc:  # disk full, folder gone or made read-only during the run
            before = f"the checkpoint of step {saved_at} there is untouched" if saved_at else "nothing was saved"
            why = getattr(exc, "strerror", None) or exc  # safetensors' errors carry no strerror
            raise CheckpointError(
                f"{config.out}: the checkpoint of step {step} could not be written ({why}); "
                f"{before}. Free space or fix the folder, then resume."
            ) from exc
    trainer.wait()
    return config.out


def _diverged(config: TrainConfig, step: int, loss: float, saved_at: int) -> ConfigError:
    """The error for a loss that is no longer finite at step + 1: what to change, and what was saved before."""
    return ConfigError(
        f"Training diverged at step {step + 1} (loss {loss}): the learning rate "
        f"{config.lr:g} is too high for this model. Start again into a new folder with a "
        "lower one (--lr); "
        + (f"the checkpoint of step {saved_at} in {config.out} is from before." if saved_at else "nothing was saved.")
    )


def check_out_folder(config: TrainConfig) -> bool:
    """True when resuming from an existing checkpoint; refuse to overwrite anything else, to write inside the data
    folder (the checkpoint would become a condition) or where nothing can be written."""
    out = config.out
    data = Path(config.data).resolve()
    if out.resolve() == data or data in out.resolve().parents:
        raise ConfigError(
            f"{out}: is inside the data folder {config.data}, where a checkpoint would be read as one "
            "more condition. Choose an output folder outside it."
        )
    recover_interrupted_swap(out)
    check_writable(out.parent if not out.exists() else out)
    has_checkpoint = (out / MANIFEST).is_file()
    if config.resume:
        if has_checkpoint and not (out / "training").is_dir():
            raise CheckpointError(f"{out}: this checkpoint holds no training state, so it cannot be resumed.")
        return has_checkpoint
    if out.exists() and any(out.iterdir()):
        what = "a checkpoint" if has_checkpoint else "files"
        raise CheckpointError(
            f"{out}: already holds {what}. Add --resume to continue that training, or choose another output folder."
        )
    return False


def checkpoint_bytes(trainer) -> int:
    """What one checkpoint of this run takes on disk, about: the trained weights, the raw and averaged copies and the
    optimiser's two moments, in float32."""
    return 5 * 4 * sum(p.numel() for p in trainer.parameters())


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
        "training_images": _statistics(data, channel_names),
        "metadata": config.metadata,
        "provenance": {
            "napari_phendiff": __version__,
            "torch": torch.__version__,
            "data_folder": str(Path(config.data).resolve()),
            "images_per_condition": {
                c: int(np.sum(np.asarray(data.labels) == i)) for i, c in enumerate(data.conditions)
            },
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
        },
    }


def kept_nucleus(manifest: dict) -> tuple[dict, str]:
    """The manifest with its translation_defaults' "keep_nuclear" (a base's default, base.json) made concrete: the
    channel named like DNA, DAPI or Hoechst is kept as the original's (the walk holds it, so translated cells keep
    their nuclei) when one is so named and other channels remain to translate; otherwise nothing is kept, and the
    note returned says so (for the run's start message)."""
    from ..cells import NUCLEAR_NAMES

    defaults = dict(manifest.get("translation_defaults") or {})
    if not defaults.pop("keep_nuclear", False):
        return manifest, ""
    names = manifest["channel_names"]
    nuclear = [name for name in names if name.lower() in NUCLEAR_NAMES]
    note = ""
    if nuclear and len(names) > 1:
        defaults["keep_channels"] = nuclear[:1]
    elif len(names) > 1:
        note = (
            f". No channel is named like a nuclear stain ({', '.join(names)}), so its translations keep none by "
            "default and regenerate the nuclei: name the channels (e.g. DNA, reporter) or keep the nuclear one "
            "when translating"
        )
    return {**manifest, "translation_defaults": defaults}, note


def _statistics(data, channel_names: list[str]) -> dict:
    """What inputs are compared with at translation, to warn about images unlike these (core/translate.py)."""
    from ..cells import median_nucleus_diameter, nuclear_channel

    channel = nuclear_channel(channel_names)
    return {
        "nuclear_channel": channel_names[channel],
        "nucleus_diameter_px": median_nucleus_diameter(data.images, channel),
    }


def _start_message(config: TrainConfig, data, start: int, trainer) -> str:
    counts = ", ".join(f"{c}: {sum(1 for label in data.labels if label == i)}" for i, c in enumerate(data.conditions))
    what = f"resuming at step {start}" if start else "starting"
    budget = config.metadata.get("budget")
    fits = (
        (
            f"; {budget['steps']} steps fit {budget['minutes']:g} min at {budget['seconds_per_step']:.2g} s/step "
            "(timed here)"
        )
        if budget and config.minutes
        else ""
    )
    return (
        f"{what}: {trainer.describe()}, {config.image_size} px, {data.channels} channel(s), images {counts}; "
        f"{trainer.hardware()}{fits}"
    )
