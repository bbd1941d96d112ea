"""Per-cell comparison of real and translated images: one table of CellProfiler-style measurements (core/cells.py)
for the real source cells, their translations and the real target cells, and per measurement how far the
translation moved it from the real source towards the real target. `phendiff evaluate` writes both into its report;
`phendiff calibrate` checks its chosen setting with them, and counts with `cells_moved` how many translated cells
moved to the target (witnesses.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import cells as cellmeasure
from . import metrics
from .images import Images

# A measurement "differs" between the real conditions (so that "moved ... of the way" means something) when the
# effect size target vs source is at least MIN_EFFECT (Cohen's d, a medium effect) and the rank test target vs
# source, where it can be computed, gives p below MAX_P.
MIN_EFFECT = 0.5
MAX_P = 0.05
# A translation overshoots a measurement when its median went more than OVERSHOOT times as far from the real source
# as the real target is (moved > OVERSHOOT): on the simulator, treated -> untreated translations that overshot
# (actin intensity moved 2-6x the way) had moved the true phenotype in few cells (docs/benchmarks.md,
# calibration_scores), so a report that shows only "moved" would look like success.
OVERSHOOT = 2.0
# cells_moved needs the real cells to differ: at least this share more of the real target cells than of the real
# source cells must look like target cells (target_like), else the measurements cannot count moved cells.
MIN_SEPARATION = 0.25
MIN_CELLS = 10  # and at least this many measured real source and real target cells: a share of 3 cells says little


def cell_table(
    paths: Sequence[Path],
    originals: Sequence[np.ndarray],
    translated: Sequence[np.ndarray],
    target_paths: Sequence[Path],
    targets: Sequence[np.ndarray],
    channel_names: list[str],
) -> list[dict]:
    """Per-cell rows for the real source images, their translations and the real target images.

    Translated images are measured with the masks segmented on their originals, so each translated cell is the
    same cell as its original (the identity score checks that the cells did stay in place).
    """
    rows = []
    for path, original, translation in zip(paths, originals, translated):
        nuclei = cellmeasure.segment_nuclei(original[cellmeasure.nuclear_channel(channel_names)])
        cells = cellmeasure.segment_cells(nuclei)
        for group, image in (("real source", original), ("translated", translation)):
            rows += _rows(group, path, cellmeasure.measure_cells(image, channel_names, nuclei, cells))
    for path, image in zip(target_paths, targets):
        rows += _rows("real target", path, cellmeasure.measure_cells(image, channel_names))
    return rows


def _rows(group: str, path: Path, columns: dict[str, np.ndarray]) -> list[dict]:
    names = list(columns)
    return [
        {"group": group, "file": path.name, **{k: columns[k][i] for k in names}} for i in range(len(columns["cell"]))
    ]


def overshot(summary: list[dict]) -> list[dict]:
    """The measurements (of cell_summary) whose translated median went past the real target by more than OVERSHOOT
    times the real difference, most overshot first: [{"measurement", "moved"}]."""
    over = [
        {"measurement": s["measurement"], "moved": float(s["moved"])}
        for s in summary
        if s["differs"] and np.isfinite(s["moved"]) and s["moved"] > OVERSHOOT
    ]
    return sorted(over, key=lambda m: -m["moved"])


def summary_of(originals: Images, translated: Images, targets: Images, channel_names: list[str]) -> list[dict]:
    """`cell_summary` of translations against real target images, for callers without files or a report."""
    return RealCells(originals, targets, channel_names).summary(translated)


class RealCells:
    """The real source and target cells measured once, so that many translations of the same source images (a
    calibration sweep) are each compared with them at the cost of measuring the translations alone."""

    def __init__(self, originals: Images, targets: Images, channel_names: list[str]):
        self.channel_names = list(channel_names)
        self.masks = []
        self.real: list[dict] = []
        for i, original in enumerate(originals):
            nuclei = cellmeasure.segment_nuclei(original[cellmeasure.nuclear_channel(channel_names)])
            self.masks.append((nuclei, cellmeasure.segment_cells(nuclei)))
            self.real += _rows(
                "real source", Path(f"{i}"), cellmeasure.measure_cells(original, channel_names, *self.masks[-1])
            )
        for i, image in enumerate(targets):
            self.real += _rows("real target", Path(f"target {i}"), cellmeasure.measure_cells(image, channel_names))

    def summary(self, translated: Images) -> list[dict]:
        """`cell_summary` of translations of the originals (same order), measured on the originals' masks."""
        return cell_summary(self.rows(translated))

    def rows(self, translated: Images) -> list[dict]:
        """Per-cell rows of the real cells and of the translations, measured on the originals' masks."""
        rows = list(self.real)
        for i, (image, masks) in enumerate(zip(translated, self.masks)):
            rows += _rows("translated", Path(f"{i}"), cellmeasure.measure_cells(image, self.channel_names, *masks))
        return rows


def phenotype_measurements(summary: list[dict], ignored_channels: Sequence[str] = ()) -> list[dict]:
    """The summary's measurements that carry the phenotype: those that differ between the real conditions, but
    areas and the channels in `ignored_channels` (kept as the original's, or ones the condition does not touch,
    whose differences are sampling)."""
    return [
        s
        for s in summary
        if s["differs"]
        and np.isfinite(s["moved"])
        and not s["measurement"].endswith("_area")
        and not any(s["measurement"].startswith(f"{channel}_") for channel in ignored_channels)
    ]


