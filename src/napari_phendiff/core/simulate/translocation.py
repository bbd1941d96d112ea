"""The translocation phenotype: how its channels are painted in each condition and how its per-cell value is measured
(see PHENOTYPES['translocation'].description)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .layout import Layout
from .measures import inner_labels, label_means, subtract_background
from .paint import smooth_noise


def paint(rng: np.random.Generator, layout: Layout, treated: bool) -> list[np.ndarray]:
    """NF-kB-like reporter: cytoplasmic (nucleus dim) untreated, nuclear (nucleus bright) under TNFa."""
    n = layout.n_cells
    if treated:  # most cells respond; ~6% non-responders stay cytoplasmic
        ratio = np.where(
            rng.uniform(0, 1, n) < 0.06, rng.lognormal(np.log(0.55), 0.25, n), rng.lognormal(np.log(1.6), 0.14, n)
        )
    else:  # ~3% spontaneously active cells
        ratio = np.where(
            rng.uniform(0, 1, n) < 0.03, rng.lognormal(np.log(0.95), 0.2, n), rng.lognormal(np.log(0.37), 0.13, n)
        )
    cytoplasm = np.concatenate([[0.0], 900 * rng.lognormal(0, 0.3, n)])  # expression level varies per cell
    nucleus = np.concatenate([[0.0], ratio]) * cytoplasm
    in_nucleus = layout.nuclei > 0
    reporter = np.where(in_nucleus, nucleus[layout.nuclei], cytoplasm[layout.cells] * layout.cytoplasm_thickness())
    return [reporter * np.clip(1 + 0.12 * smooth_noise(rng, reporter.shape, 1.0), 0.5, None)]


def measure(reporter: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    reporter = subtract_background(reporter, cells)
    nucleus = label_means(reporter, inner_labels(nuclei), n)
    nucleus = np.where(np.isnan(nucleus), label_means(reporter, nuclei, n), nucleus)
    ring = np.where(ndi.distance_transform_edt(nuclei == 0) > 2, cells, 0)
    cytoplasm = label_means(reporter, ring, n)
    cytoplasm = np.where(np.isnan(cytoplasm), label_means(reporter, np.where(nuclei > 0, 0, cells), n), cytoplasm)
    return np.where(cytoplasm > 0, nucleus / cytoplasm, np.nan)
