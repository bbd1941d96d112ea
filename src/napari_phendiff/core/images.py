"""Read, validate, normalise and write 2D microscopy images.

Every image inside napari-phendiff is a numpy array shaped (C, Y, X): channels first, never forced to RGB.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from .errors import DataError, PhenDiffWarning

TIFF_SUFFIXES = {".tif", ".tiff"}
OTHER_SUFFIXES = {".png", ".jpg", ".jpeg"}
IMAGE_SUFFIXES = TIFF_SUFFIXES | OTHER_SUFFIXES
MAX_CHANNELS = 8
SPLIT_HINT = (
    "napari-phendiff works on 2D images (one plane, one or more channels). Split the stack into 2D files first, "
    "e.g. in Fiji with Image > Stacks > Stack to Images, or in Python: "
    "for i, plane in enumerate(tifffile.imread(path)): tifffile.imwrite(f'plane_{i:03d}.tif', plane)"
)
Images = Sequence[np.ndarray] | np.ndarray  # (C, Y, X) images: a list of them, or a stack (N, C, Y, X)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D single- or multi-channel image file as (C, Y, X) in its own dtype."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if path.is_dir():
        raise DataError(
            f"{path}: is a folder, not an image file. Give one of the images in it (or, where a "
            "command takes folders, the folder as an input)."
        )
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array, axes = series.asarray(), series.axes
        else:
            import imageio.v3 as iio

            array, axes = np.asarray(iio.imread(path)), None
    except Exception as exc:  # any reader failure means the same thing to the user
        raise DataError(
            f"{path}: could not be read ({type(exc).__name__}: {exc}). The file is corrupt, truncated or not an "
            "image; re-export it from the acquisition software or remove it from the folder."
        ) from exc
    if array.dtype.kind not in "uif":
        what = {"b": "true/false values (a mask)", "c": "complex numbers"}.get(array.dtype.kind, str(array.dtype))
        raise DataError(f"{path}: holds {what}, not intensities. Give the microscope's integer or float32 image.")
    image = to_cyx(array, axes=axes, source=str(path))
    if axes and image.ndim == 3 and image.shape[0] > 1 and not set(axes) & set("CS"):
        warnings.warn(
            f"TIFF files without axes metadata (shape {array.shape}): the short axis is "
            "read as channels. If it is a Z stack or a time series instead: " + SPLIT_HINT + " Files "
            "written with ImageJ metadata (axes CYX) are read without guessing.",
            PhenDiffWarning,
            stacklevel=2,
        )
    if path.suffix.lower() in OTHER_SUFFIXES:
        image = _drop_rgb_redundancy(image)
    check_finite(image, str(path))
    return image


def read_channel_names(path: str | Path) -> list[str] | None:
    """The channel names a TIFF records (ImageJ `Labels`, as this package, Fiji and the simulator write them), in
    the file's channel order; None when it records none (or is no readable TIFF)."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            labels, series = (tif.imagej_metadata or {}).get("Labels"), tif.series[0]
            channels = dict(zip(series.axes, series.shape)).get("C")
    except (OSError, ValueError, IndexError, KeyError):  # unreadable: reading its pixels says what is wrong
        return None
    if not labels or isinstance(labels, str) or not channels or len(labels) % channels:
        return None
    names = [str(label) for label in labels[:channels]]
    return names if list(labels) == names * (len(labels) // channels) else None


def to_cyx(array: np.ndarray, axes: str | None = None, source: str = "image") -> np.ndarray:
    """Bring a 2D image with an optional channel axis to (C, Y, X).

    `axes` (tifffile letters such as "CYX", "YXS", "ZYX") decides where it is known; otherwise a small last or
    first axis (at most MAX_CHANNELS long) is taken as channels.
    """
    array = np.asarray(array)
    if axes is not None and len(axes) == array.ndim:
        keep = [i for i, (a, n) in enumerate(zip(axes, array.shape)) if n > 1 or a in "YX"]
        array = array.reshape([array.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
        stack_axes = [a for a in axes if a in "ZTI"]
        if stack_axes or array.ndim > 3:
            raise DataError(f"{source}: is a stack of shape {array.shape} (axes {axes}), not a 2D image. {SPLIT_HINT}")
        if array.ndim == 3 and axes[-1] in "CS" and axes[:2] == "YX":
            return np.moveaxis(array, -1, 0)
        if array.ndim == 3 and axes[0] in "CS":
            return array
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        if array.shape[0] <= MAX_CHANNELS and array.shape[0] < min(array.shape[1:]):
            return array
        if array.shape[-1] <= MAX_CHANNELS and array.shape[-1] < min(array.shape[:2]):
            return np.moveaxis(array, -1, 0)
    raise DataError(
        f"{source}: has shape {array.shape}, which is neither a 2D image (Y, X) nor a 2D image with at most "
        f"{MAX_CHANNELS} channels (C, Y, X or Y, X, C). If it is a Z stack or a time series: {SPLIT_HINT}"
    )


def _drop_rgb_redundancy(image: np.ndarray) -> np.ndarray:
    """PNG/JPEG: drop a constant alpha channel, and keep one channel of grey images saved as RGB."""
    if image.shape[0] == 4 and np.all(image[3] == image[3].flat[0]):
        image = image[:3]
    if image.shape[0] == 3 and np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2]):
        image = image[:1]
    return image


def check_finite(image: np.ndarray, source: str) -> None:
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise DataError(
            f"{source}: contains {bad} NaN or infinite pixel values. Replace them (e.g. with 0 or the background "
            "level) before using the image."
        )


@dataclass
class Normalization:
    """Per-channel robust intensity scaling: percentile `low` maps to -1 and `high` to +1.

    Computed once on the training set and stored in the checkpoint, so absolute intensity differences between
    conditions survive (a per-image scaling would erase an intensity phenotype). No clipping: clipping would
    break the exactness of DDIM inversion on bright pixels.
    """

    low: list[float]
    high: list[float]
    percentiles: tuple[float, float] = (0.5, 99.5)
    dtype: str = "uint16"
    extra: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, images: list[np.ndarray], percentiles: tuple[float, float] = (0.5, 99.5), max_pixels: int = 2_000_000):
        """Fit on a list of (C, Y, X) images; pixels are subsampled evenly so memory stays bounded."""
        channels = images[0].shape[0]
        per_image = max(1, max_pixels // len(images))
        pooled = []
        for image in images:
            flat = image.reshape(channels, -1)
            step = max(1, flat.shape[1] // per_image)
            pooled.append(flat[:, ::step].astype(np.float64))
        low, high = np.percentile(np.concatenate(pooled, axis=1), percentiles, axis=1)
        high = np.where(high - low < 1e-6, low + 1.0, high)  # a flat channel must not divide by zero
        return cls(
            low=[float(v) for v in low],
            high=[float(v) for v in high],
            percentiles=(percentiles[0], percentiles[1]),
            dtype=str(images[0].dtype),
        )

    def _scale(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """low and high shaped to broadcast over (C, Y, X) or (N, C, Y, X)."""
        shape = (-1, 1, 1) if ndim == 3 else (1, -1, 1, 1)
        low = np.asarray(self.low, dtype=np.float32).reshape(shape)
        high = np.asarray(self.high, dtype=np.float32).reshape(shape)
        return low, high

    def forward(self, image: np.ndarray) -> np.ndarray:
        """(C, Y, X) or (N, C, Y, X) in any dtype -> float32, about [-1, 1]."""
        low, high = self._scale(image.ndim)
        scaled = image.astype(np.float32)  # one copy, then in place: a large field holds no temporaries
        scaled -= low
        scaled *= 2.0 / (high - low)
        scaled -= 1.0
        return scaled

    def inverse(self, scaled: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
        """Undo `forward` and cast to `dtype`; integer types are rounded and clipped to their range."""
        low, high = self._scale(scaled.ndim)
        image = scaled + np.float32(1.0)  # float32 (exact to 1/100 of a 16-bit level), then in place
        image *= (high - low) / 2.0
        image += low
        return cast_like(image, np.dtype(dtype))

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "percentiles": list(self.percentiles), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(
            low=list(data["low"]),
            high=list(data["high"]),
            percentiles=tuple(data["percentiles"]),
            dtype=data.get("dtype", "uint16"),
        )


def cast_like(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.rint(image)
        return np.clip(rounded, info.min, info.max, out=rounded).astype(dtype)
    return image.astype(dtype)


# Axis labels that mean "channels" (napari's axis_labels, ImageJ's C): how a writer and a dock tell the channel axis.
CHANNEL_LABELS = {"c", "ch", "channel", "channels"}


def resize_fields(fields: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Images (..., Y, X) scaled to `size` in float32, bilinear and anti-aliased: how `--resize` training scales
    whole images to the model's size, and how translation shows them to such a model and scales its output back."""
    from skimage.transform import resize

    return resize(
        np.asarray(fields, np.float32),
        (*np.shape(fields)[:-2], *size),
        order=1,
        anti_aliasing=True,
        preserve_range=True,
    ).astype(np.float32)


def read_provenance(path: str | Path) -> dict | None:
    """The provenance `write_image` recorded in a TIFF (None for a file without one or unreadable)."""
    try:
        with tifffile.TiffFile(path) as tif:
            info = (tif.imagej_metadata or {}).get("Info")
            if info is None and tif.shaped_metadata:
                info = tif.shaped_metadata[0].get("provenance")
        found = json.loads(info) if info else None
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def write_image(
    path: str | Path, image: np.ndarray, *, channel_names: list[str] | None = None, provenance: dict | None = None
) -> Path:
    """Write a (Y, X) or (C, Y, X) image, or a (T, C, Y, X) stack, as an ImageJ-compatible TIFF with provenance.

    Channels are the C axis, the dtype is kept, size-1 axes are left out. ImageJ hyperstacks hold only uint8,
    uint16 and float32; other dtypes (and images one pixel wide) are written as a plain TIFF with the same metadata so nothing is silently
    converted. The file appears only once it is complete.
    """
    path = Path(path)
    image = np.asarray(image)
    while image.ndim < 4:
        image = image[None]
    if image.ndim != 4:
        raise DataError(f"{path}: cannot write an array of shape {image.shape}; give (C, Y, X) or (T, C, Y, X).")
    axes = "".join(a for a, n in zip("TC", image.shape) if n > 1) + "YX"
    array = image.reshape([n for a, n in zip("TCYX", image.shape) if a in axes])
    info = json.dumps(provenance or {}, default=str)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        # ImageJ's hyperstack reader mistakes 1-pixel-wide images for other axes: those go in the plain layout
        if array.dtype in (np.uint8, np.uint16, np.float32) and min(image.shape[-2:]) > 1:
            metadata: dict[str, str | list[str]] = {"axes": axes, "Info": info}
            if channel_names and ("C" in axes or axes == "YX"):  # one plane: its label names its one channel
                metadata["Labels"] = list(channel_names)
            tifffile.imwrite(tmp, array, imagej=True, metadata=metadata)
        else:
            tifffile.imwrite(tmp, array, metadata={"axes": axes, "provenance": info})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
