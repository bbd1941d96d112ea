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

QuAC scores with a classifier of the conditions; the per-cell measurements stand in for it here, because a
translation has no classifier to hand (evaluate and calibrate train one on a labelled folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from .cells import measure_cells, nuclear_channel, segment_cells, segment_nuclei
from .errors import ConfigError

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
    score (largest first): cell, y, x, area, mask_area, mask_share, change, reached, reveal_score."""

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
) -> Revealed:
    """Each cell's minimal change mask and score for one (C, Y, X) image and its translation (see the module's
    docstring). Nuclei are segmented on the original's nuclear channel unless `nuclei`/`cells` are given."""
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
    change, chosen, carried = _smallest_shares(
        original, translated, masks, before, reached, lambda image: _measures(image, channel_names, nuclei, cells)
    )
    moved = change >= UNMOVED
    mask = _cell_masks(cells, ids, masks, chosen, moved)
    rows = _cell_rows(cells, ids, mask, change, carried, moved)
    return Revealed(mask, paste(original, translated, mask), cells, rows)


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


def _smallest_shares(
    original: np.ndarray,
    translated: np.ndarray,
    masks: dict[float, np.ndarray],
    before: np.ndarray,
    reached: float,
    measures: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: its full change (in spreads between the original's cells), the smallest share of its pixels whose
    paste carries `reached` of that change, and the part of the change that share carries."""
    spread = np.nanstd(before, axis=0)
    spread = np.maximum(spread, np.maximum(1e-3 * np.abs(before).mean(0), 1e-9))
    whole = measures(paste(original, translated, masks[1.0]))
    change = np.linalg.norm((whole - before) / spread, axis=1)
    chosen = np.full(len(before), 1.0)
    carried = np.ones(len(before))
    for share in sorted(masks, reverse=True)[1:]:  # from large to small: the smallest that still carries enough
        part = measures(paste(original, translated, masks[share]))
        left = np.linalg.norm((whole - part) / spread, axis=1)
        share_reached = 1 - left / np.maximum(change, 1e-12)
        enough = share_reached >= reached
        chosen = np.where(enough, share, chosen)
        carried = np.where(enough, share_reached, carried)
    return change, chosen, carried


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
