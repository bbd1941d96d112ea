"""Painting a simulated field: the helpers every stain uses, the DNA and tubulin stains the phenotypes share, then
the optics (blur, vignetting) and the camera (offset, haze, shot and read noise, uint16)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .layout import Layout


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise with unit standard deviation: a texture."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / max(noise.std(), 1e-12)


def splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian spots (peak = weight) at sub-pixel points; points outside the image are dropped."""
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    inside = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    flat = np.bincount(iy[inside] * shape[1] + ix[inside], weights[inside], minlength=shape[0] * shape[1])
    return ndi.gaussian_filter(flat.reshape(shape), sigma) * (2 * np.pi * sigma**2)


def random_points(
    rng: np.random.Generator, labels: np.ndarray, counts: np.ndarray, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def trace_filaments(
    rng: np.random.Generator,
    cells: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    angles: np.ndarray,
    owners: np.ndarray,
    max_length: np.ndarray,
    wiggle: float,
):
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


def paint_dna(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Hoechst/DAPI: dome-shaped nuclei with chromatin texture and darker nucleoli; brightness ~ DNA content."""
    shape = layout.cells.shape
    level = 2200 * np.concatenate([[0.0], layout.dna_content])[layout.nuclei]
    dome = (1 - np.minimum(layout.nucleus_rho, 1) ** 2) ** 0.3
    chromatin = 1 + 0.22 * smooth_noise(rng, shape, 0.8) + 0.12 * smooth_noise(rng, shape, 2.5)
    ys, xs, _ = layout.nucleoli.T
    nucleoli = splat(shape, ys, xs, np.full(ys.size, 1.0), 0.07 * layout.diameter)
    return level * dome * np.clip(chromatin, 0.2, None) * (1 - 0.55 * np.clip(nucleoli, 0, 1))


def paint_tubulin(rng: np.random.Generator, layout: Layout, depolymerised: bool) -> np.ndarray:
    """Microtubules: curved filaments from the centrosome plus a mesh of free ones; nocodazole leaves short stubs
    and diffuse tubulin."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    per_cell = 3 if depolymerised else int(round(0.8 * d))
    owner = np.repeat(np.arange(1, n + 1), per_cell)
    start = layout.mtoc[owner - 1] + rng.normal(0, 0.7, (owner.size, 2))
    length = np.full(owner.size, (0.12 if depolymerised else 1.5) * d)
    ys, xs, index = trace_filaments(
        rng, layout.cells, start[:, 0], start[:, 1], rng.uniform(0, 2 * np.pi, owner.size), owner, length, wiggle=0.1
    )
    fibres = splat(shape, ys, xs, 450 * rng.lognormal(0, 0.3, owner.size)[index], 0.5)
    if not depolymerised:  # non-centrosomal microtubules: grow both ways from random points in the cytoplasm
        fy, fx, free_owner = random_points(rng, layout.cells, np.full(n, int(round(0.5 * d))), layout.nuclei == 0)
        free_angle, free_weight = rng.uniform(0, 2 * np.pi, fy.size), 450 * rng.lognormal(0, 0.3, fy.size)
        for direction in (0.0, np.pi):
            ys, xs, index = trace_filaments(
                rng, layout.cells, fy, fx, free_angle + direction, free_owner, np.full(fy.size, 0.6 * d), wiggle=0.1
            )
            fibres += splat(shape, ys, xs, free_weight[index], 0.5)
    diffuse = (600 if depolymerised else 150) * layout.cytoplasm_thickness()
    centrosome = splat(layout.cells.shape, layout.mtoc[:, 0], layout.mtoc[:, 1], np.full(n, 900.0), 0.8)
    return fibres + diffuse * np.clip(1 + 0.15 * smooth_noise(rng, diffuse.shape, 1.0), 0.5, None) + centrosome


def apply_optics(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """Clean image: stain signal blurred by the PSF, times exposure per channel and vignetting."""
    size = signal.shape[-1]
    psf_sigma = rng.uniform(0.8, 1.3)
    exposure = rng.lognormal(0, 0.2, len(signal))
    centre = rng.uniform(0.3, 0.7, 2) * size
    yy, xx = np.mgrid[:size, :size]
    vignetting = 1 - rng.uniform(0.05, 0.3) * ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / size**2
    blurred = np.stack([ndi.gaussian_filter(channel, psf_sigma) for channel in signal])
    return blurred * exposure[:, None, None] * vignetting


def camera(rng: np.random.Generator, noise_rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
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
