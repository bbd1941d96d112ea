"""Simulated two-condition fluorescence images of cells, with ground truth.

No public data set pairs two experimental conditions with per-cell ground truth, so napari-phendiff ships this
procedural simulator. It trains the demo model, feeds the training/translation tests and scores translations.

A field is painted in four steps, each a small function below:

1. *layout*: nuclei scattered without overlap, each with a star-shaped cell territory around it; neighbours
   compete for pixels so cells touch but never overlap (like a Voronoi diagram weighted by cell size);
2. *stains*: the DNA channel (chromatin texture, nucleoli, G1/G2 DNA content) and the phenotype channels;
3. *optics*: a Gaussian point spread function and uneven illumination (vignetting) give the *clean* image;
4. *camera*: offset, smooth background haze, Poisson shot noise and Gaussian read noise, rounded to uint16.

Three phenotypes, modelled on real assays, each with an "untreated" condition 0 and a treated condition 1 (see
``PHENOTYPES``). The condition changes only the phenotype channels; the DNA channel and the layout are drawn the
same way in both (latrunculin B also leaves fewer, rounder cells).

Ground truth: ``SimulatedField.phenotype_values`` is :func:`measure_phenotype` applied to the *clean* image (blurred,
illuminated signal, before background and camera noise) with the field's own masks. Measuring the noisy image, or
a translation of it, with the same masks therefore gives numbers directly comparable to the truth.

Pairing: for the same seed, both conditions of a phenotype share layout, DNA channel, optics and exposure; only the
phenotype channels and the camera noise differ (for actin, latrunculin B removes some of the cells). So
``simulate_field(p, 0, seed=s)`` and ``simulate_field(p, 1, seed=s)`` are a ground-truth pair for a translation.
``simulate_dataset`` gives every image its own seed, so its two conditions are unpaired, like a real experiment.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
from scipy import ndimage as ndi

from .errors import ConfigError, DataError


@dataclass(frozen=True)
class Phenotype:
    """One simulated assay: two conditions, the channels imaged, and the per-cell value that tells them apart."""

    name: str
    conditions: tuple[str, str]
    channels: tuple[str, ...]
    measure_name: str
    description: str


PHENOTYPES: dict[str, Phenotype] = {
    p.name: p
    for p in (
        Phenotype(
            "translocation",
            ("untreated", "TNFa"),
            ("DNA", "reporter"),
            "nuclear/cytoplasmic reporter ratio",
            "NF-kB-like reporter: cytoplasmic when untreated, moves into the nucleus under TNFa. Value: mean "
            "reporter in the nucleus (1 px in from its edge) over mean reporter in the cytoplasm (>2 px from any "
            "nucleus), background-corrected; median ~0.55 untreated (most cells 0.4-0.75) and ~2.2 under TNFa "
            "(most 1.5-3), with a few non-responders and spontaneously active cells.",
        ),
        Phenotype(
            "golgi",
            ("untreated", "nocodazole"),
            ("DNA", "Golgi", "tubulin"),
            "Golgi dispersion",
            "Compact perinuclear Golgi ribbon when untreated; nocodazole depolymerises microtubules and scatters "
            "the Golgi into small fragments throughout the cytoplasm. Value: intensity-weighted mean distance of "
            "the cell's Golgi signal (above the cell's median, i.e. puncta over diffuse haze) from the nucleus "
            "centroid, divided by the cell's equivalent radius sqrt(area/pi); about 0.4-0.65 untreated, "
            "0.65-0.9 under nocodazole.",
        ),
        Phenotype(
            "actin",
            ("untreated", "latrunculinB"),
            ("DNA", "tubulin", "actin"),
            "actin fibre score",
            "Stress fibres and a cortical ring when untreated; latrunculin B depolymerises actin into dim diffuse "
            "signal with a few aggregates, and cells round up (fewer, smaller, rounder cells). Value: actin "
            "orientation coherence (structure tensor, gradient sigma 1 px, window sigma 2 px; 1 for parallel "
            "fibres, 0 for diffuse or punctate signal) averaged over the cell interior (>3 px from its outline), "
            "weighted by background-corrected actin intensity; it scores organisation, not brightness. About "
            "0.55-0.9 untreated, 0.2-0.45 under latrunculin B.",
        ),
    )
}


@dataclass
class SimulatedField:
    """One simulated multi-channel image with its ground truth."""

    image: np.ndarray  # (C, Y, X) uint16, channels in the phenotype's order
    nuclei: np.ndarray  # (Y, X) int32 labels, 0 = background, cell i has label i
    cells: np.ndarray  # (Y, X) int32 labels, same labels as nuclei; every nucleus lies in its cell
    phenotype_values: np.ndarray  # (n_cells,) float64 ground truth, index = label - 1


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def simulate_field(
    phenotype: str,
    condition: str | int,
    size: int = 128,
    *,
    seed: int | np.random.Generator = 0,
    cell_diameter: float = 28.0,
) -> SimulatedField:
    """Simulate one square field of cells in one condition.

    Deterministic for an integer seed; a Generator seed is advanced. ``cell_diameter`` (px) sets the scale:
    64-px fields hold a few cells, 256-px fields dozens. Same integer seed, other condition: same layout and
    DNA channel (see the module docstring).
    """
    pheno = get_phenotype(phenotype)
    treated = condition_index(pheno, condition) == 1
    size = _check_geometry(size, cell_diameter)
    scene_rng, stain_rng, noise_rng = _random_streams(seed)

    layout = _make_layout(scene_rng, size, cell_diameter, rounded=treated and pheno.name == "actin")
    signal = np.stack([_paint_dna(scene_rng, layout), *_PAINTERS[pheno.name](stain_rng, layout, treated)])
    clean = _apply_optics(scene_rng, signal)
    image = _camera(scene_rng, noise_rng, clean)
    values = measure_phenotype(clean, layout.nuclei, layout.cells, pheno.name)
    return SimulatedField(image, layout.nuclei, layout.cells, values)


def measure_phenotype(image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, phenotype: str) -> np.ndarray:
    """Per-cell phenotype value (index = label - 1) measured from any (C, Y, X) image given its masks.

    Works on simulated, real or translated images: channels must be in the phenotype's order, and intensities in
    any linear unit (the measures are ratios, so they do not depend on the intensity scale). Cells that cannot be
    measured (no pixels, no cytoplasm, no signal) get NaN. See ``PHENOTYPES[phenotype].description``.
    """
    pheno = get_phenotype(phenotype)
    image = np.asarray(image, dtype=np.float64)
    nuclei, cells = np.asarray(nuclei), np.asarray(cells)
    if image.ndim != 3 or image.shape[0] != len(pheno.channels):
        raise ConfigError(
            f"measure_phenotype({phenotype!r}) needs a (C, Y, X) image with C={len(pheno.channels)} channels "
            f"{pheno.channels}, got shape {image.shape}."
        )
    if nuclei.shape != image.shape[1:] or cells.shape != image.shape[1:]:
        raise ConfigError(
            f"Masks must match the image plane {image.shape[1:]}: nuclei {nuclei.shape}, cells {cells.shape}."
        )
    n_cells = int(max(nuclei.max(initial=0), cells.max(initial=0)))
    channel = dict(zip(pheno.channels, image))
    with np.errstate(invalid="ignore", divide="ignore"):
        if pheno.name == "translocation":
            return _nuclear_cytoplasmic_ratio(channel["reporter"], nuclei, cells, n_cells)
        if pheno.name == "golgi":
            return _golgi_dispersion(channel["Golgi"], nuclei, cells, n_cells)
        return _actin_fibre_score(channel["actin"], cells, n_cells)


def simulate_dataset(
    out: str | Path,
    phenotype: str,
    n_per_class: int,
    size: int = 128,
    *,
    seed: int = 0,
    cell_diameter: float = 28.0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a two-condition training folder ``out/<condition>/*.tif`` and its ground truth next to it.

    Images are ImageJ TIFFs ``out/<condition>/<condition>_0000.tif``, (C, Y, X) uint16 with channel names. Ground
    truth goes to the sibling folder ``<out>_truth``: ``<condition>/<stem>_nuclei.tif`` and ``_cells.tif`` label
    images, one ``truth.csv`` row per cell (columns ``TRUTH_COLUMNS``; centroid = nucleus centroid) and
    ``truth.json``; never inside ``out``, which stays a clean training set with one subfolder per condition.
    Image i of condition c is ``simulate_field`` with seed SeedSequence([seed, c, i]), so the same call gives
    identical files. Refuses a non-empty ``out`` or ``<out>_truth``. Everything is written to a temporary folder
    next to ``out`` and renamed at the end, so a crash leaves no half-written data set. ``progress(done, total)``
    is called after each image.
    """
    pheno = get_phenotype(phenotype)
    if int(n_per_class) != n_per_class or n_per_class < 1:
        raise ConfigError(f"n_per_class must be a whole number >= 1, got {n_per_class!r}.")
    size = _check_geometry(size, cell_diameter)
    out = Path(out)
    if not out.name:
        raise ConfigError(f"{out}: give the data set folder a name, e.g. 'simulated/{phenotype}'.")
    truth_dir = out.with_name(out.name + "_truth")
    for folder in (out, truth_dir):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise DataError(f"{folder} already exists and is not empty; choose a new folder or delete this one.")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _write_dataset(staging / "images", staging / "truth", pheno, int(n_per_class), size, seed, cell_diameter,
                       progress)
        # truth first: `out` appearing is the sign that everything is there
        for staged, final in ((staging / "truth", truth_dir), (staging / "images", out)):
            if final.exists():
                final.rmdir()
            staged.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def get_phenotype(name: str) -> Phenotype:
    """The Phenotype called ``name``, or a ConfigError listing the valid names."""
    if name not in PHENOTYPES:
        raise ConfigError(f"Unknown phenotype {name!r}; choose one of {', '.join(PHENOTYPES)}.")
    return PHENOTYPES[name]


