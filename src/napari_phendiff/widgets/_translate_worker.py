"""What the Translate dock runs in napari's thread_worker, and the typed results it yields: plain values and pixels
in, no layers (the dock turns the results into layers on the main thread). A PendingRun is the dock's own note of the
run whose result it awaits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Literal

import numpy as np
from napari.qt.threading import thread_worker

from ..core.batch import iter_translate_files
from ..core.calibrate import iter_calibrate
from ..core.explore import MORPH_FRAMES, iter_morph, iter_samples, measure_and_reveal
from ..core.features import stored_classifier
from ..core.models import load_checkpoint
from ..core.models.base import ConditionedModel
from ..core.options import TranslateOptions
from ..core.estimate import estimate_translation
from ..core.sweep import relabelled
from ..core.translate import is_direct, iter_translate
from ..core.device import explain_memory_errors
from ._layers import ImageInput
from ._messages import Loaded, Progress, Result
from ._shared import StoppableWorker

MEMORY_ADVICE = (
    "Lower 'Tiles per batch', translate the current plane instead of the whole stack, press "
    "'Release model' in other docks, or choose device cpu."
)


@dataclass(frozen=True)
class TranslateRequest:
    """Everything the worker needs: plain values and pixels, no layers."""

    checkpoint: Path
    device: str
    source: str
    target: str
    options: TranslateOptions
    sources: dict  # where each option came from: "given", "calibrated", "default"
    images: np.ndarray  # (N, C, Y, X)
    mode: str = "translate"  # translate | control (source -> source) | morph | estimate (time it, translate nothing)
    frames: int = MORPH_FRAMES  # morph: frames after the original
    morph_path: str = "strength"  # morph: by strength or by blending the conditions' embeddings
    samples: int = 0  # translate: seeds for the spread layer (0: none)

    @property
    def shown_target(self) -> str:
        return self.source if self.mode == "control" else self.target


@dataclass(frozen=True)
class PendingRun:
    """The run whose result the dock awaits: a translation of the ticked layers (translate, morph, control,
    estimate: `request.mode` says which), a folder or a calibration (no layers: `inputs` is None) or Measure cells
    on the last translation's layers."""

    kind: Literal["translate", "folder", "cells", "calibrate"]
    inputs: ImageInput | None
    request: TranslateRequest


@dataclass(frozen=True)
class Translated:
    """The result of a run: translated images (N, C, Y, X), or morph frames (K + 1, N, C, Y, X)."""

    images: np.ndarray
    reused: bool  # the inversion came from the dock's cache
    copied: tuple[int, int] = (0, 0)  # tiles copied as background, of all tiles


@dataclass(frozen=True)
class Spread:
    """Per-pixel standard deviation over seeds (N, C, Y, X), float32."""

    images: np.ndarray


@dataclass(frozen=True)
class Cells:
    """Per-image cell labels (N, Y, X), one row per cell (with its image index) and each cell's change mask (N, Y,
    X: the cell's label inside its mask, core/reveal.py)."""

    labels: np.ndarray
    rows: list[dict]
    reveal: np.ndarray | None = None


@thread_worker(progress={"desc": "PhenDiff: translating"}, worker_class=StoppableWorker, ignore_errors=True)
def run_translation(request: TranslateRequest, model: ConditionedModel | None, cache: dict):
    """Load the checkpoint unless it is cached (Loaded, so the dock can keep it), then time the run (an Estimate
    Result), or translate, morph or run the control, reusing the inversion kept in `cache`: Progress per step, a Result before the last Progress of each
    part (Translated, then Spread when samples were asked)."""
    with explain_memory_errors(request.device, MEMORY_ADVICE):
        if model is None:
            model = load_checkpoint(request.checkpoint, device=request.device)
        yield Loaded(model)
        images, source, options = request.images, request.source, request.options
        if request.mode == "estimate":
            yield Result(estimate_translation(model, images, source, request.target, options))
            return
        if request.mode == "morph":
            parts = [
                iter_morph(
                    model, images, source, request.target, request.frames, options, cache=cache, path=request.morph_path
                )
            ]
        else:
            parts = [iter_translate(model, images, source, request.shown_target, options, cache=cache)]
        if request.mode == "translate" and request.samples >= 2 and not is_direct(model):
            parts.append(iter_samples(model, images, source, request.target, request.samples, options, cache=cache))
        offset = 0
        for number, events in enumerate(parts):
            for event in events:
                if event.phase == "done":
                    yield Result(
                        Spread(event.result[1]) if number else Translated(event.result, event.reused, event.copied)
                    )
                yield Progress(offset + event.step, offset + event.total, event)
            offset += event.total


