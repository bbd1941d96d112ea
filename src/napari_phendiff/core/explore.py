"""Exploring one translation: a morph from the original to the target, the spread over seeds, the source -> source
control, and the change of every cell. The Translate dock and `phendiff translate --morph/--samples/--measure` call
these; each shares one inversion through translate.iter_translate's cache.

- Morph: frames at strengths s x j / K (j = 0..K) on the same grid, so frame 0 is the original, frame K is the plain
  translation at strength s, and the frames between are the same cells taken apart a little more each time and
  rebuilt under the target: a dose-like progression in which the cell layout stays put.
- Samples: N regenerations from the one inversion with eta > 0 and seeds seed .. seed + N - 1; their mean and
  per-pixel standard deviation. The deviation says where the model's answer depends on chance (high: it is unsure);
  it does not say that the mean is right: a model can be consistently wrong.
- Cells: nuclei are segmented on the original (core/cells.py) and each cell is measured with the same masks on the
  original and on the translation, so a row is one cell before and after.
"""

from __future__ import annotations

import contextlib

import csv
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .cells import measure_cells, nuclear_channel, segment_cells, segment_nuclei
from .errors import ConfigError
from .options import MORPH_PATHS, TranslateOptions, grid_steps
from .reveal import reveal
from .translate import TranslateEvent, is_direct, iter_translate, translation_options
from .walk import network_steps

MORPH_FRAMES = 8
SAMPLES_ETA = 0.5  # eta for samples when the options leave it at 0 (deterministic samples would not differ)


def morph_strengths(options: TranslateOptions, frames: int) -> list[float]:
    """Strengths of frames 1..K: evenly deeper on the grid, the last at the options' own strength."""
    depth = grid_steps(options.steps, options.strength)
    return [max(1, round(depth * j / frames)) / options.steps for j in range(1, frames + 1)]


def iter_morph(
    model,
    images: np.ndarray,
    source: str,
    target: str,
    frames: int = MORPH_FRAMES,
    options: TranslateOptions | None = None,
    cache: dict | None = None,
    path: str = "strength",
    **overrides,
) -> Iterator[TranslateEvent]:
    """Yield progress, then a "done" event whose result stacks frames 0..K on a new leading axis.

    path "strength": frame j is the translation taken j/K of the way down to the options' strength (one inversion).
    path "embedding": every frame at the options' strength, with the target condition's embedding blended from the
    source's, j/K of the way (pixel checkpoints; one inversion too). docs/benchmarks.md (morph_path) compares them.
    """
    if is_direct(model):
        raise ConfigError(
            "A CycleGAN maps an image in one step: it has no strength to morph along. Use a diffusion "
            "checkpoint (pixel or latent)."
        )
    if path not in MORPH_PATHS:
        raise ConfigError(f"The morph path must be one of {', '.join(MORPH_PATHS)}, not {path!r}.")
    if frames < 1:
        raise ConfigError(f"A morph needs at least 1 frame after the original, not {frames}.")
    options, _ = translation_options(model, source, target, options, **overrides)
    cache = {} if cache is None else cache
    if path == "embedding":
        with model.blended_condition(model.condition_index(target), model.condition_index(source), 1.0):
            pass  # refuses a kind that cannot blend, before any work
        out = [np.asarray(images)]
        weights = [j / frames for j in range(1, frames + 1)]
        total = yield from _runs(
            model,
            images,
            source,
            target,
            [options] * frames,
            cache,
            out.append,
            around=lambda k: model.blended_condition(
                model.condition_index(target), model.condition_index(source), weights[k]
            ),
        )
        yield TranslateEvent("done", total, total, target, result=np.stack(out))
        return
    strengths = morph_strengths(options, frames)
    deepest = replace(options, strength=strengths[-1])
    order = [strengths[-1], *strengths[:-1]]  # the deepest first: its inversion serves every other frame
    out = [np.asarray(images)]
    runs = [replace(deepest, strength=strength) for strength in order]
    total = yield from _runs(model, images, source, target, runs, cache, out.append)
    out = [out[0], *out[2:], out[1]]  # original, shallow ... deep
    yield TranslateEvent("done", total, total, target, result=np.stack(out))


def _runs(model, images, source: str, target: str, runs: list[TranslateOptions], cache: dict, keep, around=None):
    """Translations sharing one inversion (the first run's, the deepest), as one progress count; `keep(result)`
    receives each result in order; `around(k)`, if given, is a context the k-th run happens in."""
    overall = done = 0
    for number, options in enumerate(runs):
        with around(number) if around else contextlib.nullcontext():
            for event in iter_translate(model, images, source, target, options, cache=cache):
                if event.phase == "done":
                    keep(event.result)
                    done += event.total
                    continue
                if not overall:  # the first run's count tells how many batches each later run has
                    inverse, forward = network_steps(options)
                    batches = event.total // (inverse + forward)
                    overall = event.total + batches * sum(network_steps(r)[1] for r in runs[1:])
                yield TranslateEvent(event.phase, done + event.step, overall, target)
    return done


def translate_morph(
    model,
    images: np.ndarray,
    source: str,
    target: str,
    frames: int = MORPH_FRAMES,
    options: TranslateOptions | None = None,
    path: str = "strength",
    **overrides,
) -> np.ndarray:
    """(K + 1, *images.shape): the original, then the translation a step further along `path` per frame."""
    for event in iter_morph(model, images, source, target, frames, options, path=path, **overrides):
        if event.phase == "done":
            return event.result
    raise RuntimeError("the morph stopped before it finished")  # unreachable unless the generator is broken


