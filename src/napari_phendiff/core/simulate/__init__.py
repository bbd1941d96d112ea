"""Simulated two-condition fluorescence images of cells, with ground truth.

No public data set pairs two experimental conditions with per-cell ground truth, so napari-phendiff ships this
procedural simulator. It trains the demo model, feeds the training/translation tests and scores translations.

A field is painted in four steps (field.py puts them together):

1. *layout* (layout.py): nuclei scattered without overlap, each with a star-shaped cell territory around it;
   neighbours compete for pixels so cells touch but never overlap (like a Voronoi diagram weighted by cell size);
2. *stains*: the DNA channel (paint.py: chromatin texture, nucleoli, G1/G2 DNA content) and the phenotype channels
   (one module per phenotype, which also measures its per-cell value);
3. *optics* (paint.py): a Gaussian point spread function and uneven illumination (vignetting) give the *clean* image;
4. *camera* (paint.py): offset, smooth background haze, Poisson shot noise and Gaussian read noise, rounded to uint16.

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

from .dataset import TRUTH_COLUMNS, simulate_dataset
from .field import (
    PHENOTYPES,
    Phenotype,
    SimulatedField,
    condition_index,
    get_phenotype,
    measure_phenotype,
    simulate_field,
)

__all__ = [
    "PHENOTYPES",
    "TRUTH_COLUMNS",
    "Phenotype",
    "SimulatedField",
    "condition_index",
    "get_phenotype",
    "measure_phenotype",
    "simulate_dataset",
    "simulate_field",
]