@dataclass(frozen=True)
class Folder:
    """What a folder run did (core.batch.BatchResult) and where."""

    result: object
    out: Path


@thread_worker(progress={"desc": "PhenDiff: translating a folder"}, worker_class=StoppableWorker, ignore_errors=True)
def run_folder(request: TranslateRequest, model: ConditionedModel | None, folder: Path, out: Path):
    """The command line's batch path (core.batch.iter_translate_files) over a folder, with the per-cell tables:
    Progress per step of each file (named in its `where`), the Result (a Folder) at the end. Cancel stops between
    two steps; finished files stay."""
    with explain_memory_errors(request.device, MEMORY_ADVICE):
        if model is None:
            model = load_checkpoint(request.checkpoint, device=request.device)
        yield Loaded(model)
        given = {k: v for k, v in asdict(request.options).items() if request.sources.get(k) == "given"}
        events = iter_translate_files(
            request.checkpoint,
            [folder],
            request.source,
            [request.target],
            out,
            model=model,
            measure=True,
            samples=request.samples,
            **given,
        )
        yield from relay(events, lambda done: Folder(done, out), _file_progress)


@thread_worker(progress={"desc": "PhenDiff: measuring cells"}, worker_class=StoppableWorker, ignore_errors=True)
def run_measure(
    originals: np.ndarray,
    translated: np.ndarray,
    channel_names: list[str],
    checkpoint: Path | None = None,
    target: str | None = None,
):
    """Segment and measure the cells of each image and find each cell's change mask and score
    (core.explore.measure_and_reveal), with the condition classifier a calibration stored in `checkpoint` when it
    knows `target`."""
    classifier = stored_classifier(checkpoint, target)
    labels, masks, rows = [], [], []
    for index, (original, image) in enumerate(zip(originals, translated)):
        cells, mask, found = measure_and_reveal(original, image, channel_names, classifier, target)
        labels.append(cells)
        masks.append(mask)
        rows += [{"image": index, **row} for row in found]
        yield Progress(index + 1, len(originals))
    yield Result(Cells(np.stack(labels), rows, np.stack(masks)))


@dataclass(frozen=True)
class Calibrated:
    """What a calibration of `checkpoint`'s `source` -> `target` chose (core.calibrate's record, with its `status` and
    `reason`) and where its frontier is."""

    record: dict
    out: Path
    checkpoint: Path
    source: str
    target: str


@thread_worker(progress={"desc": "PhenDiff: calibrating"}, worker_class=StoppableWorker, ignore_errors=True)
def run_calibration(
    request: TranslateRequest,
    model: ConditionedModel | None,
    folder: Path,
    out: Path,
    n: int,
    *,
    reached_min: float | None = None,
    kept_tolerance: float | None = None,
):
    """core.calibrate.iter_calibrate on the real images of `folder` for the request's direction, at the dock's steps,
    seed, batch and kept channels, judged by the dock's bars (None: the rule's own): Progress per core.calibrate.Step
    (its preparation and scoring named, its translations counted in network calls), the Result (Calibrated) at the
    end. Cancel stops between two of them; nothing is then written or stored."""
    with explain_memory_errors(request.device, MEMORY_ADVICE):
        if model is None:
            model = load_checkpoint(request.checkpoint, device=request.device)
        yield Loaded(model)
        options = request.options
        events = iter_calibrate(
            model,
            folder,
            request.source,
            request.target,
            out,
            n=n,
            steps=options.steps if request.sources.get("steps") == "given" else None,
            seed=options.seed,
            batch_size=options.batch_size,
            device=request.device,
            keep_channels=options.keep_channels,
            reached_min=reached_min,
            kept_tolerance=kept_tolerance,
        )
        yield from relay(  # a cancel closes the calibration: its locks go, nothing is written
            events,
            lambda record: Calibrated(record, out, request.checkpoint, request.source, request.target),
            lambda step: Progress(step.done, step.total, stage=step.stage),
        )


def _file_progress(item: tuple) -> Progress:
    """A step of a folder run, counted per file and named (core.batch yields (names, event))."""
    names, event = item
    return Progress(event.step, event.total, event, where=names)


def relay(
    events: Generator[Any, None, Any], result: Callable[[Any], object], progress: Callable[[Any], Progress]
) -> Generator[Progress | Result, None, None]:
    """A core generator's items as `progress(item)` messages, then its return value as Result(`result(value)`). The
    core generator is closed however this ends (a cancel closes this one between two messages), so its clean-up (its
    locks) runs in the worker's thread at once."""
    value = yield from relabelled(events, progress)
    yield Result(result(value))
