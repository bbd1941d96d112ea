"""How a translation cuts a field: whole when it fits the device's memory budget, else padded and cut into
overlapping tiles blended with linear ramps, and which tiles hold cells (`plan_tiles` decides, with no network call).

A field is cut into tiles of the model's size with at least TILE_OVERLAP overlap; each tile's result is weighted by
ramps that fall to the tile's edges, so neighbours fade into each other instead of meeting at a seam
(docs/method.md measures the seams). A tile with no cell in it (nor within a margin of it) can be copied instead of
translated: what a condition changes lives in the cells, and on a sparse field most tiles are background.

Nothing here copies a whole field: tiles are read from the input through mirrored indices (its padding is never
made), the foreground is found band of rows by band, and the Blender hands finished rows on as the tiles pass.
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

Window = tuple[int, int, int, int]  # (y, x, height, width) of a tile in a padded field
Job = tuple[int, Window]  # (image, window): one tile of one image of the stack


def padded_size(height: int, width: int, min_size: int, multiple: int) -> tuple[int, int]:
    """Each side at least min_size and a multiple of `multiple`: the field a translation cuts."""
    return (
        max(min_size, math.ceil(height / multiple) * multiple),
        max(min_size, math.ceil(width / multiple) * multiple),
    )


def mirror_indices(length: int, target: int, reflect: bool) -> np.ndarray:
    """Where each of `target` positions of a padded axis reads from an axis of `length`: itself inside it, mirrored
    beyond it (np.pad's "reflect", or "symmetric" that repeats the edge pixel), so a tile reads its padding from
    the field instead of a padded copy of the whole field being made."""
    index = np.arange(target)
    if length == 1:
        return np.zeros(target, np.intp)
    period = 2 * (length - 1) if reflect else 2 * length
    index %= period
    beyond = index >= length
    index[beyond] = (period - (0 if reflect else 1)) - index[beyond]
    return index


def tile_starts(length: int, size: int) -> list[int]:
    """Evenly spread tile starts covering [0, length) with at least TILE_OVERLAP overlap."""
    if length <= size:
        return [0]
    stride = size - int(size * TILE_OVERLAP)
    count = math.ceil((length - size) / stride) + 1
    return sorted({round(i * (length - size) / (count - 1)) for i in range(count)})


def windows(shape: tuple[int, int], size: int, tiles: bool) -> list[Window]:
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


# Pixels of a field read at a time where a whole field would be too much (the foreground's passes): a band of rows
# holding about this many pixels, 4 MB per channel as float32, however wide the field.
BAND_PIXELS = 1 << 20


# The channels' mean is smoothed (a Gaussian of this sigma, px) before the threshold: pixel noise then lies in a
# narrow peak, so Otsu still finds the cells when they cover a tiny share of a huge field. Unsmoothed, two 256-px
# patches of cells in a 20000-px field of camera noise (0.03% of its pixels) drew Otsu's threshold into the noise:
# 69% of the background above it, and every tile was translated (docs/benchmarks.md huge_field).
SMOOTHING = 2.0
_SMOOTHING_REACH = int(4 * SMOOTHING + 0.5)  # scipy's Gaussian reaches 4 sigma: the rows a band needs around it


def _signal(field: np.ndarray, top: int, bottom: int, scale: Callable) -> np.ndarray:
    """The channels' mean of rows [top, bottom) of one field (C, Y, X), on the model's scale, smoothed (the same
    rows as smoothing the whole field would give: the band is read with the rows the Gaussian reaches)."""
    low, high = max(0, top - _SMOOTHING_REACH), min(field.shape[-2], bottom + _SMOOTHING_REACH)
    smooth = ndimage.gaussian_filter(scale(field[:, low:high]).mean(axis=0), SMOOTHING)
    return smooth[top - low : bottom - low]


def _bands(height: int, width: int) -> list[tuple[int, int]]:
    rows = max(8, BAND_PIXELS // max(1, width))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def foreground_threshold(field: np.ndarray, scale: Callable) -> float | None:
    """Otsu's threshold of one field's channel mean, from a histogram gathered band by band; None for a flat
    field (nothing in it)."""
    bands = _bands(*field.shape[-2:])
    low = min(float(_signal(field, *band, scale).min()) for band in bands)
    high = max(float(_signal(field, *band, scale).max()) for band in bands)
    if low == high:
        return None
    edges = np.linspace(low, high, 257)
    counts = sum(np.histogram(_signal(field, *band, scale), bins=edges)[0] for band in bands)
    return float(threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2)))


def occupied(
    stack: np.ndarray, tiles: list[Window], margin: int, scale: Callable = lambda rows: rows.astype(np.float32)
) -> np.ndarray:
    """(N, tiles) booleans: whether tile t of field n holds cells within `margin` px of its edges.

    Cells are the channels' mean (after `scale`) above the field's Otsu threshold, single bright pixels (noise)
    removed; a field without clear background (see MAX_FOREGROUND_SHARE) holds cells everywhere, a flat one none.
    Tiles may reach past the field (into its padding): only the part inside is looked at. The margin keeps a tile
    whose cells lie just outside it (their dim edges below the threshold, or reaching it through the blend of the
    overlap) among the translated ones. The field is read band by band, so a large field is never held whole."""
    result = np.zeros((len(stack), len(tiles)), bool)
    for n, field in enumerate(stack):
        threshold = foreground_threshold(field, scale)
        if threshold is None:
            continue
        height, width = field.shape[-2:]
        reach = np.array(
            [
                (max(0, y - margin), min(height, y + h + margin), max(0, x - margin), min(width, x + w + margin))
                for y, x, h, w in tiles
            ],
            np.int64,
        ).reshape(-1, 4)
        cells = 0
        for top, bottom in _bands(height, width):
            context = (max(0, top - 2), min(height, bottom + 2))  # the opening reaches 2 px: exact at the bands' seams
            mask = ndimage.binary_opening(_signal(field, *context, scale) > threshold)
            mask = mask[top - context[0] : bottom - context[0]]
            cells += int(mask.sum())
            table = np.pad(mask.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32), ((1, 0), (1, 0)))
            hit = np.flatnonzero((reach[:, 0] < bottom) & (reach[:, 1] > top) & ~result[n])
            y0, y1, x0, x1 = reach[hit].T  # summed-area table: one subtraction per tile
            r0, r1 = np.maximum(y0, top) - top, np.minimum(y1, bottom) - top
            result[n, hit] = table[r1, x1] - table[r0, x1] - table[r1, x0] + table[r0, x0] > 0
        if cells > MAX_FOREGROUND_SHARE * height * width:
            result[n] = True
    return result


class Blender:
    """Translated tiles of a stack blended into finished rows with the tiles' ramps, holding only the rows a tile
    can still reach: tiles come in reading order (field, then row, then column), and rows above a tile's top are
    handed to `finish(field, first_row, rows)` (normalised, (C, rows, padded width)) as soon as it arrives, so
    memory holds one tile's height of rows instead of a float copy of every field."""

    def __init__(
        self,
        channels: int,
        padded: tuple[int, int],
        tile_height: int,
        ramp: np.ndarray,
        finish: Callable[[int, int, np.ndarray], None],
    ):
        self.rows = np.zeros((channels, tile_height, padded[1]), np.float32)
        self.weight = np.zeros((tile_height, padded[1]), np.float32)
        self.height, self.ramp, self.finish = padded[0], ramp, finish
        self.field: int | None = None
        self.top = 0  # the padded field's row that self.rows[:, 0] holds

    def add(self, field: int, window: Window, tile: np.ndarray) -> None:
        y, x, h, w = window
        if field != self.field:
            self.close()
            self.field, self.top = field, 0
        if y < self.top:
            raise ValueError(f"tile at row {y} after row {self.top}: tiles must come in reading order")
        self._release(field, y)
        self.rows[:, y - self.top : y - self.top + h, x : x + w] += tile * self.ramp
        self.weight[y - self.top : y - self.top + h, x : x + w] += self.ramp

    def close(self) -> None:
        """Hand over the rest of the current field."""
        if self.field is not None:
            self._release(self.field, self.height)
            self.field = None

    def _release(self, field: int, until: int) -> None:
        count = until - self.top
        if count <= 0:
            return
        self.finish(field, self.top, self.rows[:, :count] / self.weight[:count])
        self.rows[:, :-count], self.weight[:-count] = self.rows[:, count:].copy(), self.weight[count:].copy()
        self.rows[:, -count:], self.weight[-count:] = 0, 0
        self.top = until


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
    """How a translation cuts its images: the windows of the padded fields, the tiles it translates (`jobs`:
    (image, window)) and those it copies as background, in batches of `batch_size`. Tiles are read on demand
    (`read`): normalised and mirror-padded from the input, never a normalised copy of the whole stack."""

    stack: np.ndarray  # the input as a stack, its own dtype
    restore: Callable  # a stack back into the input's shape
    fields: np.ndarray  # what tiles are read from: the stack, or (resize) its fields scaled to the model's size
    scale: Callable  # rows of `fields` -> the model's scale (float32)
    size: tuple[int, int]  # (height, width) of `fields`
    padded: tuple[int, int]  # (height, width) of the padded fields the windows cut
    resized: bool
    tiles: bool
    windows: list[Window]
    jobs: list[Job]
    copied: list[Job]
    batch_size: int

    def read(self, batch: list[Job]) -> np.ndarray:
        """The tiles of `batch` ((image, window) pairs) on the model's scale: (B, C, h, w) float32."""
        height, width = self.size
        reflect = min(height, width) > max(self.padded[0] - height, self.padded[1] - width)  # as np.pad would
        rows = mirror_indices(height, self.padded[0], reflect)
        cols = mirror_indices(width, self.padded[1], reflect)
        out = []
        for n, (y, x, h, w) in batch:
            if y + h <= height and x + w <= width:
                tile = self.fields[n, :, y : y + h, x : x + w]
            else:
                tile = self.fields[n][np.ix_(np.arange(self.fields.shape[1]), rows[y : y + h], cols[x : x + w])]
            out.append(self.scale(tile))
        return np.stack(out)

    def order(self) -> list[tuple[Job, bool]]:
        """Every tile, translated (True) or copied (False), in reading order: how a Blender takes them."""
        return sorted([(job, True) for job in self.jobs] + [(job, False) for job in self.copied])


def plan_tiles(model: ConditionedModel, images: np.ndarray, options: TranslateOptions) -> TilePlan:
    """The tiles and batches a translation of `images` with `options` runs (no network call)."""
    stack, restore = as_stack(images, model)
    fields = stack
    scale: Callable[[np.ndarray], np.ndarray] = model.normalization.forward
    resized = trained_on_resized(model) and stack.shape[-2:] != (model.image_size, model.image_size)
    if resized:  # the model learned whole images scaled to its size: it is shown them so, and its output scaled back
        if options.tiles:
            raise ConfigError(
                f"{model.path}: trained on whole images scaled to {model.image_size} px (resize), it "
                "translates whole images; leave tiles unset."
            )
        fields = resize_fields(model.normalization.forward(stack), (model.image_size, model.image_size))
        scale = np.asarray  # already on the model's scale
    size = (fields.shape[-2], fields.shape[-1])
    tiles = (
        False
        if resized
        else options.tiles
        if options.tiles is not None
        else not fits_whole(model, fields.shape, options.batch_size)
    )
    padded = padded_size(*size, model.image_size if tiles else 0, model.size_multiple)
    cuts = windows(padded, model.image_size, tiles)
    jobs = [(n, window) for n in range(len(fields)) for window in cuts]
    copied: list[Job] = []
    if tiles and options.skip_background:  # tiles with no cell near them keep the original's pixels
        held = occupied(fields, cuts, int(model.image_size * TILE_OVERLAP), scale).ravel()  # in the jobs' order
        copied = [job for job, cells in zip(jobs, held) if not cells]
        jobs = [job for job, cells in zip(jobs, held) if cells]
    batch_size = options.batch_size or default_batch_size(model, cuts[0][2:], tiles)
    return TilePlan(stack, restore, fields, scale, size, padded, resized, tiles, cuts, jobs, copied, batch_size)
