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
LABELS = "comparison labels"  # the Points layer whose text names each image of the comparison
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

    def held(self, axes: list[int] | None = None, every: bool = False) -> list[int]:
        """The layer's axes that this row's arrays hold, for data holding the layer's `axes` (default all).

        napari aligns a layer's axes with the world's last ones, so an axis the row lacks (its channel axis, a
        plane's stack axes) can be left out only from the front: any other is held with length 1 (with the user's
        hidden layer holding stack axes before its channels, a result without its channel axis would have its stack
        moved by the channel slider). `every`: none left out (a morph puts its frame axis in front)."""
        ndim = self.layer.data.ndim
        have = set(range(ndim) if axes is None else axes) - {self.axis}
        held = list(range(ndim))
        while not every and len(held) > 2 and held[0] not in have:
            held.pop(0)
        return held

    def take(self, data: np.ndarray, axes: list[int] | None = None, every: bool = False) -> np.ndarray:
        """This channel of `data`, whose axes are the layer's `axes` (default all, in order), with the axes of
        `held`: those it lacks of length 1 (a view where the data allows)."""
        axes = list(range(self.layer.data.ndim)) if axes is None else list(axes)
        held = self.held(axes, every)
        if self.axis is not None:
            where = [slice(None)] * data.ndim
            where[axes.index(self.axis)] = self.index
            data, axes = data[tuple(where)], [a for a in axes if a != self.axis]
        for position, axis in enumerate(held):
            if axis not in axes:
                data = np.expand_dims(data, position)
        return data

    def stretch(self, kwargs: dict, held: list[int], at: dict[int, int] | None = None) -> dict:
        """add_image keyword arguments placed on the `held` axes, for an array from `take`: a held channel axis
        stretched over every channel position of the layer, so each row shows its channel whatever the channel
        slider says (napari shows the data index nearest the slider: scale n, shifted by half); a stack axis that a
        plane's result lacks put at the plane's index (`at`: axis -> index)."""
        scale = np.array(kwargs["scale"], dtype=float)
        translate = np.array(kwargs["translate"], dtype=float)
        if self.axis in held:
            n, i = self.layer.data.shape[self.axis], held.index(self.axis)
            translate[i] += (n - 1) * scale[i] / 2
            scale[i] *= n
        for axis, index in (at or {}).items():
            if axis in held:
                translate[held.index(axis)] += index * scale[held.index(axis)]
        return {**kwargs, "scale": scale, "translate": translate}

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
        rows = [
            ChannelRow(name, name in kept, layer, None, 0, stem)
            for layer, name, stem in zip(inputs.layers, names, stems)
        ]
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


def merge_plane(inputs: ImageInput, held: list[int], data: np.ndarray, old: np.ndarray) -> np.ndarray:
    """A plane's result (`data` from `take`, holding the layer's `held` axes: zeros but that plane) merged into an
    earlier run's layer data (`old`) of the same shape, so the planes translated before stay."""
    if old.shape != data.shape:
        return data
    stack_axes = inputs.order[: inputs.n_stack]
    index = tuple(inputs.plane[stack_axes.index(a)] if a in stack_axes else slice(None) for a in held)
    merged = old.astype(data.dtype, copy=True)
    merged[index] = data[index]
    return merged


def label_points(cells: list[tuple[str, Image]]) -> dict:
    """add_points keyword arguments for `LABELS`: each (text, layer) written just above the layer's top-left corner,
    in world coordinates (a 2D layer: napari aligns it with the world's last two axes)."""
    corners = [
        np.asarray(layer.translate, float)[-2:] - 0.5 * np.asarray(layer.scale, float)[-2:] for _, layer in cells
    ]
    return dict(
        data=np.array(corners).reshape(-1, 2),
        name=LABELS,
        size=0.01,
        border_width=0,
        face_color="transparent",
        border_color="transparent",
        features={"label": [text for text, _ in cells]},
        text={"string": "{label}", "anchor": "upper_left", "size": 9, "color": "white"},
    )
