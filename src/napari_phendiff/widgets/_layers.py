"""From image layers to the (N, C, Y, X) pixels the core translates, and from results back into each layer's shape
(the result layers themselves: _result_layers.py).

Channels are matched to the checkpoint's by name (never by the order layers are ticked); what cannot be matched is
refused with what was expected.

Runs on the main thread only: the worker receives plain numpy arrays, never layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image

from ..core.errors import DataError
from ..core.export import layer_file_name
from ..core.images import CHANNEL_LABELS, read_channel_names, read_image


@dataclass
class ImageInput:
    """Pixels gathered from one or more image layers, and how each result goes back into its layer's shape.

    Each layer's data is viewed as (stack..., [channels], Y, X) through the axis permutation `order`.
    `plane` (indices along the stack axes) keeps the current plane only; None keeps the whole stack.
    Several layers are kept in the checkpoint's channel order. `channel_order`: for one layer whose channels are
    named, the layer's index of each of the checkpoint's channels (None: the layer's order is the checkpoint's).
    `matched` says how the channels were matched, for the dock to show.
    """

    layers: list[Image]
    channel_axis: int | None
    order: list[int]
    plane: tuple[int, ...] | None
    channel_order: tuple[int, ...] | None = None
    matched: str = ""

    @classmethod
    def from_layers(cls, layers: list[Image], names: list[str], point=None, opened: list[Image] = ()) -> "ImageInput":
        """Check the layers against a checkpoint's channel `names` and gather them, matching channels by name.

        One layer: its channel axis (labelled c/channel, else the axis nearest Y, X of the right length) holds
        the channels, put in the checkpoint's order by the channel names its file (or its metadata) records, else
        taken in the layer's own order. Several layers: each is one channel, named after one of `names` (`DNA`,
        `field [DNA]`, `field_DNA`) or split from a file whose channel names are recorded, and put in the
        checkpoint's order whatever order they are ticked in; all the channel layers of one file without names are
        taken in the file's order; otherwise they are refused, never taken in the order ticked. `opened` (the
        viewer's image layers) tells when the ticked layers are only some of the channels of one file, which is
        refused. `point` (the viewer's world coordinates) selects the current plane; None takes the whole stack.
        """
        channels = len(names)
        expected = f"the checkpoint needs {channels} channel(s): {', '.join(names)}"
        if not layers:
            raise DataError(f"Tick the image layer(s) to translate; {expected}.")
        channel_order, matched = None, ""
        if len(layers) > 1:
            layers, matched = _channel_layers(layers, names, opened, expected)
            channel_axis = None
        else:
            known = _named_channels(layers[0])
            if known is not None and len(known) != channels:
                raise DataError(
                    f"Layer '{layers[0].name}' holds the channels {', '.join(known)} but {expected}. "
                    "Translate an image with exactly the checkpoint's channels."
                )
            channel_axis = _channel_axis(layers[0], channels, expected)
            if known is not None and channel_axis is not None and not _unnamed(names):
                channel_order, matched = _channel_order(layers[0], known, names)
        layer = layers[0]
        ndim = layer.data.ndim
        spatial = [ndim - 3, ndim - 2] if layer.rgb else [ndim - 2, ndim - 1]
        middle = [] if channel_axis is None else [channel_axis]
        stack = [a for a in range(ndim) if a not in spatial + middle]
        plane = None
        if point is not None and stack:
            position = layer.world_to_data(point)
            plane = tuple(int(np.clip(round(position[a]), 0, layer.data.shape[a] - 1)) for a in stack)
        return cls(list(layers), channel_axis, stack + middle + spatial, plane, channel_order, matched)

    @property
    def n_stack(self) -> int:
        return len(self.order) - (2 if self.channel_axis is None else 3)

    @property
    def kept_axes(self) -> list[int]:
        """Axes of a layer's data that its results keep (all but the stack axes for a single plane)."""
        return sorted(self.order[self.n_stack :] if self.plane is not None else self.order)

    def pixels(self) -> np.ndarray:
        """(N, C, Y, X): N = 1 for a single plane or a 2D image, else every plane of the stack in order."""
        arranged = []
        for layer in self.layers:
            data = np.transpose(np.asarray(layer.data), self.order)
            if self.plane is not None:
                arranged.append(data[self.plane][None])
            else:
                arranged.append(data.reshape((-1, *data.shape[self.n_stack :])))
        if self.channel_axis is None:
            return np.stack(arranged, axis=1)
        return arranged[0] if self.channel_order is None else arranged[0][:, list(self.channel_order)]

    def split(self, result: np.ndarray) -> list[np.ndarray]:
        """Inverse of `pixels`: one array per input layer, its axes (and channels) in that layer's order."""
        if self.channel_order is not None:
            result = result[:, np.argsort(self.channel_order)]
        parts = [result] if self.channel_axis is not None else [result[:, c] for c in range(result.shape[1])]
        if self.plane is not None:
            kept = self.order[self.n_stack :]
            return [np.transpose(part[0], np.argsort(kept)) for part in parts]
        arranged_shape = tuple(self.layers[0].data.shape[a] for a in self.order)
        return [np.transpose(part.reshape(arranged_shape), np.argsort(self.order)) for part in parts]

    def result_stems(self, names: list[str]) -> list[str]:
        """What each layer's results are named from: its name, or for one channel layer of several, the image's
        name and the checkpoint's channel it holds (channel_layer_stem)."""
        if self.channel_axis is None and len(self.layers) > 1:
            return [channel_layer_stem(layer.name, name) for layer, name in zip(self.layers, names)]
        return [layer.name for layer in self.layers]

    def layer_shaped(self, result: np.ndarray) -> dict[str, np.ndarray]:
        """`split`, each part in its layer's own shape: a plane's result at its index of the stack, zeros elsewhere."""
        parts = self.split(result)
        if self.plane is not None:
            parts = [place_plane(self, layer, part) for layer, part in zip(self.layers, parts)]
        return {layer.name: part for layer, part in zip(self.layers, parts)}


def channel_named(text: str, names: list[str]) -> str | None:
    """The one channel of `names` that `text` (a layer's name) names: the whole text, or the channel's name standing
    apart in it (`DNA`, `field [DNA]`, `field_DNA`, `DNA :: field`); case-insensitive. None when it names none, or
    several (`reporter and DNA`); a name inside a longer one that also matches counts once (`p65_GFP` over `GFP`)."""
    found = [n for n in names if re.search(rf"(?<![0-9a-z]){re.escape(n.lower())}(?![0-9a-z])", text.lower())]
    found = [n for n in found if not any(n.lower() != m.lower() and n.lower() in m.lower() for m in found)]
    return found[0] if len(found) == 1 else None


def _unnamed(names: list[str]) -> bool:
    """The names a checkpoint trained without channel names has (`channel 1`, `channel 2`): they say nothing a
    file's channel names could be matched with, so such a file is taken in its own order."""
    return list(names) == [f"channel {i + 1}" for i in range(len(names))]


def _listed(layers: list[Image]) -> str:
    return ", ".join(f"'{layer.name}'" for layer in layers)


def _file(layer: Image) -> Path | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    return Path(path) if path else None


def _named_channels(layer: Image) -> list[str] | None:
    """The channel names a layer's channels are known by, in its order: this package's metadata (sample data,
    translations), else the channel names of the file it was opened from, when the layer is that whole file."""
    recorded = layer.metadata.get("phendiff", {}).get("channels") if isinstance(layer.metadata, dict) else None
    if recorded and not isinstance(recorded, str):
        return [str(name) for name in recorded]
    path = _file(layer)
    labels = read_channel_names(path) if path is not None and not layer.rgb else None
    return labels if labels and len(labels) in layer.data.shape[:-2] else None


def _channel_order(layer: Image, known: list[str], names: list[str]) -> tuple[tuple[int, ...] | None, str]:
    """(the layer's index of each checkpoint channel, None when already in order; what was matched), or a DataError
    when the layer's channel names are not the checkpoint's."""
    lower = [name.lower() for name in known]
    missing = [name for name in names if name.lower() not in lower]
    if missing or len(set(lower)) != len(lower):
        raise DataError(
            f"Layer '{layer.name}' holds the channels {', '.join(known)}, but the checkpoint takes "
            f"{', '.join(names)} in this order: "
            f"{', '.join(missing) + ' missing' if missing else 'a channel name appears twice'}. "
            "Translate an image with the checkpoint's channels, or split the layer (right-click it > "
            "Split Stack), name each channel layer after the checkpoint's channel it holds and tick them."
        )
    order = tuple(lower.index(name.lower()) for name in names)
    if order == tuple(range(len(names))):
        return None, ""
    return order, (
        f"the channels of '{layer.name}' ({', '.join(known)}) taken in the checkpoint's order ({', '.join(names)})"
    )


def _channel_layers(
    layers: list[Image], names: list[str], opened: list[Image], expected: str
) -> tuple[list[Image], str]:
    """Several ticked layers, one channel each: checked (one per channel of the checkpoint, single-channel images of
    one shape, not some of one file's channels) and put in the checkpoint's channel order; and what was matched."""
    channels = len(names)
    if len(layers) != channels:
        raise DataError(
            f"{len(layers)} layers are ticked as channels ({_listed(layers)}) but {expected}. "
            "Tick one layer per channel, each named after its channel."
        )
    holding = [
        layer.name
        for layer in layers
        if not layer.rgb and any(n == channels for n in layer.data.shape[:-2]) and layer.data.ndim > 2
    ]
    if len(holding) == len(layers):
        raise DataError(
            f"The ticked layers {', '.join(holding)} each have an axis of {channels}: each looks "
            f"like a whole {channels}-channel image already. Tick one of them to translate it; "
            "tick several only when each is one channel."
        )
    shapes = sorted({layer.data.shape for layer in layers})
    if len(shapes) > 1 or any(layer.rgb for layer in layers):
        raise DataError(
            f"The channel layers {', '.join(layer.name for layer in layers)} must be single-channel "
            f"images of one shape; their shapes are {shapes}."
        )
    files = _refuse_part_of_a_file(layers, opened, expected)
    return _in_channel_order(layers, names, files)


def _in_channel_order(
    layers: list[Image], names: list[str], files: dict[str, tuple[int, str | None]]
) -> tuple[list[Image], str]:
    """The layers sorted into the checkpoint's channel order, and what was matched: by the channel each names (its
    recorded channel, else its name, else its file's name for it), or, when they are all the channels of one file
    that names none, in the file's order (`files`: layer name -> (its channel in its file, the file's name for
    it)). A DataError naming what was expected otherwise."""
    found, said = [], []
    for layer in layers:
        recorded = layer.metadata.get("phendiff", {}).get("channels") if isinstance(layer.metadata, dict) else None
        recorded = str(recorded[0]) if recorded and not isinstance(recorded, str) and len(recorded) == 1 else None
        label = files.get(layer.name, (0, None))[1]
        channel = channel_named(recorded or layer.name, names) or (channel_named(label, names) if label else None)
        found.append(channel)
        said.append(recorded or label)  # a channel name the layer carries besides its own name
    if None not in found and len(set(found)) == len(names):
        ordered = [layers[found.index(name)] for name in names]
        return ordered, "channels by name: " + ", ".join(f"{n} = '{layer.name}'" for n, layer in zip(names, ordered))
    if not any(said) and len(files) == len(layers) and len({_file(layer) for layer in layers}) == 1:
        ordered = sorted(layers, key=lambda layer: files[layer.name][0])
        if all(found[layers.index(layer)] in (None, name) for name, layer in zip(names, ordered)):
            return ordered, (
                "channels in the order of their file, which names none: "
                + ", ".join(f"{n} = '{layer.name}'" for n, layer in zip(names, ordered))
            )
    unnamed = [
        f"'{layer.name}'" + (f" ({text})" if text else "")
        for layer, name, text in zip(layers, found, said)
        if name is None
    ]
    why = (
        f"{', '.join(unnamed)} name{'s' if len(unnamed) == 1 else ''} no channel of it"
        if unnamed
        else "two of them name the same channel"
    )
    raise DataError(
        f"The checkpoint takes {', '.join(names)} in this order; the ticked layers are {_listed(layers)}, "
        f"and {why}. Name each layer after its channel (double-click its name in the layer list: "
        f"'{names[0]}', or 'field [{names[0]}]')."
    )


def _refuse_part_of_a_file(
    layers: list[Image], opened: list[Image], expected: str
) -> dict[str, tuple[int, str | None]]:
    """Refuse ticked layers that are some, not all, of the channel layers opened from one file; return, for each
    ticked layer split from a file, its channel in that file and the file's name for it (None: unnamed)."""
    files: dict[str, tuple[int, str | None]] = {}
    for path in {_file(layer) for layer in layers} - {None}:
        ticked = [layer for layer in layers if _file(layer) == path]
        shape = ticked[0].data.shape
        siblings: list[Image] = []
        for layer in opened:  # a file opened twice counts once
            if (
                _file(layer) == path
                and layer.data.shape == shape
                and not layer.rgb
                and not any(np.array_equal(layer.data, other.data) for other in siblings)
            ):
                siblings.append(layer)
        if len(siblings) > len(ticked):
            raise DataError(
                f"The ticked layers {_listed(ticked)} are {len(ticked)} of the {len(siblings)} "
                f"channels of {path.name} ({_listed(siblings)}) but {expected}. A part of an image's "
                "channels is not translated: translate an image with exactly the checkpoint's channels."
            )
        files.update(_channels_in_file(path, ticked))
    return files


def _channels_in_file(path: Path, layers: list[Image]) -> dict[str, tuple[int, str | None]]:
    """For layers split from the 2D image file `path`: which of its channels each is (found by its pixels), and the
    file's name for that channel (None when the file names none). Layers that are none of them are left out."""
    try:
        planes = read_image(path)
    except DataError:  # a stack, or gone: which channel a layer is cannot be told
        return {}
    labels = read_channel_names(path)
    labels = labels if labels and len(labels) == len(planes) else None
    found = {}
    for layer in layers:
        same = [
            c
            for c, plane in enumerate(planes)
            if plane.shape == layer.data.shape and np.array_equal(plane, np.asarray(layer.data))
        ]
        if len(same) == 1:
            found[layer.name] = (same[0], labels[same[0]] if labels else None)
    return found


def place_plane(inputs: ImageInput, layer: Image, part: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """A plane's result put at its own index of an array shaped like the layer's data (`into`, or zeros), so the
    translation stays aligned with its original under the stack sliders."""
    stack_axes = inputs.order[: inputs.n_stack]
    shape = tuple(
        layer.data.shape[:-1] if layer.rgb and part.ndim == layer.data.ndim - 1 - len(stack_axes) else layer.data.shape
    )
    full = np.zeros(shape, part.dtype) if into is None or into.shape != shape else into
    index = tuple(inputs.plane[stack_axes.index(a)] if a in stack_axes else slice(None) for a in range(len(shape)))
    full[index] = part
    return full


def _channel_axis(layer: Image, channels: int, expected: str) -> int | None:
    """The axis of a single layer holding the checkpoint's channels (None for a one-channel checkpoint)."""
    ndim = layer.data.ndim
    if layer.rgb:
        if layer.data.shape[-1] != channels:
            raise DataError(
                f"Layer '{layer.name}' is an RGB(A) image with {layer.data.shape[-1]} channels but {expected}."
            )
        return ndim - 1
    if channels == 1:
        return None
    candidates = [a for a in range(ndim - 2) if layer.data.shape[a] == channels]
    labelled = [a for a in candidates if str(layer.axis_labels[a]).lower() in CHANNEL_LABELS]
    if labelled or candidates:
        return (labelled or candidates)[-1]
    raise DataError(
        f"Layer '{layer.name}' (shape {layer.data.shape}) has no axis of {channels} channels but "
        f"{expected}. Tick the {channels} layers that form the channels, each named after its channel, "
        "or choose a layer with a channel axis."
    )


def channel_layer_stem(name: str, channel: str) -> str:
    """What the results of a channel layer are named from: the image's name and the channel the layer holds, not
    napari's number of a split channel (`field [1]` holding reporter -> `field_reporter`; `field [DNA]` ->
    `field_DNA`; `DNA` -> `DNA`)."""
    image = re.sub(r" \[\d+\]$", "", name)
    image = re.sub(rf"(?<![0-9a-z]){re.escape(channel)}(?![0-9a-z])", "", image, flags=re.IGNORECASE)
    return layer_file_name(f"{image}_{channel}")
