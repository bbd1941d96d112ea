"""The golgi phenotype: how its channels are painted in each condition and how its per-cell value is measured
(see PHENOTYPES['golgi'].description)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .layout import Layout
from .measures import label_means
from .paint import paint_tubulin, random_points, splat


def paint(rng: np.random.Generator, layout: Layout, treated: bool) -> list[np.ndarray]:
    """Golgi: a ribbon capping the nucleus at the centrosome, or (nocodazole) fragments all over the cytoplasm."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    total = 9000 * rng.lognormal(0, 0.25, n)  # Golgi content per cell, conserved by fragmentation
    if treated:
        counts = rng.integers(15, 36, n)
        ys, xs, owner = random_points(rng, layout.cells, counts, allowed=layout.nuclei == 0)
        weight = total[owner - 1] / counts[owner - 1] * rng.lognormal(0, 0.4, owner.size)
        golgi = splat(shape, ys, xs, weight, 0.6)
    else:  # ribbon: elements along an arc hugging the nucleus, centred on the centrosome
        per_cell = 60
        ys, xs = np.empty((n, per_cell)), np.empty((n, per_cell))
        for i, (nuc, (mtoc_y, mtoc_x)) in enumerate(zip(layout.nucleus_shapes, layout.mtoc)):
            width = rng.uniform(1.0, 2.4)  # arc spanned (rad)
            theta = np.arctan2(mtoc_y - nuc.y, mtoc_x - nuc.x) + width * rng.uniform(-0.5, 0.5, per_cell)
            r = nuc.radius_at(theta) + rng.uniform(-0.04, 0.12, per_cell) * d
            ys[i], xs[i] = nuc.y + r * np.sin(theta), nuc.x + r * np.cos(theta)
        weight = np.repeat(total / per_cell * 3, per_cell) * rng.lognormal(0, 0.6, n * per_cell)
        golgi = splat(shape, ys.ravel(), xs.ravel(), weight, 0.7)
    haze = 60 * layout.cytoplasm_thickness()
    return [golgi + haze, paint_tubulin(rng, layout, depolymerised=treated)]


def measure(golgi: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    labels = np.arange(1, n + 1)
    yy, xx = np.mgrid[: golgi.shape[0], : golgi.shape[1]]
    centre_y, centre_x = label_means(yy, nuclei, n), label_means(xx, nuclei, n)
    inside = cells > 0
    owner = cells[inside] - 1
    baseline = np.asarray(ndi.median(golgi, cells, labels)) if n else np.empty(0)  # diffuse haze + background
    weight = np.clip(golgi[inside] - baseline[owner], 0, None)
    distance = np.hypot(yy[inside] - centre_y[owner], xx[inside] - centre_x[owner])
    mean_distance = np.bincount(owner, weight * distance, n) / np.bincount(owner, weight, n)
    radius = np.sqrt(np.bincount(owner, minlength=n) / np.pi)
    return mean_distance / radius
