"""Where the nuclei and cells of a simulated field are: star-shaped outlines scattered without overlap, cell
territories competing for pixels (like a Voronoi diagram weighted by cell size)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi


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


def _random_shape(
    rng: np.random.Generator, y: float, x: float, radius: float, max_aspect: float, bumpiness: float
) -> _Shape:
    k = np.arange(1, 7)
    return _Shape(
        y,
        x,
        radius,
        rng.uniform(1, max_aspect),
        rng.uniform(0, np.pi),
        bumpiness * rng.uniform(0, 1, k.size) / k,
        rng.uniform(0, 2 * np.pi, k.size),
    )


@dataclass
class Layout:
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


def make_layout(rng: np.random.Generator, size: int, diameter: float, rounded: bool) -> Layout:
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
        cell_shapes = [
            replace(c, radius=0.85 * c.radius, aspect=1 + 0.3 * (c.aspect - 1), amplitudes=0.3 * c.amplitudes)
            for c in cell_shapes
        ]
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
        nucleoli.append(
            np.column_stack([nuc.y + r * np.sin(theta), nuc.x + r * np.cos(theta), np.full(theta.size, label)])
        )
    return Layout(
        diameter,
        nuclei,
        cells,
        nucleus_rho,
        edge_distance(cells),
        nucleus_shapes,
        cell_shapes,
        np.array(mtoc).reshape(-1, 2),
        dna_content[keep],
        np.concatenate(nucleoli),
    )


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


def edge_distance(cells: np.ndarray) -> np.ndarray:
    """Distance (px) from each cell pixel to the nearest pixel of another cell or background."""
    padded = np.pad(cells, 1, mode="edge")
    interior = cells > 0
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        interior &= padded[dy : dy + cells.shape[0], dx : dx + cells.shape[1]] == cells
    return ndi.distance_transform_edt(interior)
