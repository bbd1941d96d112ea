"""A simulated field and its phenotypes: each phenotype (a module of this package) owns how its channels are
painted and how its per-cell value is measured; this module puts a field together (layout, stains, optics, camera)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .actin import measure as actin_measure, paint as actin_paint
from .golgi import measure as golgi_measure, paint as golgi_paint
from .translocation import measure as translocation_measure, paint as translocation_paint
from .layout import make_layout
from .paint import apply_optics, camera, paint_dna


@dataclass(frozen=True)
class Phenotype:
    """One simulated assay: two conditions, the channels imaged, and the per-cell value that tells them apart."""

    name: str
    conditions: tuple[str, str]
    channels: tuple[str, ...]
    measure_name: str
    description: str
    paint: Callable  # (rng, layout, treated) -> the phenotype channels' signal, in channel order after DNA
    measure: Callable  # (channels by name, nuclei, cells, n) -> per-cell value (index = label - 1)
    rounds_when_treated: bool = False  # the treatment leaves fewer, smaller, rounder cells


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
            translocation_paint,
            lambda c, nuclei, cells, n: translocation_measure(c["reporter"], nuclei, cells, n),
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
            golgi_paint,
            lambda c, nuclei, cells, n: golgi_measure(c["Golgi"], nuclei, cells, n),
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
            actin_paint,
            lambda c, nuclei, cells, n: actin_measure(c["actin"], cells, n),
            rounds_when_treated=True,
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
    size = check_geometry(size, cell_diameter)
    scene_rng, stain_rng, noise_rng = random_streams(seed)

    layout = make_layout(scene_rng, size, cell_diameter, rounded=treated and pheno.rounds_when_treated)
    signal = np.stack([paint_dna(scene_rng, layout), *pheno.paint(stain_rng, layout, treated)])
    clean = apply_optics(scene_rng, signal)
    image = camera(scene_rng, noise_rng, clean)
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
        return pheno.measure(channel, nuclei, cells, n_cells)


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


def check_geometry(size: int, cell_diameter: float) -> int:
    """The image side as an int, or a ConfigError if the field or the cells cannot be drawn at that size."""
    if isinstance(size, bool) or int(size) != size or size < 32:
        raise ConfigError(f"size must be a whole number of pixels >= 32, got {size!r}.")
    if not 8 <= cell_diameter <= size:
        raise ConfigError(f"cell_diameter must be between 8 px and the image size ({size} px), got {cell_diameter}.")
    return int(size)


def random_streams(seed: int | np.random.Generator) -> list[np.random.Generator]:
    """Independent generators for the scene (layout, DNA, optics), the phenotype stains and the camera noise."""
    if isinstance(seed, np.random.Generator):
        sequence = np.random.SeedSequence(seed.integers(0, 2**63, size=4))
    else:
        sequence = np.random.SeedSequence(seed)
    return [np.random.default_rng(child) for child in sequence.spawn(3)]
