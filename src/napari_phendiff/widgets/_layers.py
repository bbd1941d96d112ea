"""From image layers to the (N, C, Y, X) pixels the core translates, and from results back to layers.

Runs on the main thread only: the worker receives plain numpy arrays, never layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image

from ..core.errors import DataError
from ..core.export import safe_name

CHANNEL_LABELS = {"c", "ch", "channel", "channels"}
DIFFERENCE_COLORMAP = "RdBu_r"


@dataclass
class ImageInput:
    """Pixels gathered from one or more image layers, and how each result goes back into its layer's shape.

    Each layer's data is viewed as (stack..., [channels], Y, X) through the axis permutation `order`.
    `plane` (indices along the stack axes) keeps the current plane only; None keeps the whole stack.
    """

    layers: list[Image]
    channel_axis: int | None
    order: list[int]
    plane: tuple[int, ...] | None

    @classmethod
    def from_layers(cls, layers: list[Image], names: list[str], point=None) -> "ImageInput":
        """Check the layers against a checkpoint's channel `names` and gather them.

        One layer: its channel axis (labelled c/channel, else the axis nearest Y, X of the right length) holds
        the channels. Several layers: each is one channel, in the order given. `point` (the viewer's world
        coordinates) selects the current plane; None takes the whole stack.
        """
        channels = len(names)
        expected = f"the checkpoint needs {channels} channel(s): {', '.join(names)}"
        if not layers:
            raise DataError(f"Tick the image layer(s) to translate; {expected}.")
        if len(layers) > 1:
            if len(layers) != channels:
                raise DataError(f"{len(layers)} layers are ticked as channels but {expected}. Tick the layers "
                                "that form the channels, in order (drag them to reorder).")
            holding = [l.name for l in layers if not l.rgb and any(
                n == channels for n in l.data.shape[:-2]) and l.data.ndim > 2]
            if len(holding) == len(layers):
                raise DataError(f"The ticked layers {', '.join(holding)} each have an axis of {channels}: each looks "
                                f"like a whole {channels}-channel image already. Tick one of them to translate it; "
                                "tick several only when each is one channel.")
            shapes = sorted({layer.data.shape for layer in layers})
            if len(shapes) > 1 or any(layer.rgb for layer in layers):
                raise DataError(f"The channel layers {', '.join(l.name for l in layers)} must be single-channel "
                                f"images of one shape; their shapes are {shapes}.")
            channel_axis = None
        else:
            channel_axis = _channel_axis(layers[0], channels, expected)
        layer = layers[0]
        ndim = layer.data.ndim
        spatial = [ndim - 3, ndim - 2] if layer.rgb else [ndim - 2, ndim - 1]
        middle = [] if channel_axis is None else [channel_axis]
        stack = [a for a in range(ndim) if a not in spatial + middle]
        plane = None
        if point is not None and stack:
            position = layer.world_to_data(point)
            plane = tuple(int(np.clip(round(position[a]), 0, layer.data.shape[a] - 1)) for a in stack)
        return cls(list(layers), channel_axis, stack + middle + spatial, plane)

    @property
    def n_stack(self) -> int:
        return len(self.order) - (2 if self.channel_axis is None else 3)

    @property
    def kept_axes(self) -> list[int]:
        """Axes of a layer's data that its results keep (all but the stack axes for a single plane)."""
        return sorted(self.order[self.n_stack:] if self.plane is not None else self.order)

    def pixels(self) -> np.ndarray:
        """(N, C, Y, X): N = 1 for a single plane or a 2D image, else every plane of the stack in order."""
        arranged = []
        for layer in self.layers:
            data = np.transpose(np.asarray(layer.data), self.order)
            if self.plane is not None:
                arranged.append(data[self.plane][None])
            else:
                arranged.append(data.reshape((-1, *data.shape[self.n_stack:])))
        return arranged[0] if self.channel_axis is not None else np.stack(arranged, axis=1)

    def split(self, result: np.ndarray) -> list[np.ndarray]:
        """Inverse of `pixels`: one array per input layer, its axes in that layer's order."""
        parts = [result] if self.channel_axis is not None else [result[:, c] for c in range(result.shape[1])]
        if self.plane is not None:
            kept = self.order[self.n_stack:]
            return [np.transpose(part[0], np.argsort(kept)) for part in parts]
        arranged_shape = tuple(self.layers[0].data.shape[a] for a in self.order)
        return [np.transpose(part.reshape(arranged_shape), np.argsort(self.order)) for part in parts]


