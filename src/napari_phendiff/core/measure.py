"""Scores of a translation that need no model: how far the phenotype moved, how well an image came back."""

from __future__ import annotations

import numpy as np


def transfer_rate(values: np.ndarray, source_values: np.ndarray, target_values: np.ndarray) -> float:
    """Share of cells whose phenotype value is closer to the target condition's median than to the source's.

    About 1 for images that really look like the target condition, about 0 for untouched source images.
    """
    values = np.asarray(values, dtype=np.float64)
    to_target = np.abs(values - np.median(target_values))
    to_source = np.abs(values - np.median(source_values))
    return float(np.mean(to_target < to_source))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square difference (use on normalised images so channels and dtypes compare)."""
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))
