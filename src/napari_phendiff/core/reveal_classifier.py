"""QuAC's own score for reveal's masks: how much pasting a cell's translated pixels into the original changes a
condition classifier's decision (core/features.py: the offline classifier calibrate and evaluate train).

Each cell is judged in a window of the classifier's training crop centred on it (the classifier was trained on crops
of that size; a whole large field would dilute one cell among hundreds): the probability of the target condition
for the original window, for the window with the whole cell pasted from the translation, and with each candidate
mask of the cell pasted. Only that cell is pasted; its neighbours in the window stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import TrainedClassifier

WINDOW = 48  # px: the crop side features.train_classifier trains on
UNMOVED = 0.05  # a change of P(target) below this is no change of the decision


@dataclass
class ClassifierReach:
    """Per cell (in the order of `ids`): P(target) of its window before (`before`) and with the whole cell pasted
    (`whole`), and for each candidate share the part of that change the share's paste carries (`reached`)."""

    before: np.ndarray
    whole: np.ndarray
    reached: dict[float, np.ndarray]

    @property
    def change(self) -> np.ndarray:
        return self.whole - self.before

    @property
    def moved(self) -> np.ndarray:
        return self.change >= UNMOVED


def classifier_reach(
    original: np.ndarray,
    translated: np.ndarray,
    cells: np.ndarray,
    ids: np.ndarray,
    masks: dict[float, np.ndarray],
    classifier: TrainedClassifier,
    target: int,
    window: int = WINDOW,
) -> ClassifierReach:
    """Score every cell's candidate masks (`masks`: share -> (Y, X) bool, 1.0 the whole cells) with `classifier`."""
    from scipy import ndimage as ndi

    centres = ndi.center_of_mass(np.ones(cells.shape), cells, ids) if len(ids) else []
    boxes = [_box(centre, cells.shape, window) for centre in centres]

    def probability(mask: np.ndarray | None) -> np.ndarray:
        windows = []
        for cell, box in zip(ids, boxes):
            inside = original[(slice(None), *box)]
            if mask is not None:
                own = mask[box] & (cells[box] == cell)
                inside = np.where(own[None], translated[(slice(None), *box)], inside)
            windows.append(inside)
        if not windows:
            return np.zeros(0)
        return classifier.probabilities(windows)[:, target]

    before, whole = probability(None), probability(masks[1.0])
    change = np.where(whole - before >= UNMOVED, whole - before, np.nan)
    reached = {share: (probability(mask) - before) / change for share, mask in masks.items() if share != 1.0}
    reached[1.0] = np.ones(len(ids))
    return ClassifierReach(before, whole, reached)


def _box(centre: tuple[float, float], shape: tuple[int, ...], window: int) -> tuple[slice, slice]:
    """The window x window box centred on `centre`, moved inside the image (the whole side where it is smaller)."""
    sides = []
    for c, size in zip(centre, shape):
        side = min(window, size)
        start = int(np.clip(round(c) - side // 2, 0, size - side))
        sides.append(slice(start, start + side))
    return sides[0], sides[1]