def condition_index(pheno: Phenotype, condition: str | int) -> int:
    """0 or 1 for a condition given by name or index, or a ConfigError listing the valid ones."""
    if isinstance(condition, (int, np.integer)) and not isinstance(condition, bool) and condition in (0, 1):
        return int(condition)
    if condition in pheno.conditions:
        return pheno.conditions.index(condition)
    raise ConfigError(
        f"Unknown condition {condition!r} for phenotype {pheno.name!r}; choose one of {pheno.conditions} or 0/1."
    )


def _check_geometry(size: int, cell_diameter: float) -> int:
    """The image side as an int, or a ConfigError if the field or the cells cannot be drawn at that size."""
    if isinstance(size, bool) or int(size) != size or size < 32:
        raise ConfigError(f"size must be a whole number of pixels >= 32, got {size!r}.")
    if not 8 <= cell_diameter <= size:
        raise ConfigError(f"cell_diameter must be between 8 px and the image size ({size} px), got {cell_diameter}.")
    return int(size)


def _random_streams(seed: int | np.random.Generator) -> list[np.random.Generator]:
    """Independent generators for the scene (layout, DNA, optics), the phenotype stains and the camera noise."""
    if isinstance(seed, np.random.Generator):
        sequence = np.random.SeedSequence(seed.integers(0, 2**63, size=4))
    else:
        sequence = np.random.SeedSequence(seed)
    return [np.random.default_rng(child) for child in sequence.spawn(3)]


