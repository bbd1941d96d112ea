"""Reveal what changed, cell by cell: the smallest part of each cell's translation that carries most of its change.

The full difference (translated - original) also holds what the model changes anyway (a smoother reporter, a
shifted background). After QuAC (Funke lab: keep the smallest region of the translation that, pasted into the real
image, changes the decision most), each cell's pixels are ranked by how much the translation changed them (the
absolute difference per channel over the channel's range in the original, summed and smoothed), and growing shares
of them are pasted from the translation into the original. The cell's change is what its measurements
(core/cells.py: intensities per compartment, ratios, texture, spread) move when the whole cell is pasted, in units of
the spread of each measurement between the original's cells. The mask is the smallest share that reaches REACHED of
that change; the score is the change reached per share of the cell's area, so cells ranked by it put a large change
in a small place first.

QuAC scores with a classifier of the conditions. Given one (core/features.py, trained on a labelled folder as
calibrate and evaluate do), each cell's mask must also carry REACHED of the change of the classifier's P(target) that
pasting the whole cell makes (core/reveal_classifier.py), and each row says how much it moved the decision; without
one, the per-cell measurements alone choose the masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from .cells import measure_cells, nuclear_channel, segment_cells, segment_nuclei
from .errors import ConfigError
from .features import TrainedClassifier
from .reveal_classifier import ClassifierReach, classifier_reach

REACHED = 0.8  # the share of a cell's full change its mask must carry ("most of it")
SHARES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # candidate masks: these shares of the cell's pixels
SMOOTHING = 1.0  # px: the difference map is smoothed so a mask is a region, not scattered pixels
# A full change below this (in spreads between the original's cells) is no change: empty mask, score 0. A cell
# next to a changed one moves a little through the texture filter's reach across the border: up to 0.016 on the
# simulator (tests/test_reveal.py), moved cells 5.7 and more.
UNMOVED = 0.05
AREA_MEASURES = ("cell", "nucleus_area", "cell_area")  # the masks are fixed: these never change


@dataclass
class Revealed:
    """What `reveal` found in one image: the masks of every cell (`mask`, bool (Y, X)), the original with the
    translation pasted inside them (`pasted`, the input's dtype), the cell labels and one row per cell, sorted by
    score (largest first): cell, y, x, area, mask_area, mask_share, change, reached, reveal_score; scored with a
    classifier also classifier_before (P(target) of the cell's window), classifier_change (what pasting the whole
    cell adds to it), classifier_reached (the share of that the mask carries) and converted (the window with the
    mask pasted is called the target)."""

    mask: np.ndarray
    pasted: np.ndarray
    cells: np.ndarray
    rows: list[dict]


def difference_map(original: np.ndarray, translated: np.ndarray) -> np.ndarray:
    """How much the translation changed each pixel (Y, X): |translated - original| per channel over the channel's
    1-99th percentile range in the original, summed over channels and smoothed."""
    original, translated = np.asarray(original, np.float64), np.asarray(translated, np.float64)
    low, high = np.percentile(original, [1, 99], axis=(1, 2))
    scale = np.maximum(high - low, 1e-9)[:, None, None]
    return ndi.gaussian_filter((np.abs(translated - original) / scale).sum(0), SMOOTHING)


def paste(original: np.ndarray, translated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The original with the translation's pixels inside `mask` (Y, X), every channel."""
    return np.where(mask[None], translated, original).astype(original.dtype)


def share_masks(changed: np.ndarray, cells: np.ndarray, shares=SHARES) -> dict[float, np.ndarray]:
    """For each share, a mask holding that share of every cell's pixels: those the translation changed most."""
    order = np.lexsort((-changed.ravel(), cells.ravel()))  # by cell, then most changed first
    labels = cells.ravel()[order]
    starts = np.searchsorted(labels, labels, side="left")
    rank = np.arange(labels.size) - starts  # position of each pixel within its cell's ranking
    areas = np.bincount(cells.ravel())
    masks = {}
    for share in shares:
        keep = (labels > 0) & (rank < np.ceil(share * areas[labels]))
        mask = np.zeros(cells.size, bool)
        mask[order[keep]] = True
        masks[share] = mask.reshape(cells.shape)
    return masks


def reveal(
    original: np.ndarray,
    translated: np.ndarray,
    channel_names: list[str],
    *,
    nuclei: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    reached: float = REACHED,
    classifier: TrainedClassifier | None = None,
    target: str | None = None,
) -> Revealed:
    """Each cell's minimal change mask and score for one (C, Y, X) image and its translation (see the module's
    docstring). Nuclei are segmented on the original's nuclear channel unless `nuclei`/`cells` are given. With a
    `classifier` of the conditions, the masks also carry most of its decision's change towards `target`."""
    original, translated = np.asarray(original), np.asarray(translated)
    _check_pair(original, translated, channel_names, reached)
    if nuclei is None:
        nuclei = segment_nuclei(original[nuclear_channel(channel_names)])
    if cells is None:
        cells = segment_cells(nuclei)
    masks = share_masks(difference_map(original, translated), cells)
    ids = np.unique(cells[cells > 0])
    before = _measures(original, channel_names, nuclei, cells)
    if len(ids) == 0:
        return Revealed(np.zeros(cells.shape, bool), original.copy(), cells, [])
    change, share_reached = _measure_reach(
        original, translated, masks, before, lambda image: _measures(image, channel_names, nuclei, cells)
    )
    judged = None
    if classifier is not None:
        judged = classifier_reach(
            original, translated, cells, ids, masks, classifier, _target_index(classifier, target)
        )
    chosen = _smallest_enough(share_reached, judged, reached)
    carried = np.choose(np.searchsorted(sorted(masks), chosen), [share_reached[s] for s in sorted(masks)])
    moved = change >= UNMOVED
    mask = _cell_masks(cells, ids, masks, chosen, moved)
    rows = _cell_rows(cells, ids, mask, change, carried, moved)
    if judged is not None:
        _add_classifier(rows, ids, judged, chosen, moved)
    return Revealed(mask, paste(original, translated, mask), cells, rows)


def _target_index(classifier: TrainedClassifier, target: str | None) -> int:
    if target not in classifier.conditions:
        raise ConfigError(
            f"Reveal with a classifier needs the target condition, one of {', '.join(classifier.conditions)}; "
            f"got {target!r}."
        )
    return classifier.conditions.index(target)


def _smallest_enough(
    share_reached: dict[float, np.ndarray], judged: ClassifierReach | None, reached: float
) -> np.ndarray:
    """Per cell, the smallest share whose paste carries `reached` of the measurements' change, and of the
    classifier's where it has one and the cell moved its decision."""
    chosen = np.full(len(share_reached[1.0]), 1.0)
    for share in sorted(share_reached, reverse=True)[1:]:  # from large to small: the smallest still enough
        enough = share_reached[share] >= reached
        if judged is not None:
            enough &= ~judged.moved | (np.nan_to_num(judged.reached[share]) >= reached)
        chosen = np.where(enough, share, chosen)
    return chosen


def _add_classifier(
    rows: list[dict], ids: np.ndarray, judged: ClassifierReach, chosen: np.ndarray, moved: np.ndarray
) -> None:
    """The classifier's columns of each row (see Revealed): a cell with an empty mask keeps its window's P."""
    index = {int(cell): i for i, cell in enumerate(ids)}
    for row in rows:
        i = index[row["cell"]]
        part = float(np.nan_to_num(judged.reached[float(chosen[i])][i])) if moved[i] else 0.0
        part = part if judged.moved[i] else 0.0
        after = judged.before[i] + part * judged.change[i]
        row.update(
            classifier_before=float(judged.before[i]),
            classifier_change=float(judged.change[i]),
            classifier_reached=part,
            converted=bool(after >= 0.5),
        )


def _check_pair(original: np.ndarray, translated: np.ndarray, channel_names: list[str], reached: float) -> None:
    """Refuse an image and translation that do not match (or lack a name per channel), and a share out of range."""
    if original.shape != translated.shape or original.ndim != 3 or original.shape[0] != len(channel_names):
        raise ConfigError(
            f"Reveal one (C, Y, X) image and its translation of the same shape with one name per "
            f"channel, not {original.shape} and {translated.shape} with {len(channel_names)} name(s)."
        )
    if not 0 < reached <= 1:
        raise ConfigError(f"reached must lie in (0, 1], not {reached}.")


def _measures(image: np.ndarray, channel_names: list[str], nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Each cell's measurements (one row per cell) but its areas, which pasting cannot change."""
    columns = measure_cells(image, channel_names, nuclei, cells)
    return np.stack([np.nan_to_num(v) for k, v in columns.items() if k not in AREA_MEASURES], axis=1)


def _measure_reach(
    original: np.ndarray,
    translated: np.ndarray,
    masks: dict[float, np.ndarray],
    before: np.ndarray,
    measures: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Per cell: its full change (in spreads between the original's cells), and for each share of its pixels the
    part of that change their paste carries."""
    spread = np.nanstd(before, axis=0)
    spread = np.maximum(spread, np.maximum(1e-3 * np.abs(before).mean(0), 1e-9))
    whole = measures(paste(original, translated, masks[1.0]))
    change = np.linalg.norm((whole - before) / spread, axis=1)
    reached = {1.0: np.ones(len(before))}
    for share in sorted(masks)[:-1]:
        left = np.linalg.norm((whole - measures(paste(original, translated, masks[share]))) / spread, axis=1)
        reached[share] = 1 - left / np.maximum(change, 1e-12)
    return change, reached


def _cell_masks(
    cells: np.ndarray, ids: np.ndarray, masks: dict[float, np.ndarray], chosen: np.ndarray, moved: np.ndarray
) -> np.ndarray:
    """One mask (Y, X) of every moved cell's chosen share; cells that did not move stay out."""
    index = np.zeros(int(cells.max()) + 1, np.int64)
    index[ids] = np.arange(len(ids))
    mask = np.zeros(cells.shape, bool)
    for share in masks:
        inside = (cells > 0) & masks[share]
        mask |= inside & (chosen[index[cells]] == share) & moved[index[cells]]
    return mask


def _cell_rows(
    cells: np.ndarray, ids: np.ndarray, mask: np.ndarray, change: np.ndarray, carried: np.ndarray, moved: np.ndarray
) -> list[dict]:
    """One row per cell (see Revealed), the highest reveal score first."""
    areas = np.bincount(cells.ravel())[ids]
    mask_areas = np.bincount(cells[mask].ravel(), minlength=int(cells.max()) + 1)[ids]
    centres = ndi.center_of_mass(np.ones(cells.shape), cells, ids)
    rows = []
    for i, cell in enumerate(ids):
        share = mask_areas[i] / areas[i]
        score = float(change[i] * carried[i] / share) if moved[i] and share > 0 else 0.0
        rows.append(
            {
                "cell": int(cell),
                "y": float(centres[i][0]),
                "x": float(centres[i][1]),
                "area": int(areas[i]),
                "mask_area": int(mask_areas[i]),
                "mask_share": float(share),
                "change": float(change[i]) if moved[i] else 0.0,
                "reached": float(carried[i]) if moved[i] else 0.0,
                "reveal_score": score,
            }
        )
    rows.sort(key=lambda row: -row["reveal_score"])
    return rows
