"""From a translation's results to image layers: their names (as the CLI names its files) and add_image keyword
arguments that give a translation its original's look and a difference diverging colours, both placed over the
original."""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from ..core.export import layer_file_name

DIFFERENCE_COLORMAP = "RdBu_r"


def result_name(original: str, target: str, tag: str = "", extra: str = "") -> str:
    """A result layer's name, also its file name when saved: `<original>_to_<target>[_<settings>][_<extra>]`, as
    the CLI names its files (`cells_to_TNFa_s0.3_w4`, `cells_to_TNFa_s0.3_w4_diff`); letters, digits, - _ . only."""
    parts = [f"{original}_to_{target}", tag, extra]
    return layer_file_name("_".join(part for part in parts if part))


def translated_layer(original: Image, data: np.ndarray, kept_axes: list[int], name: str, meta: dict) -> dict:
    """add_image keyword arguments for a translation: the original's look, so both compare directly."""
    return dict(
        data=data,
        name=name,
        colormap=original.colormap,
        contrast_limits=original.contrast_limits,
        gamma=original.gamma,
        blending=original.blending,
        rgb=original.rgb,
        **_placement(original, kept_axes),
        metadata={"phendiff": {**meta, "kind": "translated", "original": original.name}},
    )


def difference_layer(original: Image, difference: np.ndarray, kept_axes: list[int], name: str, meta: dict) -> dict:
    """add_image keyword arguments for translated − original: diverging colours, white at 0, symmetric limits."""
    limit = float(np.percentile(np.abs(difference), 99.9)) if difference.size else 0.0
    limit = limit if limit > 0 else 1.0
    placement = _placement(original, kept_axes)
    if original.rgb:  # signed values cannot be RGB: show the three colours as a channel axis
        difference = np.moveaxis(difference, -1, -3)
        placement = dict(
            scale=np.insert(placement["scale"], -2, 1.0),
            translate=np.insert(placement["translate"], -2, 0.0),
            axis_labels=[*placement["axis_labels"][:-2], "channel", *placement["axis_labels"][-2:]],
        )
    return dict(
        data=difference,
        name=name,
        colormap=DIFFERENCE_COLORMAP,
        contrast_limits=(-limit, limit),
        rgb=False,
        **placement,
        metadata={"phendiff": {**meta, "kind": "difference", "original": original.name}},
    )


def _placement(original: Image, kept_axes: list[int]) -> dict:
    if original.rgb:
        kept_axes = kept_axes[:-1]
    return dict(
        scale=np.asarray(original.scale)[kept_axes],
        translate=np.asarray(original.translate)[kept_axes],
        axis_labels=[original.axis_labels[a] for a in kept_axes],
    )
