"""Writing a simulated two-condition data set: images in one subfolder per condition, the ground truth beside it."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile

from ..errors import ConfigError, DataError
from .field import Phenotype, SimulatedField, check_geometry, get_phenotype, simulate_field
from .measures import label_means

TRUTH_COLUMNS = (
    "file",
    "condition",
    "cell",
    "phenotype_value",
    "nucleus_area",
    "cell_area",
    "centroid_y",
    "centroid_x",
)


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
    size = check_geometry(size, cell_diameter)
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
        write_dataset(
            staging / "images", staging / "truth", pheno, int(n_per_class), size, seed, cell_diameter, progress
        )
        # truth first: `out` appearing is the sign that everything is there
        for staged, final in ((staging / "truth", truth_dir), (staging / "images", out)):
            if final.exists():
                final.rmdir()
            staged.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_dataset(
    images: Path,
    truth: Path,
    pheno: Phenotype,
    n_per_class: int,
    size: int,
    seed: int,
    cell_diameter: float,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Write images and ground truth into two fresh folders (the caller renames them into place)."""
    rows, done, total = [], 0, 2 * n_per_class
    for condition_idx, condition in enumerate(pheno.conditions):
        (images / condition).mkdir(parents=True)
        (truth / condition).mkdir(parents=True)
        for i in range(n_per_class):
            rng = np.random.default_rng(np.random.SeedSequence([seed, condition_idx, i]))
            field = simulate_field(pheno.name, condition_idx, size, seed=rng, cell_diameter=cell_diameter)
            stem = f"{condition}_{i:04d}"
            tifffile.imwrite(
                images / condition / f"{stem}.tif",
                field.image,
                imagej=True,
                metadata={"axes": "CYX", "Labels": list(pheno.channels), "mode": "composite"},
            )
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
    centroid_y, centroid_x = label_means(yy, field.nuclei, n), label_means(xx, field.nuclei, n)
    return [
        (
            file,
            condition,
            i + 1,
            f"{field.phenotype_values[i]:.6g}",
            int(nucleus_area[i]),
            int(cell_area[i]),
            f"{centroid_y[i]:.2f}",
            f"{centroid_x[i]:.2f}",
        )
        for i in range(n)
    ]
