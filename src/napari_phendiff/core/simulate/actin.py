"""The actin phenotype: how its channels are painted in each condition and how its per-cell value is measured
(see PHENOTYPES['actin'].description)."""

from __future__ import annotations

import numpy as np

from .layout import Layout, edge_distance
from .measures import label_means, orientation_coherence, subtract_background
from .paint import paint_tubulin, random_points, smooth_noise, splat, trace_filaments


def paint(rng: np.random.Generator, layout: Layout, treated: bool) -> list[np.ndarray]:
    """Phalloidin: stress fibres and cortical ring; latrunculin B leaves dim diffuse actin and a few aggregates."""
    shape, n, d = layout.cells.shape, layout.n_cells, layout.diameter
    tubulin = paint_tubulin(rng, layout, depolymerised=False)  # unaffected by latrunculin B
    thickness = layout.cytoplasm_thickness()
    cortex = np.where(layout.cells > 0, np.exp(-0.5 * (layout.edge_distance / 1.2) ** 2), 0.0)
    texture = np.clip(1 + 0.2 * smooth_noise(rng, shape, 1.0), 0.3, None)
    if treated:
        counts = rng.integers(3, 9, n)
        ys, xs, owner = random_points(rng, layout.cells, counts)
        aggregates = splat(shape, ys, xs, 1300 * rng.lognormal(0, 0.4, owner.size), 0.8)
        actin = 250 * thickness * texture + 120 * cortex + aggregates
    else:
        counts = rng.integers(6, 14, n)
        ys, xs, owner = random_points(rng, layout.cells, counts)
        axis = np.array([c.angle for c in layout.cell_shapes])[owner - 1]  # most fibres run along the long axis
        angle = np.where(
            rng.uniform(0, 1, owner.size) < 0.75,
            axis + rng.normal(0, 0.25, owner.size),
            rng.uniform(0, np.pi, owner.size),
        )
        weight = 1300 * rng.lognormal(0, 0.4, owner.size)
        length = np.full(owner.size, 1.5 * d)
        fibres = np.zeros(shape)
        for direction in (0.0, np.pi):  # grow both ways from a point inside the cell
            fy, fx, index = trace_filaments(rng, layout.cells, ys, xs, angle + direction, owner, length, 0.01)
            fibres += splat(shape, fy, fx, weight[index], 0.5)
        actin = 250 * thickness * texture + 900 * cortex * texture + fibres
    return [tubulin, actin]


def measure(actin: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    actin = subtract_background(actin, cells)
    coherence = orientation_coherence(actin, gradient_sigma=1.0, window_sigma=2.0)
    weight = np.clip(actin, 0, None)
    interior = np.where(edge_distance(cells) > 3, cells, 0)  # the cell outline is coherent too: leave it out
    interior = np.where(np.isin(cells, np.unique(interior)), interior, cells)  # tiny cells: use all of it
    total = label_means(weight, interior, n)
    return np.where(total > 0, label_means(weight * coherence, interior, n) / total, np.nan)
