"""Per-cell measuring helpers the phenotypes' measures share (any image, given its masks)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def label_means(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per label 1..n (NaN for labels without pixels)."""
    sums = np.bincount(labels.ravel(), values.ravel(), minlength=n + 1)[1 : n + 1]
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1 : n + 1]
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def subtract_background(channel: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Channel minus a smooth quadratic surface fitted to pixels >3 px from any cell (1st percentile if too few)."""
    far = ndi.distance_transform_edt(cells == 0) > 3
    if far.sum() < 100:
        return channel - np.percentile(channel, 1)
    ys, xs = np.nonzero(far)
    stride = max(1, ys.size // 4000)
    ys, xs = ys[::stride], xs[::stride]
    scale = max(channel.shape)

    def design(y, x):
        y, x = y / scale - 0.5, x / scale - 0.5
        return np.stack([np.ones_like(y), y, x, y * y, y * x, x * x], axis=-1)

    a = design(ys, xs)
    coefficients = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ channel[ys, xs])  # least squares
    yy, xx = np.mgrid[: channel.shape[0], : channel.shape[1]].astype(float)
    return channel - design(yy, xx) @ coefficients


def inner_labels(labels: np.ndarray) -> np.ndarray:
    """Labels eroded by 1 px (pixels whose 3x3 neighbourhood is all the same label), away from blur at edges."""
    same = (ndi.minimum_filter(labels, 3) == labels) & (ndi.maximum_filter(labels, 3) == labels)
    return np.where(same, labels, 0)


def orientation_coherence(image: np.ndarray, gradient_sigma: float, window_sigma: float) -> np.ndarray:
    """Local orientation coherence (l1 - l2) / (l1 + l2) of the structure tensor, as in OrientationJ: 1 where
    the signal is made of parallel lines or edges, 0 where it is isotropic (flat, diffuse, punctate)."""
    gy = ndi.gaussian_filter(image, gradient_sigma, order=(1, 0))
    gx = ndi.gaussian_filter(image, gradient_sigma, order=(0, 1))
    jyy, jxx, jxy = (ndi.gaussian_filter(g, window_sigma) for g in (gy * gy, gx * gx, gx * gy))
    trace = jyy + jxx
    anisotropy = np.sqrt((jyy - jxx) ** 2 + 4 * jxy**2)
    return np.where(trace > 0, anisotropy / np.where(trace > 0, trace, 1), 0.0)
