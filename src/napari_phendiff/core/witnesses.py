"""How far translations went and what they kept, judged without ground truth: the scores `phendiff calibrate` weighs
(calibrate.py has how) and `phendiff evaluate` reports. The witnesses are what real data offers: a condition
classifier trained on the real images, and the per-cell measurements of real source and target cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import cells as cellmeasure
from .cellstats import RealCells, cell_summary, cells_moved, overshot, phenotype_moved
from .features import TrainedClassifier
from .images import Images


def kept_score(originals: Images, translated: Images, channel_names: list[str]) -> float:
    """Mean IoU of nuclei segmented on each original and on its translation (1: the nuclei stayed)."""
    nuclear = cellmeasure.nuclear_channel(channel_names)
    return float(
        np.mean(
            [
                cellmeasure.mask_iou(cellmeasure.segment_nuclei(o[nuclear]), cellmeasure.segment_nuclei(t[nuclear]))
                for o, t in zip(originals, translated)
            ]
        )
    )


def channel_change(model, originals: Images, translated: Images) -> dict[str, float]:
    """RMSE between original and translation per channel, in the model's normalised units."""
    a = model.normalization.forward(np.asarray(originals))
    b = model.normalization.forward(np.asarray(translated))
    return {name: float(np.sqrt(np.mean((a[:, c] - b[:, c]) ** 2))) for c, name in enumerate(model.channel_names)}


def left_out_channels(
    channel_names: list[str], keep_channels: Sequence[str] = (), unaffected: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The channels whose measurements the witnesses leave out: those kept as the original's, and those the
    condition should not change (`unaffected`, default the nuclear one), whose differences are sampling."""
    unaffected = list(unaffected) if unaffected else [channel_names[cellmeasure.nuclear_channel(channel_names)]]
    return tuple(dict.fromkeys([*keep_channels, *unaffected]))


def target_probability(classifier: TrainedClassifier, images: Images, target: str) -> float:
    """Mean probability the classifier gives the target condition."""
    return float(np.mean(classifier.probabilities(list(images))[:, classifier.conditions.index(target)]))


@dataclass
class Witnesses:
    """What the no-truth scores compare translations with: the classifier (if trusted) and its P(target) on real
    target images, and the real source and target cells."""

    classifier: TrainedClassifier
    real_moved: float
    trusted: bool
    cells: RealCells
    ignored_channels: tuple[str, ...] = ()  # kept as the original's, or untouched by the condition

    def score(self, model, originals: np.ndarray, translated: np.ndarray, control: np.ndarray, target: str) -> dict:
        """One sweep row's scores: the witnesses (moved, classifier_reached, cells_moved, measurements_moved),
        reached, kept, kept_control, each channel's change and the measurements overshot (cellstats.overshot)."""
        moved = target_probability(self.classifier, translated, target)
        rows = self.cells.rows(translated)
        summary = cell_summary(rows)
        by_medians, measurements = phenotype_moved(summary, self.ignored_channels)
        by_classifier = min(moved / self.real_moved, 1.0) if self.trusted and self.real_moved > 0 else float("nan")
        by_cells = cells_moved(rows, summary, self.ignored_channels)
        return {
            "moved": moved,
            "classifier_reached": by_classifier,
            "cells_moved": by_cells,
            "measurements_moved": by_medians,
            "measurements": measurements,
            "reached": reached(by_cells, by_classifier),
            "kept": kept_score(originals, translated, model.channel_names),
            "kept_control": kept_score(originals, control, model.channel_names),
            **{f"change_{name}": value for name, value in channel_change(model, originals, translated).items()},
            # what the translations exaggerate of what differs: the sign their `reached` overrates them
            "overshot_measurements": overshot(summary),
        }


def reached(cells: float, classifier: float) -> float:
    """How far translations went towards the real target (1 = all the way) from the two witnesses: the share of
    cells moved, capped at 1; the classifier's where the cells cannot be counted (cellstats.cells_moved)."""
    if np.isfinite(cells):
        return min(cells, 1.0)
    return classifier