def phenotype_moved(summary: list[dict], ignored_channels: Sequence[str] = ()) -> tuple[float, int]:
    """How far the translations' medians moved towards the real target (1 = all the way), over the
    `phenotype_measurements`, and how many there are (NaN, 0 if none).

    Each measurement's share of the way is clipped to [-1, 1] (going past the real target is no further) and
    weighted by how strongly it tells the real conditions apart (|Cohen's d|), so the phenotype's own measurements
    count most: on the demo's translocation, the reporter's nuclear/cytoplasmic ratio and spread (d 2.9, 2.6) rather
    than measurements that barely differ.
    """
    used = phenotype_measurements(summary, ignored_channels)
    if not used:
        return float("nan"), 0
    weights = np.array([abs(s["effect_target_vs_source"]) for s in used])
    shares = np.clip([s["moved"] for s in used], -1.0, 1.0)
    return float(np.sum(weights * shares) / np.sum(weights)), len(used)


def target_like(rows: list[dict], used: list[dict], group: str) -> tuple[float, int]:
    """Share of the cells of `group` that look like real target cells, and how many cells were judged: over the
    `used` measurements (weighted by |Cohen's d|), more of the cell's weight lies nearer the real target median than
    the real source median.

    Written here rather than with a classifier library: it is the per-cell rule the simulator's ground truth applies
    to its one phenotype value (measure.transfer_rate: nearer the target's median than the source's), spread over
    the measurements a real data set offers, and needs no fitting that could overfit 100 images.
    """
    names = [s["measurement"] for s in used]
    weights = np.array([abs(s["effect_target_vs_source"]) for s in used])
    source = np.array([s["median_real_source"] for s in used])
    target = np.array([s["median_real_target"] for s in used])
    values = np.array([[r[name] for name in names] for r in rows if r["group"] == group], np.float64).reshape(
        -1, len(names)
    )
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        nearer = (np.abs(values - target) < np.abs(values - source)) & finite
    towards, measured = nearer @ weights, finite @ weights
    judged = measured > 0
    share = float(np.mean(towards[judged] > measured[judged] / 2)) if np.any(judged) else float("nan")
    return share, int(np.sum(judged))


def cells_moved(rows: list[dict], summary: list[dict], ignored_channels: Sequence[str] = ()) -> float:
    """Share of the translated cells that moved to the target, on the scale from the real source cells (0) to the
    real target cells (1): (target-like translated - target-like source) / (target-like target - target-like
    source), with `target_like`. NaN when there is nothing to count with: fewer than MIN_CELLS measured real source
    or real target cells, or measurements that tell less than MIN_SEPARATION of the real cells apart."""
    used = phenotype_measurements(summary, ignored_channels)
    if not used:
        return float("nan")
    source, target, (translated, _) = (target_like(rows, used, g) for g in ("real source", "real target", "translated"))
    return on_the_real_scale(source, target, translated)


def on_the_real_scale(source: tuple[float, int], target: tuple[float, int], translated: float) -> float:
    """The translated cells' target-like share put on the scale from the real source cells (0) to the real target
    cells (1), from each real group's (share, cells judged); NaN with fewer than MIN_CELLS real cells a side or
    shares less than MIN_SEPARATION apart."""
    (s, n_source), (t, n_target) = source, target
    if min(n_source, n_target) < MIN_CELLS or not t - s >= MIN_SEPARATION:
        return float("nan")
    return (translated - s) / (t - s)


def overshoots(
    originals: Sequence[np.ndarray],
    translated: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    channel_names: list[str],
) -> list[dict]:
    """`overshot` of translations against real target images. Kept channels and areas never count: the
    translations are measured on their originals' masks, so these equal the originals'."""
    return overshot(summary_of(originals, translated, targets, channel_names))


def cell_summary(rows: list[dict]) -> list[dict]:
    """Per measurement: medians of real source, translated and real target, effect sizes and a rank test.

    `moved` is how far the translated median went from the source median towards the target one (1 = all the
    way, 0 = not at all), given only where the real conditions differ (`differs`: |Cohen's d| target vs source at
    least MIN_EFFECT and, where it can be computed, the rank test target vs source below MAX_P); elsewhere NaN, as
    a measurement without a phenotype has no way to move.
    """
    measurements = [k for k in (rows[0] if rows else {}) if k not in ("group", "file", "cell")]
    summary = []
    for name in measurements:
        groups = {
            g: np.array([r[name] for r in rows if r["group"] == g], np.float64)
            for g in ("real source", "translated", "real target")
        }
        groups = {g: v[np.isfinite(v)] for g, v in groups.items()}
        if any(len(v) < 2 for v in groups.values()):
            continue
        source, translated, target = (np.median(groups[g]) for g in ("real source", "translated", "real target"))
        span = target - source
        effect = metrics.effect_size(groups["real source"], groups["real target"])
        p_real = metrics.rank_test(groups["real source"], groups["real target"])
        differs = bool(abs(effect) >= MIN_EFFECT and not p_real >= MAX_P)  # NaN effect: no; NaN p: effect decides
        summary.append(
            {
                "measurement": name,
                "median_real_source": source,
                "median_translated": translated,
                "median_real_target": target,
                "moved": (translated - source) / span if differs and span else float("nan"),
                "differs": differs,
                "effect_target_vs_source": effect,
                "effect_translated_vs_source": metrics.effect_size(groups["real source"], groups["translated"]),
                "p_target_vs_source": p_real,
                "p_translated_vs_target": metrics.rank_test(groups["translated"], groups["real target"]),
            }
        )
    return summary
