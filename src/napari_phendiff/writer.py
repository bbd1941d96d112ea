"""Save image layers as ImageJ-compatible TIFFs: dtype kept, channels as the C axis, provenance embedded.

One layer gives one file with its own channels; several layers (say the channel layers napari makes with
`channel_axis`) give one file with one channel per layer. A leading stack axis becomes ImageJ frames (T).
"""

from __future__ import annotations

import numpy as np

from . import __version__
from .core.errors import PhenDiffError
from .core.images import CHANNEL_LABELS, MAX_CHANNELS, write_image


def write_image_layer(path: str, data, meta: dict) -> list[str]:
    """napari's single-layer writer: one image layer to one TIFF."""
    stack = _as_stack(data, meta)
    record = meta.get("metadata", {}).get("phendiff", {})
    return [_write(path, stack, record.get("channels"), _provenance([meta]))]


def write_image_layers(path: str, layer_data: list[tuple]) -> list[str]:
    """napari's multi-layer writer: several image layers of one shape and dtype, one channel each, to one TIFF."""
    if len(layer_data) == 1:  # napari offers this writer for one layer too: keep that layer's own channels
        return write_image_layer(path, *layer_data[0][:2])
    stacks = [_as_stack(data, meta, single_channel=True) for data, meta, _ in layer_data]
    names = [meta.get("name", f"layer {i}") for i, (_, meta, _) in enumerate(layer_data)]
    if len({(s.shape, s.dtype) for s in stacks}) > 1 or any(meta.get("rgb") for _, meta, _ in layer_data):
        found = ", ".join(f"'{n}' {s.shape[0]} plane(s) of {s.shape[2:]} {s.dtype}" for n, s in zip(names, stacks))
        # not a ValueError, which napari would turn into a bare "no data written"
        raise PhenDiffError(
            f"Layers saved together become the channels of one TIFF, so they must be grey images "
            f"of one shape and type; found {found}. Save them one at a time instead."
        )
    return [_write(path, np.concatenate(stacks, axis=1), names, _provenance([m for _, m, _ in layer_data]))]


def _as_stack(data, meta: dict, single_channel: bool = False) -> np.ndarray:
    """(T, C, Y, X): channels from an RGB axis, an axis labelled c/channel, or a short axis next to Y, X."""
    array = np.asarray(data)
    if meta.get("rgb"):
        array = np.moveaxis(array, -1, -3)
    elif single_channel or array.ndim == 2:
        array = array[..., None, :, :]
    else:
        labels = [str(label).lower() for label in meta.get("axis_labels", ())[: array.ndim - 2]]
        labelled = [a for a, label in enumerate(labels) if label in CHANNEL_LABELS]
        channel = labelled[0] if labelled else array.ndim - 3
        if labelled or array.shape[channel] <= MAX_CHANNELS:
            array = np.moveaxis(array, channel, -3)
        else:
            array = array[..., None, :, :]
    return array.reshape((-1, *array.shape[-3:]))


def _provenance(metas: list[dict]) -> dict:
    return {
        "software": f"napari-phendiff {__version__}",
        "layers": [{"name": m.get("name"), **m.get("metadata", {}).get("phendiff", {})} for m in metas],
    }


def _write(path: str, stack: np.ndarray, channel_names, provenance: dict) -> str:
    channel_names = list(channel_names) if channel_names and len(channel_names) == stack.shape[1] else None
    return str(write_image(path, stack, channel_names=channel_names, provenance=provenance))
