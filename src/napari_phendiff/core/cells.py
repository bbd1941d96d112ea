"""CellProfiler-style per-cell measurements with scikit-image, for real and translated images alike.

Nuclei are segmented on the nuclear channel (smoothing, Otsu threshold, watershed on the distance transform to
split touching nuclei); each cell is its nucleus grown outwards by about one nuclear radius, without merging into
neighbours (expand_labels); the cytoplasm is the cell minus its nucleus. Per cell: areas, and per channel the mean
in nucleus and cytoplasm, the integrated intensity, the nuclear/cytoplasmic ratio, a texture score and a spread
(how far from the nucleus the signal lies: dispersal of an organelle, e.g. Golgi fragmentation).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, morphology, segmentation

NUCLEAR_NAMES = ("dna", "dapi", "hoechst", "nuclei", "nucleus", "h2b")


def nuclear_channel(channel_names: list[str]) -> int:
    """The channel that shows nuclei: one named like DNA/DAPI/Hoechst, else the first."""
    for i, name in enumerate(channel_names):
        if name.lower() in NUCLEAR_NAMES:
            return i
    return 0


def segment_nuclei(channel: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Label image of the nuclei in one channel (Y, X)."""
    smooth = filters.gaussian(np.asarray(channel, np.float64), sigma=1.0)
    if np.ptp(smooth) == 0:
        return np.zeros(smooth.shape, np.int32)
    mask = ndi.binary_fill_holes(smooth > filters.threshold_otsu(smooth))
    mask = morphology.remove_small_objects(mask, max_size=min_area - 1)
    distance = ndi.distance_transform_edt(mask)
    radius = np.sqrt(min_area / np.pi)
    peaks = feature.peak_local_max(
        distance, min_distance=max(2, int(radius)), labels=measure.label(mask), exclude_border=False
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    return labels.astype(np.int32)


def median_nucleus_diameter(
    images: list[np.ndarray], channel: int, max_images: int = 16, max_side: int = 256
) -> float | None:
    """Median equivalent diameter (px) of the nuclei segmented in up to `max_images` (C, Y, X) images, each cropped
    to its central `max_side` square so large fields stay cheap; None when no nucleus is found."""
    diameters = []
    for image in images[:max_images]:
        height, width = image.shape[-2:]
        top, left = max(0, (height - max_side) // 2), max(0, (width - max_side) // 2)
        labels = segmentation.clear_border(segment_nuclei(image[channel, top : top + max_side, left : left + max_side]))
        diameters += [region.equivalent_diameter_area for region in measure.regionprops(labels)]
    return float(np.median(diameters)) if diameters else None


def segment_cells(nuclei: np.ndarray) -> np.ndarray:
    """Grow each nucleus outwards by its median equivalent radius (neighbours never merge)."""
    areas = np.bincount(nuclei.ravel())[1:]
    areas = areas[areas > 0]
    if len(areas) == 0:
        return nuclei.copy()
    radius = int(round(np.sqrt(np.median(areas) / np.pi)))
    return segmentation.expand_labels(nuclei, distance=max(1, radius))


def measure_cells(
    image: np.ndarray, channel_names: list[str], nuclei: np.ndarray | None = None, cells: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-cell measurements of one (C, Y, X) image, as columns {name: values}, one entry per cell.

    Without masks, nuclei are segmented on the nuclear channel and cells grown from them. Intensities are
    background-corrected (median of the pixels outside all cells) before ratios, so ratios compare across images.
    """
    image = np.asarray(image, np.float64)
    if nuclei is None:
        nuclei = segment_nuclei(image[nuclear_channel(channel_names)])
    if cells is None:
        cells = segment_cells(nuclei)
    ids = np.unique(cells[cells > 0])
    columns: dict[str, np.ndarray] = {"cell": ids.astype(np.int64)}
    if len(ids) == 0:
        return columns
    n = int(cells.max())
    nucleus_area = np.bincount(nuclei.ravel(), minlength=n + 1)[ids]
    cell_area = np.bincount(cells.ravel(), minlength=n + 1)[ids]
    cytoplasm = np.where(nuclei > 0, 0, cells)
    cytoplasm_area = np.bincount(cytoplasm.ravel(), minlength=n + 1)[ids]
    columns["nucleus_area"] = nucleus_area.astype(np.float64)
    columns["cell_area"] = cell_area.astype(np.float64)
    outside = cells == 0
    relative_distance = _relative_distance(nuclei, cells, n)
    for c, name in enumerate(channel_names):
        channel = image[c]
        background = float(np.median(channel[outside])) if outside.any() else 0.0
        corrected = channel - background
        in_nucleus = _label_sum(corrected, nuclei, n)[ids]
        in_cell = _label_sum(corrected, cells, n)[ids]
        in_cytoplasm = _label_sum(corrected, cytoplasm, n)[ids]
        nucleus_mean = in_nucleus / np.maximum(nucleus_area, 1)
        cytoplasm_mean = in_cytoplasm / np.maximum(cytoplasm_area, 1)
        columns[f"{name}_nucleus_mean"] = nucleus_mean
        columns[f"{name}_cytoplasm_mean"] = cytoplasm_mean
        columns[f"{name}_integrated"] = in_cell
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = nucleus_mean / cytoplasm_mean
        columns[f"{name}_nc_ratio"] = np.where(
            np.abs(cytoplasm_mean) > 1e-9 * (np.abs(nucleus_mean) + 1), ratio, np.nan
        )
        columns[f"{name}_texture"] = _texture(channel, cells, n)[ids]
        columns[f"{name}_spread"] = _spread(corrected, relative_distance, cells, n)[ids]
    return columns


def _label_sum(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(labels.ravel(), weights=values.ravel(), minlength=n + 1)


def _texture(channel: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    """Mean local (3x3) standard deviation inside each cell over the cell's mean absolute intensity: how grainy
    or fibrous the signal is, independent of its brightness (a simple stand-in for Haralick contrast)."""
    mean = ndi.uniform_filter(channel, 3)
    local_std = np.sqrt(np.maximum(ndi.uniform_filter(channel**2, 3) - mean**2, 0))
    area = np.maximum(np.bincount(cells.ravel(), minlength=n + 1), 1)
    roughness = _label_sum(local_std, cells, n) / area
    level = _label_sum(np.abs(channel), cells, n) / area
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(level > 0, roughness / level, np.nan)


def _relative_distance(nuclei: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    """Each cell pixel's distance from its nucleus centroid over the cell's equivalent radius sqrt(area/pi); NaN
    for pixels of a cell without a nucleus, 0 outside cells."""
    height, width = cells.shape
    yy, xx = np.indices((height, width), dtype=np.float64)
    nucleus_area = np.bincount(nuclei.ravel(), minlength=n + 1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre_y, centre_x = _label_sum(yy, nuclei, n) / nucleus_area, _label_sum(xx, nuclei, n) / nucleus_area
        radius = np.sqrt(np.bincount(cells.ravel(), minlength=n + 1) / np.pi)
        distance = np.hypot(yy - centre_y[cells], xx - centre_x[cells]) / radius[cells]
    return np.where(cells > 0, distance, 0.0)


def _spread(corrected: np.ndarray, relative_distance: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    """Intensity-weighted mean of the relative distance from the nucleus (_relative_distance) of the
    background-corrected, non-negative signal: a radial-distribution measure like CellProfiler's
    MeasureObjectIntensityDistribution, in one number. Perinuclear signal scores low, signal scattered to the cell's
    edge high (on the simulator: Golgi median 0.63 untreated, 0.72 under nocodazole); NaN without signal."""
    weight = np.where(cells > 0, np.clip(corrected, 0, None), 0.0)
    total = _label_sum(weight, cells, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, _label_sum(weight * relative_distance, cells, n) / total, np.nan)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the foregrounds of two label images (1 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
