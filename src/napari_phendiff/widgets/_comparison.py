"""The side-by-side view of a translation, in one canvas: one row per channel, original | translated | difference.

napari shows a multichannel image as one layer per channel; the view follows it. The channels the translation
changed come first, the kept ones (their translation is the original) last, marked as kept. The layers are placed
by their translate, not by napari's grid, so what belongs to an image (the uncertainty over the translation, the
cells over the original) can be put over it. The original column holds views of the user's layers (no copies):
the user's own layers are hidden, never moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image

from ._layers import ImageInput, channel_layer_stem

COLUMNS = ("original", "translated", "difference")
GAP = 0.08  # of an image's side, between rows and columns
# napari's own colours for an image opened with a channel axis (two channels: magenta and green, more: a cycle)
TWO_CHANNELS = ("magenta", "green")
MANY_CHANNELS = ("cyan", "yellow", "magenta", "red", "green", "blue")


@dataclass
class ChannelRow:
    """One channel of the input: the layer it comes from and where in it (`axis`, `index`; `axis` None: the
    whole layer is this channel)."""

    channel: str
    kept: bool
    layer: Image
    axis: int | None
    index: int
    stem: str

    def take(self, data: np.ndarray, axes: list[int] | None = None) -> np.ndarray:
        """This channel of an array whose axes are the layer's `axes` (default: all of them, in order), a view."""
        axes = list(range(self.layer.data.ndim)) if axes is None else list(axes)
        if self.axis is None:
            return data
        where = [slice(None)] * data.ndim
        where[axes.index(self.axis)] = self.index
        return data[tuple(where)]

    def spatial_axes(self, axes: list[int] | None = None) -> list[int]:
        """The layer's axes (of `axes`, default all) that this channel's images keep: all but the channel axis."""
        axes = list(range(self.layer.data.ndim)) if axes is None else list(axes)
        return [a for a in axes if a != self.axis]

    def colormap(self, channels: int):
        if self.axis is None:
            return self.layer.colormap
        if self.layer.colormap.name != "gray":  # a colour the user chose for the whole layer
            return self.layer.colormap
        cycle = ("gray",) if channels == 1 else TWO_CHANNELS if channels == 2 else MANY_CHANNELS
        return cycle[self.index % len(cycle)]

    def contrast_limits(self, original: np.ndarray) -> tuple[float, float]:
        """The layer's own limits for a whole-layer channel; for one channel of a layer, that channel's range."""
        if self.axis is None:
            return tuple(self.layer.contrast_limits)
        low, high = (float(v) for v in np.percentile(np.asarray(original), (0.1, 99.9)))
        return (low, high) if high > low else tuple(self.layer.contrast_limits)


def channel_rows(inputs: ImageInput, names: list[str], kept: tuple[str, ...]) -> list[ChannelRow]:
    """One row per checkpoint channel, in the order they are shown: changed channels first, kept ones last."""
    rows = []
    if inputs.channel_axis is None:  # one layer per channel (or a one-channel checkpoint)
        stems = inputs.result_stems(names)
        rows = [ChannelRow(name, name in kept, layer, None, 0, stem)
                for layer, name, stem in zip(inputs.layers, names, stems)]
    elif inputs.layers[0].rgb:  # an RGB image stays one row: its colours are one picture
        layer = inputs.layers[0]
        rows = [ChannelRow("+".join(names), all(n in kept for n in names), layer, None, 0, layer.name)]
    else:
        layer = inputs.layers[0]
        order = inputs.channel_order or tuple(range(len(names)))
        for name, index in zip(names, order):
            stem = channel_layer_stem(layer.name, name)
            rows.append(ChannelRow(name, name in kept, layer, inputs.channel_axis, index, stem))
    return sorted(rows, key=lambda row: row.kept)  # stable: the checkpoint's order within each group


def place(kwargs: dict, row: ChannelRow, row_index: int, column: int) -> dict:
    """add_image keyword arguments moved into the comparison's cell (`row_index`, `column`): the original's place,
    down by whole rows and right by whole columns of the image's size in world units, plus a gap."""
    shape = row.layer.data.shape
    size = np.asarray(shape[-3:-1] if row.layer.rgb else shape[-2:], dtype=float)
    scale = np.asarray(kwargs["scale"], dtype=float)
    moved = np.array(kwargs["translate"], dtype=float)
    moved[-2:] += np.array([row_index, column]) * size * scale[-2:] * (1 + GAP)
    return {**kwargs, "translate": moved}


def merge_plane(inputs: ImageInput, row: ChannelRow, data: np.ndarray, old: np.ndarray) -> np.ndarray:
    """A plane's result (`data`: zeros but that plane) merged into an earlier run's layer data (`old`) of the same
    shape, so the planes translated before stay."""
    if old.shape != data.shape:
        return data
    stack_axes = inputs.order[:inputs.n_stack]
    index = tuple(inputs.plane[stack_axes.index(a)] if a in stack_axes else slice(None) for a in row.spatial_axes())
    merged = old.astype(data.dtype, copy=True)
    merged[index] = data[index]
    return merged
