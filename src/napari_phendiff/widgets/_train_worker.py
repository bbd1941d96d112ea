"""What the Train dock runs in napari's thread_worker, and the typed results it yields: the training loop with its
previews, and the reading of a base model (downloading a hub id first). Plain values
in, no layers (the dock turns the previews into layers on the main thread)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import thread_worker

from ..core.device import explain_memory_errors
from ..core.errors import PhenDiffError
from ..core.models.bases import is_hub_id, iter_fetch
from ..core.options import TrainConfig
from ..core.training.run import iter_train
from ._messages import Progress, Result
from ._shared import StoppableWorker

MEMORY_ADVICE = (
    "Lower the batch size or the image size, or choose device cpu; for a fine-tuned model, tick "
    "gradient checkpointing or choose the lora adapter."
)


@dataclass(frozen=True)
class Previews:
    """Images generated from the checkpoint saved at `step`: {condition: (n, C, S, S)}."""

    step: int
    images: dict[str, np.ndarray]


@dataclass(frozen=True)
class BaseRead:
    """What reading a base model found: its own image size, or the problem in one line."""

    base: str
    image_size: int | None = None
    problem: str | None = None


@thread_worker(progress={"desc": "PhenDiff: training"}, worker_class=StoppableWorker, ignore_errors=True)
def run_training(config: TrainConfig, previews: int):
    """core.training.run.iter_train as Progress messages (counted from the step this run starts at); the `previews`
    images per condition it generates from the model after every checkpoint as Result messages."""
    with (
        contextlib.closing(iter_train(config, previews)) as events,
        explain_memory_errors(config.device, MEMORY_ADVICE),
    ):
        first = 0
        for event in events:
            first = event.step if event.kind == "start" else first
            if event.kind == "previews":
                yield Result(Previews(event.step, event.previews))
            else:
                yield Progress(event.step - first, event.total - first, event)


@thread_worker
def read_base_model(base: str):
    """A base model's own image size, read off the UI thread: a hub id missing from the local hub cache is downloaded
    first (a Progress message per file; offline, the problem at once). Returns a BaseRead."""
    from ..core.models.latent import native_image_size

    try:
        if is_hub_id(base):
            for event in iter_fetch(base):
                if isinstance(event, tuple):
                    done, total, name = event
                    yield Progress(done, total, f"downloading {done} / {total} files: {name}")
        return BaseRead(base, image_size=native_image_size(base))
    except PhenDiffError as exc:
        return BaseRead(base, problem=str(exc))