def place_plane(inputs: ImageInput, layer: Image, part: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """A plane's result put at its own index of an array shaped like the layer's data (`into`, or zeros), so the
    translation stays aligned with its original under the stack sliders."""
    stack_axes = inputs.order[:inputs.n_stack]
    shape = tuple(layer.data.shape[:-1] if layer.rgb and part.ndim == layer.data.ndim - 1 - len(stack_axes) else
                  layer.data.shape)
    full = np.zeros(shape, part.dtype) if into is None or into.shape != shape else into
    index = tuple(inputs.plane[stack_axes.index(a)] if a in stack_axes else slice(None) for a in range(len(shape)))
    full[index] = part
    return full


def _channel_axis(layer: Image, channels: int, expected: str) -> int | None:
    """The axis of a single layer holding the checkpoint's channels (None for a one-channel checkpoint)."""
    ndim = layer.data.ndim
    if layer.rgb:
        if layer.data.shape[-1] != channels:
            raise DataError(f"Layer '{layer.name}' is an RGB(A) image with {layer.data.shape[-1]} channels but "
                            f"{expected}.")
        return ndim - 1
    if channels == 1:
        return None
    candidates = [a for a in range(ndim - 2) if layer.data.shape[a] == channels]
    labelled = [a for a in candidates if str(layer.axis_labels[a]).lower() in CHANNEL_LABELS]
    if labelled or candidates:
        return (labelled or candidates)[-1]
    raise DataError(f"Layer '{layer.name}' (shape {layer.data.shape}) has no axis of {channels} channels but "
                    f"{expected}. Tick the {channels} layers that form the channels, in order, or choose a layer "
                    "with a channel axis.")


def result_name(original: str, target: str, tag: str = "", extra: str = "") -> str:
    """A result layer's name, also its file name when saved: `<original>_to_<target>[_<settings>][_<extra>]`, as
    the CLI names its files (`cells_to_TNFa_s0.3_w4`, `cells_to_TNFa_s0.3_w4_diff`); letters, digits, - _ . only."""
    parts = [f"{safe_name(original)}_to_{safe_name(target)}", tag, extra]
    return "_".join(part for part in parts if part)


def translated_layer(original: Image, data: np.ndarray, kept_axes: list[int], name: str, meta: dict) -> dict:
    """add_image keyword arguments for a translation: the original's look, so both compare directly."""
    return dict(data=data, name=name, colormap=original.colormap, contrast_limits=original.contrast_limits,
                gamma=original.gamma, blending=original.blending, rgb=original.rgb, **_placement(original, kept_axes),
                metadata={"phendiff": {**meta, "kind": "translated", "original": original.name}})


def difference_layer(original: Image, difference: np.ndarray, kept_axes: list[int], name: str, meta: dict) -> dict:
    """add_image keyword arguments for translated − original: diverging colours, white at 0, symmetric limits."""
    limit = float(np.percentile(np.abs(difference), 99.9)) if difference.size else 0.0
    limit = limit if limit > 0 else 1.0
    placement = _placement(original, kept_axes)
    if original.rgb:  # signed values cannot be RGB: show the three colours as a channel axis
        difference = np.moveaxis(difference, -1, -3)
        placement = dict(scale=np.insert(placement["scale"], -2, 1.0),
                         translate=np.insert(placement["translate"], -2, 0.0),
                         axis_labels=[*placement["axis_labels"][:-2], "channel", *placement["axis_labels"][-2:]])
    return dict(data=difference, name=name, colormap=DIFFERENCE_COLORMAP, contrast_limits=(-limit, limit),
                rgb=False, **placement,
                metadata={"phendiff": {**meta, "kind": "difference", "original": original.name}})


def _placement(original: Image, kept_axes: list[int]) -> dict:
    if original.rgb:
        kept_axes = kept_axes[:-1]
    return dict(scale=np.asarray(original.scale)[kept_axes], translate=np.asarray(original.translate)[kept_axes],
                axis_labels=[original.axis_labels[a] for a in kept_axes])
