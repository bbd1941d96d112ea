"""What a translation accepts: the input's shape, channels, dtype and values checked against the checkpoint
(DataError), and a warning when the images look unlike the ones the model was trained on."""

from __future__ import annotations

import warnings

import numpy as np

from .errors import DataError, PhenDiffWarning
from .images import check_finite
from .models.base import ConditionedModel


def check_fits(model: ConditionedModel, images, where: str = "the image") -> None:
    """Raise DataError unless `images` can be translated by `model` (shape, channels, dtype, finite values), and warn
    (PhenDiffWarning) when they look unlike the training images."""
    as_stack(images, model, where)


def as_stack(images, model: ConditionedModel, where: str = "the image"):
    """(N, C, Y, X) view of the input and a function giving results the input's own shape back."""
    if hasattr(images, "detach"):  # a torch tensor, possibly tracking gradients
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    kind = array.dtype.kind
    if kind not in "uif":
        what = {"b": "true/false values (a mask?)", "c": "complex numbers", "O": "Python objects (a ragged list?)"}
        raise DataError(
            f"{where}: holds {what.get(kind, f'values of type {array.dtype}')}, not intensities. Give "
            "an integer or floating-point image (e.g. the microscope's uint8/uint16, or float32)."
        )
    if array.ndim == 2 and model.channels == 1:
        stack, restore = array[None, None], (lambda out: out[0, 0])
    elif array.ndim == 3:
        stack, restore = array[None], (lambda out: out[0])
    elif array.ndim == 4:
        stack, restore = array, (lambda out: out)
    else:
        raise DataError(
            f"Images of shape {array.shape} cannot be translated: give (C, Y, X) or (N, C, Y, X)"
            + (" or (Y, X)" if model.channels == 1 else "")
            + "."
        )
    if stack.shape[1] != model.channels:
        raise DataError(
            f"{where}: has {stack.shape[1]} channel(s) (shape {array.shape}, channels first) but checkpoint "
            f"{model.path or ''} was trained on {model.channels}: {', '.join(model.channel_names)}. "
            "Give the same channels in the same order."
        )
    check_finite(stack, where)
    warn_if_unlike_training(stack, model, where)
    return stack, restore


def warn_if_unlike_training(stack: np.ndarray, model: ConditionedModel, where: str) -> None:
    """A different dtype or an intensity range far from the training images' is translated, but said."""
    normalization = model.normalization
    if str(stack.dtype) != normalization.dtype and np.dtype(normalization.dtype).kind in "ui":
        warnings.warn(
            f"{where}: is {stack.dtype} but the model was trained on {normalization.dtype} images; "
            "intensities are read on the training images' scale, so the translation may be clipped or "
            f"dim. Convert the image to {normalization.dtype} as the training images were.",
            PhenDiffWarning,
            stacklevel=3,
        )
        return
    seen = (model.manifest or {}).get("training_images") or {}
    if seen.get("nucleus_diameter_px") and seen.get("nuclear_channel") in model.channel_names:
        from .cells import median_nucleus_diameter

        channel = model.channel_names.index(seen["nuclear_channel"])
        diameter = median_nucleus_diameter(list(stack[:2]), channel, max_images=2)
        # on the simulator, fields of the training cells' size measured 0.8-1.17 of the training median, fields of
        # 28-px cells (20 px trained) 1.0-1.65
        if diameter and not 0.7 < diameter / seen["nucleus_diameter_px"] < 1.3:
            warnings.warn(
                f"{where}: its nuclei measure about {diameter:.0f} px across, the training images' "
                f"{seen['nucleus_diameter_px']:.0f} px; a model translates cells of the size it learnt and "
                "may invent or merge nuclei at another. Rescale the image by "
                f"{seen['nucleus_diameter_px'] / diameter:.2f} first.",
                PhenDiffWarning,
                stacklevel=3,
            )
    scaled = normalization.forward(stack[:, :, ::4, ::4])
    high = np.percentile(scaled, 99, axis=(0, 2, 3))
    for name, value in zip(model.channel_names, high):
        if not -3 < value < 5:  # the training images' 99.5th percentile is at +1
            warnings.warn(
                f"{where}: channel {name!r} is far brighter or dimmer than in the training images "
                f"(99th percentile at {value:.1f} on the scale where training images reach 1). Check the "
                "channel order and the acquisition settings.",
                PhenDiffWarning,
                stacklevel=3,
            )
