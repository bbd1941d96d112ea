"""Fields larger than the model: padding, overlapping tiles blended with linear ramps, and which tiles hold cells.

A field is cut into tiles of the model's size with at least TILE_OVERLAP overlap; each tile's result is weighted by
ramps that fall to the tile's edges, so neighbours fade into each other instead of meeting at a seam
(docs/method.md measures the seams). A tile with no cell in it (nor within a margin of it) can be copied instead of
translated: what a condition changes lives in the cells, and on a sparse field most tiles are background.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

TILE_OVERLAP = 0.25
# A field is treated as having no background (every tile translated) when more than this share of its pixels lies
# above its Otsu threshold: Otsu then splits noise or a confluent layer, not cells from background.
MAX_FOREGROUND_SHARE = 0.6


def pad_to(stack: np.ndarray, min_size: int, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad so each side is at least min_size and a multiple of `multiple`; returns the original size too."""
    height, width = stack.shape[-2:]
    target_h = max(min_size, math.ceil(height / multiple) * multiple)
    target_w = max(min_size, math.ceil(width / multiple) * multiple)
    if (target_h, target_w) == (height, width):
        return stack, (height, width)
    pad = ((0, 0), (0, 0), (0, target_h - height), (0, target_w - width))
    mode = "reflect" if min(height, width) > max(target_h - height, target_w - width) else "symmetric"
    return np.pad(stack, pad, mode=mode), (height, width)


def tile_starts(length: int, size: int) -> list[int]:
    """Evenly spread tile starts covering [0, length) with at least TILE_OVERLAP overlap."""
    if length <= size:
        return [0]
    stride = size - int(size * TILE_OVERLAP)
    count = math.ceil((length - size) / stride) + 1
    return sorted({round(i * (length - size) / (count - 1)) for i in range(count)})


def windows(shape: tuple[int, int], size: int, tiles: bool) -> list[tuple[int, int, int, int]]:
    """(y, x, height, width) of each tile, or the whole field as one window."""
    if not tiles:
        return [(0, 0, shape[0], shape[1])]
    return [(y, x, size, size) for y in tile_starts(shape[0], size) for x in tile_starts(shape[1], size)]


def blend_weights(height: int, width: int, tiles: bool) -> np.ndarray:
    """Linear ramps over the overlap, so neighbouring tiles fade into each other instead of meeting at a seam."""
    if not tiles:
        return np.ones((height, width), np.float32)

    def ramp(n: int) -> np.ndarray:
        edge = max(1, int(n * TILE_OVERLAP))
        distance = np.minimum(np.arange(n) + 1, n - np.arange(n))
        return np.minimum(1.0, distance / (edge + 1)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


def foreground(field: np.ndarray) -> np.ndarray:
    """Where one field (C, Y, X) holds cells: the channels' mean above its Otsu threshold, single bright pixels
    (noise) removed. A field without clear background (see MAX_FOREGROUND_SHARE) is foreground everywhere."""
    signal = field.mean(axis=0)
    if float(signal.max()) == float(signal.min()):
        return np.zeros(signal.shape, bool)  # a flat field holds nothing
    mask = ndimage.binary_opening(signal > threshold_otsu(signal))
    if mask.mean() > MAX_FOREGROUND_SHARE:
        return np.ones(signal.shape, bool)
    return mask


def occupied(stack: np.ndarray, tiles: list[tuple[int, int, int, int]], margin: int) -> np.ndarray:
    """(N, tiles) booleans: whether tile t of field n holds foreground within `margin` px of its edges.

    The margin keeps a tile whose cells lie just outside it (their dim edges below the threshold, or reaching it
    through the blend of the overlap) among the translated ones."""
    result = np.zeros((len(stack), len(tiles)), bool)
    for n, field in enumerate(stack):
        # summed-area table: any foreground in a window is one subtraction
        mask = foreground(field)
        table = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        height, width = mask.shape
        for t, (y, x, h, w) in enumerate(tiles):
            y0, x0 = max(0, y - margin), max(0, x - margin)
            y1, x1 = min(height, y + h + margin), min(width, x + w + margin)
            result[n, t] = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0] > 0
    return result
