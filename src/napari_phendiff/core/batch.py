"""Translate many files (whole folders, plates) on one or several processes, resumably.

One process: `phendiff translate MODEL FOLDER ...`. Several (GPUs of a node, nodes of a cluster, or CPU processes):
`torchrun --nproc_per_node N -m napari_phendiff.cli translate ...` or `accelerate launch -m napari_phendiff.cli
translate ...`. The files are dealt round-robin over the processes; each translates and writes its own share.
Outputs already on disk are skipped (every file is written atomically, so one that exists is complete), so a run
that was stopped continues where it was. At the end the main process writes one summary.json for the whole run.
Images of one shape are translated together, as many per network call as the translation's batch allows, so a
folder of small crops runs as fast as a stack of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .device import get_device
from .errors import ConfigError, DataError, PhenDiffError
from .models import load_checkpoint, read_manifest
from .export import provenance, write_translation
from .checkpoint import check_writable, manifest_kind, output_lock, resolve_checkpoint
from .extras import checked_extras, write_extras
from .files import Job, plan_jobs
from .images import read_image
from .option_words import describe
from .options import check_given, resolve_options
from .inputs import check_fits
from .run_summary import SUMMARY, BatchResult, finish_run, write_shard  # noqa: F401  (SUMMARY: read from here by the CLI)
from .tiling import default_batch_size, fits_whole
from .estimate import Estimate, estimate_translation
from .translate import (
    TranslateEvent,
    is_direct,
    iter_translate,
    kept_channels,
    settled,
    translation_options,
)


def translate_files(
    checkpoint,
    inputs: list[Path],
    source: str,
    targets: list[str],
    out: str | Path,
    *,
    progress: Callable[[str], Callable[[TranslateEvent], None]] | None = None,
    **kwargs,
) -> BatchResult:
    """Translate every input (this process's share of them) to every target; returns what this process did.

    The arguments are those of `iter_translate_files`; `progress(description)` gives the per-event callback for
    each group of files translated together.
    """
    events = iter_translate_files(checkpoint, inputs, source, targets, out, **kwargs)
    callbacks: dict = {}
    while True:
        try:
            names, event = next(events)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            callbacks.setdefault(names, progress(names))(event)


def iter_translate_files(
    checkpoint,
    inputs: list[Path],
    source: str,
    targets: list[str],
    out: str | Path,
    *,
    device: str = "auto",
    overwrite: bool = False,
    morph: int = 0,
    samples: int = 0,
    measure: bool = False,
    reveal: bool = False,
    morph_path: str = "strength",
    model=None,
    report: Callable[[Path], None] | None = None,
    **options,
):
    """Translate step by step: yields (files, TranslateEvent) per network step, returns the BatchResult. Closing
    it stops between two steps (every file written so far is complete; no summary is written for the run).

    options: the translation options (core/options.py; unset ones take the checkpoint's calibrated setting, else
    the defaults). Per file and target, optionally: `morph` K frames from the original to the translation
    (<name>_morph.tif, a stack, along `morph_path` "strength" or "embedding"), the standard deviation over
    `samples` seeds (<name>_std.tif, float32) and the
    per-cell table (<name>_cells.csv); see core/explore.py. `model`: one already loaded from `checkpoint` (the
    dock's), else it is loaded here. `report(path)` is called per written file.
    """
    with output_lock(Path(out), "a translation run"):
        return (
            yield from _translate_run(
                checkpoint,
                inputs,
                source,
                targets,
                out,
                device=device,
                overwrite=overwrite,
                morph=morph,
                samples=samples,
                measure=measure,
                reveal=reveal,
                morph_path=morph_path,
                model=model,
                report=report,
                **options,
            )
        )


def _translate_run(
    checkpoint,
    inputs: list[Path],
    source: str,
    targets: list[str],
    out: str | Path,
    *,
    device: str,
    overwrite: bool,
    morph: int,
    samples: int,
    measure: bool,
    reveal: bool,
    morph_path: str,
    model,
    report: Callable[[Path], None] | None,
    **options,
):
    from accelerate import PartialState

    out = Path(out)
    check_given(options)
    extras = checked_extras(morph, samples, morph_path, measure, reveal)
    read_manifest(checkpoint)  # a wrong checkpoint fails before the inputs are searched
    jobs = plan_jobs(inputs, out, targets)
    check_writable(out)  # a read-only folder fails before the first translation, not after it
    state = PartialState(cpu=str(device) == "cpu")
    mine = jobs[state.process_index :: state.num_processes]
    todo = [job for job in mine if overwrite or not all(p.is_file() for p in job.outputs(targets, extras))]
    result = BatchResult(skipped=[job.path for job in mine if job not in todo])
    if result.skipped:  # a rerun with other settings would leave files of both settings side by side
        runs_on = model.device if model is not None else state.device if state.num_processes > 1 else get_device(device)
        _check_done_settings(checkpoint, [job for job in mine if job not in todo], source, targets, options, runs_on)
    started = time.perf_counter()
    settings: dict = {}
    if todo:
        if model is None:
            model = load_checkpoint(checkpoint, device=state.device if state.num_processes > 1 else device)
        chosen, sources = _checked_options(model, source, targets, samples, options)
        settings = {"options": chosen.record(), "options_from": sources}
        result.settings = describe(chosen, sources, direct=is_direct(model))
        extra_args = dict(morph=morph, morph_path=morph_path, samples=samples, measure=measure, reveal=reveal)
        yield from _translate_todo(model, todo, source, targets, chosen, extra_args, result, report)
    result.seconds = time.perf_counter() - started
    write_shard(out, state.process_index, result)
    state.wait_for_everyone()
    if state.is_main_process:
        finish_run(
            out,
            state.num_processes,
            len(jobs),
            dict(checkpoint=str(checkpoint), source=source, targets=targets, inputs=len(jobs), **settings),
        )
    return result


def _translate_todo(
    model,
    todo: list[Job],
    source: str,
    targets: list[str],
    chosen,
    extra_args: dict,
    result: BatchResult,
    report: Callable[[Path], None] | None,
):
    """Translate the files in groups of one shape, yielding (files, TranslateEvent) per network step, and write
    each group's translations and extras before the next group is read; `result` records what was written."""
    begun = 0
    for group, images in _groups(model, todo, chosen, result.failed):
        first, begun = begun + 1, begun + len(group)
        names = _group_name(group, first, begun, len(todo))
        stack = images[0][None] if len(images) == 1 else np.stack(images)  # a large field is not copied
        for event in iter_translate(model, stack, source, targets, chosen):
            translated = event.result
            yield names, event
        for i, job in enumerate(group):
            for target, outputs in translated.items():
                written = _write_job(model, job, images[i], outputs[i], source, target, chosen, extra_args, result)
                result.written += written
                if report:
                    for path in written:
                        report(path)
        del stack, images, translated  # the next group's fields are read with this one's released


def _group_name(group: list[Job], first: int, last: int, total: int) -> str:
    """How the progress names a group: its first file, how many more, and where they are in the run."""
    where = f"file {first} of {total}" if len(group) == 1 else f"files {first}-{last} of {total}"
    return (group[0].path.name if len(group) == 1 else f"{group[0].path.name} +{len(group) - 1}") + f" ({where})"


def _checked_options(model, source: str, targets: list[str], samples: int, options: dict):
    """The run's resolved translation options and where each came from, after the conditions, kept channels and
    samples are checked against the model (before any file is read)."""
    for name in [source, *targets]:
        model.condition_index(name)
    chosen, sources = translation_options(model, source, targets[0], **options)
    kept_channels(model, chosen.keep_channels)
    if samples:  # samples that could not differ fail before the first translation, not after it
        from .explore import sample_options

        sample_options(model, chosen)
    return chosen, sources


def _write_job(
    model,
    job: Job,
    image: np.ndarray,
    translated: np.ndarray,
    source: str,
    target: str,
    chosen,
    extra_args: dict,
    result: BatchResult,
) -> list[Path]:
    """Write one file's translation to one target and its extras; a write that fails says what is complete."""
    meta = provenance(model, source, target, chosen, job.path)
    try:
        job.out_dir.mkdir(parents=True, exist_ok=True)
        return [
            *write_extras(model, job, image, translated, source, target, chosen, meta, **extra_args),
            write_translation(job.out_dir, job.path.stem, target, translated, model, meta),
        ]
    except OSError as exc:  # disk full, folder gone or made read-only during the run
        free = _free_mb(job.out_dir)
        raise DataError(
            f"{job.output(target)}: could not be written ({exc.strerror or exc}"
            f"{f'; {free:.0f} MB free on its disk' if free is not None else ''}). "
            f"The {len(result.written)} file(s) written before it are complete; free "
            "space or fix the folder, then run the same command again: it skips "
            "them."
        ) from exc


# Settings that do not change what a translation is: how many fields share a network call.
_SAME_RESULT = ("batch_size",)


def _check_done_settings(
    checkpoint, done: list[Job], source: str, targets: list[str], options: dict, device: torch.device
) -> None:
    """Refuse a rerun whose settings differ from those recorded in the translations it would skip (precision
    "auto" taken as what it means on `device`)."""
    from .images import read_provenance

    manifest = read_manifest(checkpoint)
    path = str(resolve_checkpoint(checkpoint))
    differ = []
    for target in targets:
        resolved = resolve_options(manifest, source, target, options)[0]
        wanted = settled(resolved, manifest_kind(manifest), device).record()
        for job in done:
            recorded = read_provenance(job.output(target)) or {}
            changes = [
                f"{name} {recorded.get(name)!r} there, {value!r} now"
                for name, value in wanted.items()
                if name not in _SAME_RESULT and name in recorded and recorded[name] != value
            ]
            if recorded.get("checkpoint") not in (None, path):
                changes.append(f"checkpoint {recorded['checkpoint']} there, {path} now")
            if changes:
                differ.append(f"{job.output(target)}: {'; '.join(changes)}")
    if differ:
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise ConfigError(
            f"{len(differ)} translation(s) already in the output folder were made with other settings: "
            + " | ".join(differ[:3])
            + more
            + ". Translate into a new folder, or overwrite them with "
            "the new settings (--overwrite)."
        )


def _free_mb(folder: Path) -> float | None:
    import shutil

    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return None


def estimate_files(
    checkpoint,
    inputs: list[Path],
    source: str,
    targets: list[str],
    out: str | Path,
    *,
    device: str = "auto",
    model=None,
    **options,
) -> tuple[Estimate, int]:
    """How long translating these files would take on this computer, and how many files it would translate: the
    first file's own tiles are timed (core/estimate.py) and the others scaled by the pixels of
    their tiles. Nothing is written; files that cannot be read are left out, as a run leaves them out."""
    check_given(options)
    if model is None:
        model = load_checkpoint(checkpoint, device=device)
    chosen, _ = translation_options(model, source, targets[0], **options)
    jobs = plan_jobs(inputs, Path(out), targets)
    parts, files, rate = [], 0, None
    for group, images in _groups(model, jobs, chosen, {}):
        parts.append(estimate_translation(model, np.stack(images), source, targets, chosen, seconds_per_pixel=rate))
        if rate is None and parts[-1].pixels:  # the first file with cells is timed; the others scaled by pixels
            rate = parts[-1].seconds / parts[-1].pixels
        files += len(group)
    total = Estimate(*(sum(getattr(p, f) for p in parts) for f in ("seconds", "tiles", "copied", "calls", "pixels")))
    return total, files


def _groups(model, jobs: list[Job], options, failed: dict):
    """Yield (jobs, images) of one shape, as many as one translation batch holds: whole fields that fit the
    memory budget together, or (for tiled fields) one file at a time. Files are read as they are needed; one that
    cannot be read or does not fit the model is recorded in `failed` and the others go on."""
    pending: dict[tuple, tuple[list[Job], list[np.ndarray]]] = {}
    for job in jobs:
        try:
            image = read_image(job.path)
            check_fits(model, image, str(job.path))
        except PhenDiffError as exc:
            failed[job.path] = str(exc)
            continue
        group, images = pending.setdefault(image.shape, ([], []))
        group.append(job)
        images.append(image)
        if len(group) >= _per_call(model, image.shape, options):
            yield pending.pop(image.shape)
    yield from pending.values()


def _per_call(model, shape: tuple, options) -> int:
    """How many files of this shape go into one translate() call."""
    if is_direct(model) or options.tiles or not fits_whole(model, (1, *shape[-3:]), 1):
        return 1
    return options.batch_size or default_batch_size(model, shape[-2:], tiles=False)