# ---------------------------------------------------------------------------------------------------------------
# Layout: where the nuclei and cells are
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A star-shaped outline around (y, x): an ellipse times a few smooth random bumps (Fourier harmonics)."""

    y: float
    x: float
    radius: float
    aspect: float
    angle: float
    amplitudes: np.ndarray  # relative bump size of harmonics 1..K
    phases: np.ndarray

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        t = theta - self.angle
        a, b = np.sqrt(self.aspect), 1 / np.sqrt(self.aspect)
        ellipse = a * b / np.hypot(b * np.cos(t), a * np.sin(t))
        k = np.arange(1, len(self.amplitudes) + 1)
        bumps = 1 + np.cos(np.multiply.outer(theta, k) + self.phases) @ self.amplitudes
        return self.radius * ellipse * np.maximum(bumps, 0.25)

    def radius_lookup(self, theta: np.ndarray, floor: _Shape | None = None) -> np.ndarray:
        """``radius_at`` interpolated from a table (fast for many pixels); with ``floor`` (a nucleus) never below
        1.3 x its radius + 2 px, so the nucleus always lies inside the cell."""
        table = self._table if floor is None else np.maximum(self._table, 1.3 * floor._table + 2)
        return np.interp(theta, _ANGLES, table)

    @cached_property
    def _table(self) -> np.ndarray:
        return self.radius_at(_ANGLES)


_ANGLES = np.linspace(-np.pi, np.pi, 361)  # covers np.arctan2's range [-pi, pi]


def _random_shape(rng: np.random.Generator, y: float, x: float, radius: float, max_aspect: float,
                  bumpiness: float) -> _Shape:
    k = np.arange(1, 7)
    return _Shape(y, x, radius, rng.uniform(1, max_aspect), rng.uniform(0, np.pi),
                  bumpiness * rng.uniform(0, 1, k.size) / k, rng.uniform(0, 2 * np.pi, k.size))


@dataclass
class _Layout:
    """The cells of one field: label images plus the geometry the stains are painted from."""

    diameter: float
    nuclei: np.ndarray  # int32 labels
    cells: np.ndarray  # int32 labels
    nucleus_rho: np.ndarray  # distance from the own nucleus centre / nucleus radius that way (inf outside nuclei)
    edge_distance: np.ndarray  # px to the nearest cell edge (0 outside cells); the image border is not an edge
    nucleus_shapes: list[_Shape]
    cell_shapes: list[_Shape]
    mtoc: np.ndarray  # (n, 2) centrosome (y, x) per cell, next to the nucleus on the side with most cytoplasm
    dna_content: np.ndarray  # (n,) ~1 in G1, ~1.8 in G2
    nucleoli: np.ndarray  # (m, 3) y, x, label of nucleoli (dark spots in the DNA)

    @property
    def n_cells(self) -> int:
        return len(self.nucleus_shapes)

    def cytoplasm_thickness(self) -> np.ndarray:
        """Relative cell height: thin at the cell edge, flat inside; 0 outside cells."""
        thickness = 1 - np.exp(-(self.edge_distance + 0.5) / (0.06 * self.diameter))
        return np.where(self.cells > 0, thickness, 0.0)


def _make_layout(rng: np.random.Generator, size: int, diameter: float, rounded: bool) -> _Layout:
    """Scatter nuclei, give each a cell territory; ``rounded`` (latrunculin B) drops ~30% and rounds the rest.

    Every random number is drawn for every candidate cell whatever ``rounded`` is, so both conditions of a seed
    share the same nuclei.
    """
    confluence = rng.uniform(0.3, 0.6)
    n_wanted = max(1, rng.poisson(confluence * size**2 / (np.pi * diameter**2 / 4)))
    margin = min(0.35 * diameter + 1, size / 2 - 1)  # nuclei lie fully inside the image; cells may be cut
    centres = _sample_centres(rng, n_wanted, size, margin, min_distance=0.75 * diameter)
    n = len(centres)
    nuc_radius = 0.22 * diameter * rng.lognormal(0, 0.1, n)
    cell_radius = 0.5 * diameter * rng.lognormal(0, 0.12, n)
    nucleus_shapes = [_random_shape(rng, y, x, r, 1.5, 0.08) for (y, x), r in zip(centres, nuc_radius)]
    cell_shapes = [_random_shape(rng, y, x, r, 1.9, 0.4) for (y, x), r in zip(centres, cell_radius)]
    dna_content = rng.choice([1.0, 1.8], n, p=[0.65, 0.35]) * rng.lognormal(0, 0.1, n)
    nucleoli_uniform, nucleoli_count = rng.uniform(0, 1, (n, 3, 2)), rng.integers(1, 4, n)
    survives = rng.uniform(0, 1, n) >= (0.3 if rounded else 0.0)
    survives[np.argmax(survives)] = True  # at least one cell
    mtoc_jitter = rng.normal(0, 0.3, n)

    if rounded:
        cell_shapes = [replace(c, radius=0.85 * c.radius, aspect=1 + 0.3 * (c.aspect - 1),
                               amplitudes=0.3 * c.amplitudes) for c in cell_shapes]
    keep = np.flatnonzero(survives)
    nucleus_shapes = [nucleus_shapes[i] for i in keep]
    cell_shapes = [cell_shapes[i] for i in keep]

    nuclei, cells, nucleus_rho = _paint_territories(size, nucleus_shapes, cell_shapes)
    mtoc, nucleoli = [], []
    for label, (nuc, cell, i) in enumerate(zip(nucleus_shapes, cell_shapes, keep), start=1):
        angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        front = angles[np.argmax(cell.radius_lookup(angles, floor=nuc))] + mtoc_jitter[i]
        distance = nuc.radius_at(np.array(front)) + 0.06 * diameter
        mtoc.append((nuc.y + distance * np.sin(front), nuc.x + distance * np.cos(front)))
        uniform = nucleoli_uniform[i, : nucleoli_count[i]]
        theta = 2 * np.pi * uniform[:, 0]
        r = 0.6 * np.sqrt(uniform[:, 1]) * nuc.radius_at(theta)
        nucleoli.append(np.column_stack([nuc.y + r * np.sin(theta), nuc.x + r * np.cos(theta),
                                         np.full(theta.size, label)]))
    return _Layout(diameter, nuclei, cells, nucleus_rho, _edge_distance(cells), nucleus_shapes, cell_shapes,
                   np.array(mtoc).reshape(-1, 2), dna_content[keep], np.concatenate(nucleoli))


def _sample_centres(rng: np.random.Generator, n: int, size: int, margin: float, min_distance: float) -> np.ndarray:
    """Up to ``n`` points in [margin, size - margin]^2 at least ``min_distance`` apart (dart throwing)."""
    centres = np.empty((0, 2))
    for _ in range(30):
        candidates = rng.uniform(margin, size - margin, (4 * n, 2))
        if len(centres):  # drop candidates too close to those already placed, all at once
            gaps = np.min(np.sum((candidates[:, None] - centres[None]) ** 2, axis=2), axis=1)
            candidates = candidates[gaps >= min_distance**2]
        for candidate in candidates:  # then place the survivors one by one
            if len(centres) == 0 or np.min(np.sum((centres - candidate) ** 2, axis=1)) >= min_distance**2:
                centres = np.vstack([centres, candidate])
                if len(centres) == n:
                    return centres
    return centres


def _paint_territories(size: int, nucleus_shapes: list[_Shape], cell_shapes: list[_Shape]):
    """Label images of nuclei and cells; where two shapes overlap the pixel goes to the one it is deeper in."""
    cells, nuclei = np.zeros((size, size), np.int32), np.zeros((size, size), np.int32)
    cell_rho, nucleus_rho = np.full((size, size), np.inf), np.full((size, size), np.inf)
    for label, (nuc, cell) in enumerate(zip(nucleus_shapes, cell_shapes), start=1):
        reach = cell.radius_lookup(_ANGLES, floor=nuc).max() + 1
        y0, y1 = max(int(nuc.y - reach), 0), min(int(nuc.y + reach) + 2, size)
        x0, x1 = max(int(nuc.x - reach), 0), min(int(nuc.x + reach) + 2, size)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - nuc.y, xx - nuc.x
        distance, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
        window = (slice(y0, y1), slice(x0, x1))
        for labels, best, rho in (
            (cells, cell_rho, distance / cell.radius_lookup(theta, floor=nuc)),
            (nuclei, nucleus_rho, distance / nuc.radius_lookup(theta)),
        ):
            take = (rho < 1) & (rho < best[window])
            labels[window][take] = label
            best[window][take] = rho[take]
    cells[nuclei > 0] = nuclei[nuclei > 0]
    return nuclei, cells, nucleus_rho


def _edge_distance(cells: np.ndarray) -> np.ndarray:
    """Distance (px) from each cell pixel to the nearest pixel of another cell or background."""
    padded = np.pad(cells, 1, mode="edge")
    interior = cells > 0
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        interior &= padded[dy : dy + cells.shape[0], dx : dx + cells.shape[1]] == cells
    return ndi.distance_transform_edt(interior)


# ---------------------------------------------------------------------------------------------------------------
# Stains: signal per channel before the optics (arbitrary linear units ~ camera counts above background)
# ---------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise with unit standard deviation: a texture."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / max(noise.std(), 1e-12)


def _splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian spots (peak = weight) at sub-pixel points; points outside the image are dropped."""
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    inside = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    flat = np.bincount(iy[inside] * shape[1] + ix[inside], weights[inside], minlength=shape[0] * shape[1])
    return ndi.gaussian_filter(flat.reshape(shape), sigma) * (2 * np.pi * sigma**2)


