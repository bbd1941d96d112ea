"""The extra outputs a translation run can write beside each translation (core/batch.py): the morph from the
original to the translation (<name>_morph.tif), the spread over seeds (<name>_std.tif), the per-cell table
(<name>_cells.csv) and the change masks with their per-cell scores (<name>_reveal.tif, <name>_reveal_cells.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .files import Job
from .options import MORPH_PATHS


def checked_extras(morph: int, samples: int, morph_path: str, measure: bool, reveal: bool) -> list[str]:
    """The extra outputs asked for, every setting checked before anything is read."""
    for name, value, low in (("morph", morph, 0), ("samples", samples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, not {value!r}.")
    if morph_path not in MORPH_PATHS:
        raise ConfigError(f"morph_path must be one of {', '.join(MORPH_PATHS)}, not {morph_path!r}.")
    if samples == 1:
        raise ConfigError("samples must be at least 2 to show a spread (or 0 for none).")
    return [
        e
        for e, wanted in (
            ("morph", morph),
            ("std", samples),
            ("cells", measure),
            ("reveal", reveal),
            ("reveal_cells", reveal),
        )
        if wanted
    ]


def write_extras(
    model,
    job: Job,
    image: np.ndarray,
    translated: np.ndarray,
    source: str,
    target: str,
    options,
    meta: dict,
    morph: int,
    morph_path: str,
    samples: int,
    measure: bool,
    reveal: bool,
) -> list[Path]:
    """The extras asked for one file and target, written before its translation (whose presence marks the file
    done): a morph stack, the spread over seeds, the per-cell table, the change masks (core/reveal.py: each masked
    pixel holds its cell's label) and their per-cell scores."""
    from .cells import nuclear_channel, segment_nuclei
    from .explore import measure_translation, write_cells_csv

    written = []
    if morph:
        written.append(_write_morph(model, job, image, source, target, options, meta, morph, morph_path))
    if samples:
        written.append(_write_spread(model, job, image, source, target, options, meta, samples))
    nuclei = segment_nuclei(image[nuclear_channel(model.channel_names)]) if measure or reveal else None
    if measure:
        _, rows = measure_translation(image, translated, model.channel_names, nuclei)
        written.append(write_cells_csv(job.output(target, "cells"), rows))
    if reveal:
        written += _write_reveal(model, job, image, translated, target, meta, nuclei)
    return written


def _write_morph(
    model, job: Job, image: np.ndarray, source: str, target: str, options, meta: dict, morph: int, morph_path: str
) -> Path:
    """`morph` frames from the original to the translation, as one stack."""
    from .explore import translate_morph
    from .images import write_image

    frames = translate_morph(model, image, source, target, morph, options, path=morph_path)
    return write_image(
        job.output(target, "morph"),
        frames,
        channel_names=model.channel_names,
        provenance={**meta, "morph_frames": morph, "morph_path": morph_path},
    )


def _write_spread(
    model, job: Job, image: np.ndarray, source: str, target: str, options, meta: dict, samples: int
) -> Path:
    """The standard deviation of the translation over `samples` seeds (float32)."""
    from .explore import translate_samples
    from .images import write_image

    _, spread = translate_samples(model, image, source, target, samples, options)
    return write_image(
        job.output(target, "std"),
        spread.astype(np.float32),
        channel_names=model.channel_names,
        provenance={**meta, "samples": samples},
    )


def _write_reveal(
    model, job: Job, image: np.ndarray, translated: np.ndarray, target: str, meta: dict, nuclei: np.ndarray | None
) -> list[Path]:
    """The change masks (each masked pixel holds its cell's label, 0 elsewhere) and their per-cell scores."""
    from .explore import write_cells_csv
    from .features import stored_classifier
    from .images import write_image
    from .reveal import reveal as reveal_cells

    # the classifier a stored calibration trusted scores the masks too (QuAC's own score); else measurements alone
    classifier = stored_classifier(model.path, target)
    found = reveal_cells(  # the cells the table measured
        image, translated, model.channel_names, nuclei=nuclei, classifier=classifier, target=target
    )
    masks = np.where(found.mask, found.cells, 0).astype(np.uint16 if found.cells.max() < 2**16 else np.float32)
    return [
        write_image(
            job.output(target, "reveal"),
            masks,
            provenance={
                **meta,
                "reveal": "cell labels inside each cell's change mask, 0 elsewhere (core/reveal.py)",
                "reveal_scored_by": "the cells' measurements"
                + (
                    f" and the condition classifier stored by calibration (held-out accuracy {classifier.accuracy:.2f})"
                    if classifier is not None
                    else ""
                ),
            },
        ),
        write_cells_csv(job.output(target, "reveal_cells"), found.rows),
    ]
