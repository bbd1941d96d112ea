"""How a translation cuts a field: whole when it fits the device's memory budget, else padded and cut into
overlapping tiles blended with linear ramps, and which tiles hold cells (`plan_tiles` decides, with no network call).

A field is cut into tiles of the model's size with at least TILE_OVERLAP overlap; each tile's result is weighted by
ramps that fall to the tile's edges, so neighbours fade into each other instead of meeting at a seam
(docs/method.md measures the seams). A tile with no cell in it (nor within a margin of it) can be copied instead of
translated: what a condition changes lives in the cells, and on a sparse field most tiles are background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
import torch
from skimage.filters import threshold_otsu

from .errors import ConfigError
from .images import resize_fields
from .inputs import as_stack
from .models.base import ConditionedModel
from .options import TranslateOptions

TILE_OVERLAP = 0.25
# A field is treated as having no background (every tile translated) when more than this share of its pixels lies
# above its Otsu threshold: Otsu then splits noise or a confluent layer, not cells from background.
MAX_FOREGROUND_SHARE = 0.6
# Memory for whole fields: what the network's activations may take. On a GPU half of the free memory; on a CPU a
# fixed budget, because whole fields were faster than tiles on this project's CPU up to 384 px but slower from
# 512 px (docs/benchmarks.md, large_fields and field_memory).
CPU_BUDGET_BYTES = 512 * 2**20
GPU_BUDGET_FRACTION = 0.5


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


# --- memory: whole fields or tiles ------------------------------------------------------------------------------

def bytes_per_pixel(model) -> int:
    """Estimated peak activation memory per pixel of one image in one network call (the model's own estimate)."""
    return int(model.bytes_per_pixel)


def memory_budget(device: torch.device) -> int:
    """Bytes the network's activations may take on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_FRACTION)
    return CPU_BUDGET_BYTES


def fits_whole(model, shape: tuple[int, ...], batch_size: int | None = None, budget: int | None = None) -> bool:
    """Whether one network call on whole fields of `shape` (N, C, Y, X) fits the memory budget: the largest of
    `batch_size` fields (default one) at a time."""
    per_field = bytes_per_pixel(model) * shape[-2] * shape[-1]
    budget = memory_budget(model.device) if budget is None else budget
    return per_field * min(batch_size or 1, shape[0]) <= budget


def default_batch_size(model, window: tuple[int, int] | None = None, tiles: bool = True) -> int:
    """Tiles per call: 8 on a CPU, 32 on a GPU; whole fields: as many as the memory budget allows (at least 1)."""
    fixed = 32 if model.device.type == "cuda" else 8
    if tiles or window is None:
        return fixed
    per_field = bytes_per_pixel(model) * window[0] * window[1]
    return max(1, min(fixed, memory_budget(model.device) // per_field))


# --- the plan of one translation ------------------------------------------------------------------------------

def trained_on_resized(model) -> bool:
    """Whether the checkpoint learned whole images scaled to its image size (`phendiff train --resize`)."""
    return bool(((getattr(model, "manifest", None) or {}).get("training") or {}).get("resize"))


@dataclass
class TilePlan:
    """How a translation cuts its images: the normalised, padded stack (N, C, Y, X), its windows, the tiles it
    translates (`jobs`: (image, window)) and those it copies as background, in batches of `batch_size`."""

    stack: np.ndarray       # the input as a stack, its own dtype
    restore: Callable       # a stack back into the input's shape
    padded: np.ndarray      # normalised (and resized for a resize-trained model), padded to whole tiles
    size: tuple[int, int]   # (height, width) of the normalised field before padding
    resized: bool
    tiles: bool
    windows: list
    jobs: list
    copied: list
    batch_size: int


def plan_tiles(model: ConditionedModel, images: np.ndarray, options: TranslateOptions) -> TilePlan:
    """The tiles and batches a translation of `images` with `options` runs (no network call)."""
    stack, restore = as_stack(images, model)
    scaled = model.normalization.forward(stack)
    field_size = scaled.shape[-2:]
    resized = trained_on_resized(model) and field_size != (model.image_size, model.image_size)
    if resized:  # the model learned whole images scaled to its size: it is shown them so, and its output scaled back
        if options.tiles:
            raise ConfigError(f"{model.path}: trained on whole images scaled to {model.image_size} px (resize), it "
                              "translates whole images; leave tiles unset.")
        scaled = resize_fields(scaled, (model.image_size, model.image_size))
    tiles = (False if resized else options.tiles if options.tiles is not None
             else not fits_whole(model, scaled.shape, options.batch_size))
    padded, size = pad_to(scaled, model.image_size if tiles else 0, model.size_multiple)
    cuts = windows(padded.shape[-2:], model.image_size, tiles)
    jobs = [(n, window) for n in range(len(padded)) for window in cuts]
    copied = []
    if tiles and options.skip_background:  # tiles with no cell near them keep the original's pixels
        held = occupied(padded, cuts, margin=int(model.image_size * TILE_OVERLAP)).ravel()  # in the jobs' order
        copied = [job for job, cells in zip(jobs, held) if not cells]
        jobs = [job for job, cells in zip(jobs, held) if cells]
    batch_size = options.batch_size or default_batch_size(model, cuts[0][2:], tiles)
    return TilePlan(stack, restore, padded, size, resized, tiles, cuts, jobs, copied, batch_size)