def _random_points(rng: np.random.Generator, labels: np.ndarray, counts: np.ndarray,
                   allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``counts[i]`` uniformly random points inside label i + 1 (and inside ``allowed`` where the label has
    such pixels): ys, xs, labels."""
    ys, xs, owners = [], [], []
    for label, window in enumerate(ndi.find_objects(labels, max_label=len(counts)), start=1):
        if window is None or counts[label - 1] == 0:
            continue
        inside = labels[window] == label
        if allowed is not None and (inside & allowed[window]).any():
            inside &= allowed[window]
        py, px = np.nonzero(inside)
        pick = rng.integers(0, py.size, counts[label - 1])
        ys.append(py[pick] + window[0].start + rng.uniform(-0.5, 0.5, pick.size))
        xs.append(px[pick] + window[1].start + rng.uniform(-0.5, 0.5, pick.size))
        owners.append(np.full(pick.size, label))
    if not ys:
        return np.empty(0), np.empty(0), np.empty(0, int)
    return np.concatenate(ys), np.concatenate(xs), np.concatenate(owners)


def _trace_filaments(rng: np.random.Generator, cells: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                     angles: np.ndarray, owners: np.ndarray, max_length: np.ndarray, wiggle: float):
    """Grow filaments from (ys, xs) along ``angles`` in 1 px steps until they leave their cell or reach
    ``max_length``; ``wiggle`` (rad per step) bends them. Returns the points (ys, xs, filament index)."""
    y, x, angle = ys.astype(float), xs.astype(float), angles.astype(float)
    alive = np.ones(y.size, bool)
    index = np.arange(y.size)
    points = []
    for step in range(int(np.max(max_length, initial=0))):
        iy, ix = np.round(y).astype(int), np.round(x).astype(int)
        inside = (iy >= 0) & (iy < cells.shape[0]) & (ix >= 0) & (ix < cells.shape[1])
        alive &= inside & (step < max_length)
        alive[alive] &= cells[iy[alive], ix[alive]] == owners[alive]
        if not alive.any():
            break
        points.append((y[alive], x[alive], index[alive]))
        angle += wiggle * rng.standard_normal(angle.size)
        y += np.sin(angle)
        x += np.cos(angle)
    if not points:
        return np.empty(0), np.empty(0), np.empty(0, int)
    return tuple(np.concatenate(p) for p in zip(*points))


def _paint_dna(rng: np.random.Generator, layout: _Layout) -> np.ndarray:
    """Hoechst/DAPI: dome-shaped nuclei with chromatin texture and darker nucleoli; brightness ~ DNA content."""
    shape = layout.cells.shape
    level = 2200 * np.concatenate([[0.0], layout.dna_content])[layout.nuclei]
    dome = (1 - np.minimum(layout.nucleus_rho, 1) ** 2) ** 0.3
    chromatin = 1 + 0.22 * _smooth_noise(rng, shape, 0.8) + 0.12 * _smooth_noise(rng, shape, 2.5)
    ys, xs, _ = layout.nucleoli.T
    nucleoli = _splat(shape, ys, xs, np.full(ys.size, 1.0), 0.07 * layout.diameter)
    return level * dome * np.clip(chromatin, 0.2, None) * (1 - 0.55 * np.clip(nucleoli, 0, 1))


def _paint_translocation(rng: np.random.Generator, layout: _Layout, treated: bool) -> list[np.ndarray]:
    """NF-kB-like reporter: cytoplasmic (nucleus dim) untreated, nuclear (nucleus bright) under TNFa."""
    n = layout.n_cells
    if treated:  # most cells respond; ~6% non-responders stay cytoplasmic
        ratio = np.where(rng.uniform(0, 1, n) < 0.06, rng.lognormal(np.log(0.55), 0.25, n),
                         rng.lognormal(np.log(1.6), 0.14, n))
    else:  # ~3% spontaneously active cells
        ratio = np.where(rng.uniform(0, 1, n) < 0.03, rng.lognormal(np.log(0.95), 0.2, n),
                         rng.lognormal(np.log(0.37), 0.13, n))
    cytoplasm = np.concatenate([[0.0], 900 * rng.lognormal(0, 0.3, n)])  # expression level varies per cell
    nucleus = np.concatenate([[0.0], ratio]) * cytoplasm
    in_nucleus = layout.nuclei > 0
    reporter = np.where(in_nucleus, nucleus[layout.nuclei], cytoplasm[layout.cells] * layout.cytoplasm_thickness())
    return [reporter * np.clip(1 + 0.12 * _smooth_noise(rng, reporter.shape, 1.0), 0.5, None)]


def _paint_golgi(rng: np.random.Generator, layout: _Layout, treated: bool) -> list[np.ndarray]:
    """Golgi: a ribbon capping the nucleus at the centrosome, or (nocodazole) fragments all over the cytoplasm."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    total = 9000 * rng.lognormal(0, 0.25, n)  # Golgi content per cell, conserved by fragmentation
    if treated:
        counts = rng.integers(15, 36, n)
        ys, xs, owner = _random_points(rng, layout.cells, counts, allowed=layout.nuclei == 0)
        weight = total[owner - 1] / counts[owner - 1] * rng.lognormal(0, 0.4, owner.size)
        golgi = _splat(shape, ys, xs, weight, 0.6)
    else:  # ribbon: elements along an arc hugging the nucleus, centred on the centrosome
        per_cell = 60
        ys, xs = np.empty((n, per_cell)), np.empty((n, per_cell))
        for i, (nuc, (mtoc_y, mtoc_x)) in enumerate(zip(layout.nucleus_shapes, layout.mtoc)):
            width = rng.uniform(1.0, 2.4)  # arc spanned (rad)
            theta = np.arctan2(mtoc_y - nuc.y, mtoc_x - nuc.x) + width * rng.uniform(-0.5, 0.5, per_cell)
            r = nuc.radius_at(theta) + rng.uniform(-0.04, 0.12, per_cell) * d
            ys[i], xs[i] = nuc.y + r * np.sin(theta), nuc.x + r * np.cos(theta)
        weight = np.repeat(total / per_cell * 3, per_cell) * rng.lognormal(0, 0.6, n * per_cell)
        golgi = _splat(shape, ys.ravel(), xs.ravel(), weight, 0.7)
    haze = 60 * layout.cytoplasm_thickness()
    return [golgi + haze, _paint_tubulin(rng, layout, depolymerised=treated)]


def _paint_tubulin(rng: np.random.Generator, layout: _Layout, depolymerised: bool) -> np.ndarray:
    """Microtubules: curved filaments from the centrosome plus a mesh of free ones; nocodazole leaves short stubs
    and diffuse tubulin."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    per_cell = 3 if depolymerised else int(round(0.8 * d))
    owner = np.repeat(np.arange(1, n + 1), per_cell)
    start = layout.mtoc[owner - 1] + rng.normal(0, 0.7, (owner.size, 2))
    length = np.full(owner.size, (0.12 if depolymerised else 1.5) * d)
    ys, xs, index = _trace_filaments(rng, layout.cells, start[:, 0], start[:, 1], rng.uniform(0, 2 * np.pi,
                                     owner.size), owner, length, wiggle=0.1)
    fibres = _splat(shape, ys, xs, 450 * rng.lognormal(0, 0.3, owner.size)[index], 0.5)
    if not depolymerised:  # non-centrosomal microtubules: grow both ways from random points in the cytoplasm
        fy, fx, free_owner = _random_points(rng, layout.cells, np.full(n, int(round(0.5 * d))), layout.nuclei == 0)
        free_angle, free_weight = rng.uniform(0, 2 * np.pi, fy.size), 450 * rng.lognormal(0, 0.3, fy.size)
        for direction in (0.0, np.pi):
            ys, xs, index = _trace_filaments(rng, layout.cells, fy, fx, free_angle + direction, free_owner,
                                             np.full(fy.size, 0.6 * d), wiggle=0.1)
            fibres += _splat(shape, ys, xs, free_weight[index], 0.5)
    diffuse = (600 if depolymerised else 150) * layout.cytoplasm_thickness()
    centrosome = _splat(layout.cells.shape, layout.mtoc[:, 0], layout.mtoc[:, 1], np.full(n, 900.0), 0.8)
    return fibres + diffuse * np.clip(1 + 0.15 * _smooth_noise(rng, diffuse.shape, 1.0), 0.5, None) + centrosome


def _paint_actin(rng: np.random.Generator, layout: _Layout, treated: bool) -> list[np.ndarray]:
    """Phalloidin: stress fibres and cortical ring; latrunculin B leaves dim diffuse actin and a few aggregates."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    tubulin = _paint_tubulin(rng, layout, depolymerised=False)  # unaffected by latrunculin B
    thickness = layout.cytoplasm_thickness()
    cortex = np.where(layout.cells > 0, np.exp(-0.5 * (layout.edge_distance / 1.2) ** 2), 0.0)
    texture = np.clip(1 + 0.2 * _smooth_noise(rng, shape, 1.0), 0.3, None)
    if treated:
        counts = rng.integers(3, 9, n)
        ys, xs, owner = _random_points(rng, layout.cells, counts)
        aggregates = _splat(shape, ys, xs, 1300 * rng.lognormal(0, 0.4, owner.size), 0.8)
        actin = 250 * thickness * texture + 120 * cortex + aggregates
    else:
        counts = rng.integers(6, 14, n)
        ys, xs, owner = _random_points(rng, layout.cells, counts)
        axis = np.array([c.angle for c in layout.cell_shapes])[owner - 1]  # most fibres run along the long axis
        angle = np.where(rng.uniform(0, 1, owner.size) < 0.75, axis + rng.normal(0, 0.25, owner.size),
                         rng.uniform(0, np.pi, owner.size))
        weight = 1300 * rng.lognormal(0, 0.4, owner.size)
        length = np.full(owner.size, 1.5 * d)
        fibres = np.zeros(shape)
        for direction in (0.0, np.pi):  # grow both ways from a point inside the cell
            fy, fx, index = _trace_filaments(rng, layout.cells, ys, xs, angle + direction, owner, length, 0.01)
            fibres += _splat(shape, fy, fx, weight[index], 0.5)
        actin = 250 * thickness * texture + 900 * cortex * texture + fibres
    return [tubulin, actin]


_PAINTERS = {"translocation": _paint_translocation, "golgi": _paint_golgi, "actin": _paint_actin}


# ---------------------------------------------------------------------------------------------------------------
# Optics and camera
# ---------------------------------------------------------------------------------------------------------------


def _apply_optics(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """Clean image: stain signal blurred by the PSF, times exposure per channel and vignetting."""
    size = signal.shape[-1]
    psf_sigma = rng.uniform(0.8, 1.3)
    exposure = rng.lognormal(0, 0.2, signal.shape[0])
    centre = rng.uniform(0.3, 0.7, 2) * size
    yy, xx = np.mgrid[:size, :size]
    vignetting = 1 - rng.uniform(0.05, 0.3) * ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / size**2
    blurred = np.stack([ndi.gaussian_filter(channel, psf_sigma) for channel in signal])
    return blurred * exposure[:, None, None] * vignetting


def _camera(rng: np.random.Generator, noise_rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """uint16 camera image: offset + smooth haze + shot noise (gain ADU/e-) + read noise, never saturating."""
    channels, size = clean.shape[0], clean.shape[-1]
    offset = rng.uniform(100, 200)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    slope_y, slope_x = rng.uniform(-1, 1, (2, channels, 1, 1))
    haze = rng.uniform(20, 90, (channels, 1, 1)) * (1 + 0.6 * (slope_y * yy + slope_x * xx))  # out-of-focus light
    gain = rng.uniform(1.0, 2.0)
    electrons = noise_rng.poisson(np.clip(clean + haze, 0, None) / gain)
    image = offset + gain * electrons + noise_rng.normal(0, rng.uniform(2, 5), clean.shape)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------------------------------
# Measures (from any image, given masks)
# ---------------------------------------------------------------------------------------------------------------


def _label_means(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per label 1..n (NaN for labels without pixels)."""
    sums = np.bincount(labels.ravel(), values.ravel(), minlength=n + 1)[1 : n + 1]
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1 : n + 1]
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _subtract_background(channel: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Channel minus a smooth quadratic surface fitted to pixels >3 px from any cell (1st percentile if too few)."""
    far = ndi.distance_transform_edt(cells == 0) > 3
    if far.sum() < 100:
        return channel - np.percentile(channel, 1)
    ys, xs = np.nonzero(far)
    stride = max(1, ys.size // 4000)
    ys, xs = ys[::stride], xs[::stride]
    scale = max(channel.shape)

    def design(y, x):
        y, x = y / scale - 0.5, x / scale - 0.5
        return np.stack([np.ones_like(y), y, x, y * y, y * x, x * x], axis=-1)

    a = design(ys, xs)
    coefficients = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ channel[ys, xs])  # least squares
    yy, xx = np.mgrid[: channel.shape[0], : channel.shape[1]].astype(float)
    return channel - design(yy, xx) @ coefficients


def _inner_labels(labels: np.ndarray) -> np.ndarray:
    """Labels eroded by 1 px (pixels whose 3x3 neighbourhood is all the same label), away from blur at edges."""
    same = (ndi.minimum_filter(labels, 3) == labels) & (ndi.maximum_filter(labels, 3) == labels)
    return np.where(same, labels, 0)


def _nuclear_cytoplasmic_ratio(reporter: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    reporter = _subtract_background(reporter, cells)
    nucleus = _label_means(reporter, _inner_labels(nuclei), n)
    nucleus = np.where(np.isnan(nucleus), _label_means(reporter, nuclei, n), nucleus)
    ring = np.where(ndi.distance_transform_edt(nuclei == 0) > 2, cells, 0)
    cytoplasm = _label_means(reporter, ring, n)
    cytoplasm = np.where(np.isnan(cytoplasm), _label_means(reporter, np.where(nuclei > 0, 0, cells), n), cytoplasm)
    return np.where(cytoplasm > 0, nucleus / cytoplasm, np.nan)


def _golgi_dispersion(golgi: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    labels = np.arange(1, n + 1)
    yy, xx = np.mgrid[: golgi.shape[0], : golgi.shape[1]]
    centre_y, centre_x = _label_means(yy, nuclei, n), _label_means(xx, nuclei, n)
    inside = cells > 0
    owner = cells[inside] - 1
    baseline = np.asarray(ndi.median(golgi, cells, labels)) if n else np.empty(0)  # diffuse haze + background
    weight = np.clip(golgi[inside] - baseline[owner], 0, None)
    distance = np.hypot(yy[inside] - centre_y[owner], xx[inside] - centre_x[owner])
    mean_distance = np.bincount(owner, weight * distance, n) / np.bincount(owner, weight, n)
    radius = np.sqrt(np.bincount(owner, minlength=n) / np.pi)
    return mean_distance / radius


def _actin_fibre_score(actin: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    actin = _subtract_background(actin, cells)
    coherence = _orientation_coherence(actin, gradient_sigma=1.0, window_sigma=2.0)
    weight = np.clip(actin, 0, None)
    interior = np.where(_edge_distance(cells) > 3, cells, 0)  # the cell outline is coherent too: leave it out
    interior = np.where(np.isin(cells, np.unique(interior)), interior, cells)  # tiny cells: use all of it
    total = _label_means(weight, interior, n)
    return np.where(total > 0, _label_means(weight * coherence, interior, n) / total, np.nan)


def _orientation_coherence(image: np.ndarray, gradient_sigma: float, window_sigma: float) -> np.ndarray:
    """Local orientation coherence (l1 - l2) / (l1 + l2) of the structure tensor, as in OrientationJ: 1 where
    the signal is made of parallel lines or edges, 0 where it is isotropic (flat, diffuse, punctate)."""
    gy = ndi.gaussian_filter(image, gradient_sigma, order=(1, 0))
    gx = ndi.gaussian_filter(image, gradient_sigma, order=(0, 1))
    jyy, jxx, jxy = (ndi.gaussian_filter(g, window_sigma) for g in (gy * gy, gx * gx, gx * gy))
    trace = jyy + jxx
    anisotropy = np.sqrt((jyy - jxx) ** 2 + 4 * jxy**2)
    return np.where(trace > 0, anisotropy / np.where(trace > 0, trace, 1), 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Writing a data set
# ---------------------------------------------------------------------------------------------------------------

TRUTH_COLUMNS = ("file", "condition", "cell", "phenotype_value", "nucleus_area", "cell_area", "centroid_y",
                 "centroid_x")


def _write_dataset(images: Path, truth: Path, pheno: Phenotype, n_per_class: int, size: int, seed: int,
                   cell_diameter: float, progress: Callable[[int, int], None] | None) -> None:
    """Write images and ground truth into two fresh folders (the caller renames them into place)."""
    rows, done, total = [], 0, 2 * n_per_class
    for condition_idx, condition in enumerate(pheno.conditions):
        (images / condition).mkdir(parents=True)
        (truth / condition).mkdir(parents=True)
        for i in range(n_per_class):
            rng = np.random.default_rng(np.random.SeedSequence([seed, condition_idx, i]))
            field = simulate_field(pheno.name, condition_idx, size, seed=rng, cell_diameter=cell_diameter)
            stem = f"{condition}_{i:04d}"
            tifffile.imwrite(images / condition / f"{stem}.tif", field.image, imagej=True,
                             metadata={"axes": "CYX", "Labels": list(pheno.channels), "mode": "composite"})
            label_dtype = np.uint16 if field.cells.max() < 65536 else np.int32
            tifffile.imwrite(truth / condition / f"{stem}_nuclei.tif", field.nuclei.astype(label_dtype))
            tifffile.imwrite(truth / condition / f"{stem}_cells.tif", field.cells.astype(label_dtype))
            rows += _truth_rows(f"{condition}/{stem}.tif", condition, field)
            done += 1
            if progress is not None:
                progress(done, total)
    with open(truth / "truth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows(rows)
    info = {
        "phenotype": pheno.name,
        "measure": pheno.measure_name,
        "description": pheno.description,
        "conditions": list(pheno.conditions),
        "channels": list(pheno.channels),
        "seed": seed,
        "size": size,
        "cell_diameter": cell_diameter,
        "n_per_class": n_per_class,
        "phenotype_value": "measure_phenotype on the noise-free image (before background and camera noise)",
        "centroid": "centroid of the nucleus, in pixels (y down, x right)",
    }
    (truth / "truth.json").write_text(json.dumps(info, indent=2))


def _truth_rows(file: str, condition: str, field: SimulatedField) -> list[tuple]:
    n = len(field.phenotype_values)
    nucleus_area = np.bincount(field.nuclei.ravel(), minlength=n + 1)[1:]
    cell_area = np.bincount(field.cells.ravel(), minlength=n + 1)[1:]
    yy, xx = np.mgrid[: field.nuclei.shape[0], : field.nuclei.shape[1]]
    centroid_y, centroid_x = _label_means(yy, field.nuclei, n), _label_means(xx, field.nuclei, n)
    return [
        (file, condition, i + 1, f"{field.phenotype_values[i]:.6g}", int(nucleus_area[i]), int(cell_area[i]),
         f"{centroid_y[i]:.2f}", f"{centroid_x[i]:.2f}")
        for i in range(n)
    ]