def sample_options(model, options: TranslateOptions) -> TranslateOptions:
    """The options `samples` regenerations run with (eta SAMPLES_ETA where it is 0), refused where they could not
    differ: the samples vary only the noise DDIM adds at each regeneration step but the last (which adds none), so
    a regeneration of one step gives identical samples and a spread of 0 that would read as "certain everywhere"."""
    if is_direct(model):
        raise ConfigError(
            "A CycleGAN's mapping is deterministic: samples would all be the same. Use a diffusion "
            "checkpoint (pixel or latent)."
        )
    if options.inversion == "bdia":
        raise ConfigError("Samples need eta > 0, which BDIA's exact inversion does not allow: use inversion ddim.")
    if options.eta == 0:
        options = replace(options, eta=SAMPLES_ETA)
    regeneration = grid_steps(options.steps, options.strength)
    if regeneration < 2:
        more = next(
            n for n in range(options.steps + 1, 10 * options.steps + 20) if grid_steps(n, options.strength) >= 2
        )
        raise ConfigError(
            f"At strength {options.strength:g} with {options.steps} steps the regeneration is one "
            f"step, which adds no noise: samples would all be the same and their spread 0 "
            f"everywhere. Use at least {more} steps (or a higher strength)."
        )
    return options


def iter_samples(
    model,
    images: np.ndarray,
    source: str,
    target: str,
    samples: int = 4,
    options: TranslateOptions | None = None,
    cache: dict | None = None,
    **overrides,
) -> Iterator[TranslateEvent]:
    """Yield progress, then a "done" event whose result is (mean, std) in the image's intensity units (float32).

    The samples share one inversion and differ in the noise added along the regeneration (`sample_options`)."""
    if samples < 2:
        raise ConfigError(f"samples must be at least 2 to show a spread, not {samples}.")
    options, _ = translation_options(model, source, target, options, **overrides)
    options = sample_options(model, options)
    cache = {} if cache is None else cache
    results = []
    runs = [replace(options, seed=options.seed + k) for k in range(samples)]
    total = yield from _runs(
        model, images, source, target, runs, cache, lambda r: results.append(np.asarray(r, np.float32))
    )
    stack = np.stack(results)
    yield TranslateEvent("done", total, total, target, result=(stack.mean(0), stack.std(0)))


def translate_samples(
    model,
    images: np.ndarray,
    source: str,
    target: str,
    samples: int = 4,
    options: TranslateOptions | None = None,
    **overrides,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-pixel standard deviation of `samples` regenerations from one inversion."""
    for event in iter_samples(model, images, source, target, samples, options, **overrides):
        if event.phase == "done":
            return event.result
    raise RuntimeError("the samples stopped before they finished")  # unreachable unless the generator is broken


def measure_translation(
    original: np.ndarray, translated: np.ndarray, channel_names: list[str], nuclei: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict]]:
    """Cells of one (C, Y, X) image: (cell labels, one row per cell) with every measure on the original, on the
    translation and its change (translated - original). Nuclei are segmented on the original's nuclear channel
    unless given."""
    original, translated = np.asarray(original), np.asarray(translated)
    if original.shape != translated.shape or original.ndim != 3:
        raise ConfigError(
            f"Measure one (C, Y, X) image and its translation of the same shape, not {original.shape} "
            f"and {translated.shape}."
        )
    if nuclei is None:
        nuclei = segment_nuclei(original[nuclear_channel(channel_names)])
    cells = segment_cells(nuclei)
    before = measure_cells(original, channel_names, nuclei, cells)
    after = measure_cells(translated, channel_names, nuclei, cells)
    centres = _centres(cells, before["cell"])
    rows = []
    for i, cell in enumerate(before["cell"]):
        row = {"cell": int(cell), "y": centres[i][0], "x": centres[i][1]}
        for name in before:
            if name != "cell":
                row[f"{name}_original"] = float(before[name][i])
                row[f"{name}_translated"] = float(after[name][i])
                row[f"{name}_change"] = float(after[name][i] - before[name][i])
        rows.append(row)
    return cells, rows


def measure_and_reveal(
    original: np.ndarray,
    translated: np.ndarray,
    channel_names: list[str],
    classifier=None,
    target: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """`measure_translation`, and each cell's change mask and score (core/reveal.py) on the same cells: (cell
    labels, the labels inside each cell's mask and 0 elsewhere, rows with reveal_share, reveal_reached and
    reveal_score added; with a condition classifier and the target also reveal_classifier_change and
    reveal_converted)."""
    nuclei = segment_nuclei(np.asarray(original)[nuclear_channel(channel_names)])
    cells, rows = measure_translation(original, translated, channel_names, nuclei)
    revealed = reveal(
        original, translated, channel_names, nuclei=nuclei, cells=cells, classifier=classifier, target=target
    )
    found = {row["cell"]: row for row in revealed.rows}
    for row in rows:
        cell = found[row["cell"]]
        row.update(reveal_share=cell["mask_share"], reveal_reached=cell["reached"], reveal_score=cell["reveal_score"])
        if classifier is not None:
            row.update(reveal_classifier_change=cell["classifier_change"], reveal_converted=cell["converted"])
    return cells, np.where(revealed.mask, cells, 0), rows


def _centres(labels: np.ndarray, ids: np.ndarray) -> list[tuple[float, float]]:
    from scipy import ndimage as ndi

    return [(float(y), float(x)) for y, x in ndi.center_of_mass(np.ones_like(labels), labels, ids)] if len(ids) else []


def write_cells_csv(path: str | Path, rows: list[dict]) -> Path:
    """The per-cell table as CSV (written whole, then moved into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", newline="") as handle:
        fields = list(rows[0]) if rows else ["cell"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
