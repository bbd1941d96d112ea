"""A semi-real two-condition translocation data set: real nuclei, a painted reporter, ground truth for both.

    python benchmarks/semireal.py --out /tmp/semireal [--train 100 --held-out 24]

The DNA channel is a real fluorescence image of nuclei (stardist's `data/images/img2d.tif`, which ships in the
stardist wheel on PyPI with its hand-annotated masks `mask2d.tif`); the reporter is painted on the annotated nuclei
as the simulator paints its translocation phenotype (cytoplasmic untreated, nuclear under TNFa, with non-responders
and spontaneously active cells), so the textures, shapes and crowding of the nuclei are real and the phenotype's
truth is known. Training images come from the left three quarters of the image, held-out ones from the right
quarter, so no held-out nucleus was seen in training.

Written like `phendiff simulate`: OUT/train/<condition>/*.tif, OUT/held_out/<condition>/*.tif and
OUT/held_out_truth/ (truth.json, <stem>_nuclei.tif and <stem>_cells.tif), which translation_frontier.py and
calibration_rule.py read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, relabel_sequential
from skimage.transform import resize

from napari_phendiff.core.simulate import PHENOTYPES

WHEEL = "stardist==0.9.2"
IMAGE, MASK = "stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"
SIZE = 64  # field side written, px
ZOOM = 0.5  # real nuclei are ~24 px across; at 0.5 they are ~12 px, cells ~22 px (the demo's 20)
HELD_OUT_FROM = 384  # native columns >= this are held out
CYTOPLASM_PX = 5  # cells = nuclei grown by this many px (at the written scale)


def real_image(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real nuclei image and its annotated masks (the wheel is downloaded once into `cache`)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("stardist-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), WHEEL], check=True
        )
        wheels = sorted(cache.glob("stardist-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        with wheel.open(IMAGE) as f:
            image = tifffile.imread(f).astype(np.float32)
        with wheel.open(MASK) as f:
            mask = tifffile.imread(f).astype(np.int32)
    return image, mask


def field(
    image: np.ndarray, mask: np.ndarray, columns: tuple[int, int], treated: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (2, SIZE, SIZE) uint16 field (DNA, reporter) cut from `columns` of the real image, with its nuclei and
    cells. The same rng state gives the same cut and cells in both conditions (a counterfactual pair)."""
    side = min(int(round(SIZE / rng.uniform(ZOOM * 0.9, ZOOM * 1.1))), columns[1] - columns[0])
    y = int(rng.integers(0, image.shape[0] - side + 1))
    x = int(rng.integers(columns[0], columns[1] - side + 1))
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))

    def cut(a: np.ndarray) -> np.ndarray:
        turned = np.rot90(a[y : y + side, x : x + side], turns)
        return turned[:, ::-1] if flip else turned

    dna = resize(cut(image), (SIZE, SIZE), order=1, anti_aliasing=True, preserve_range=True)
    nuclei = resize(cut(mask), (SIZE, SIZE), order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
    nuclei = relabel_sequential(nuclei)[0]
    cells = expand_labels(nuclei, CYTOPLASM_PX)
    n = int(nuclei.max())
    # the simulator's translocation ratios (core/simulate/), drawn for both conditions so a pair shares its cells
    responder = rng.uniform(0, 1, n) >= 0.06
    active = rng.uniform(0, 1, n) < 0.03
    treated_ratio = np.where(responder, rng.lognormal(np.log(1.6), 0.14, n), rng.lognormal(np.log(0.55), 0.25, n))
    untreated_ratio = np.where(active, rng.lognormal(np.log(0.95), 0.2, n), rng.lognormal(np.log(0.37), 0.13, n))
    ratio = treated_ratio if treated else untreated_ratio
    expression = 900 * rng.lognormal(0, 0.3, n)
    cytoplasm = np.concatenate([[0.0], expression])
    nucleus = np.concatenate([[0.0], ratio * expression])
    distance = ndi.distance_transform_edt(nuclei == 0)
    thinning = np.clip(1.2 - distance / (CYTOPLASM_PX + 1), 0.3, 1.0)  # cytoplasm thins towards the cell's edge
    reporter = np.where(nuclei > 0, nucleus[nuclei], cytoplasm[cells] * thinning)
    texture = ndi.gaussian_filter(rng.normal(0, 1, reporter.shape), 1.0)
    reporter = reporter * np.clip(1 + 0.35 * texture / texture.std(), 0.5, None)
    reporter = ndi.gaussian_filter(reporter, rng.uniform(0.8, 1.2)) + rng.uniform(20, 60)
    reporter = rng.poisson(np.clip(reporter, 0, None)) + rng.normal(0, 3, reporter.shape)
    dna = dna * (2000 / 120) * rng.lognormal(0, 0.15)  # real counts (1st-99th percentile 8-116) to a camera's range
    image_out = np.stack([dna, reporter]) + 150
    return np.clip(np.round(image_out), 0, 65535).astype(np.uint16), nuclei, cells


def write_set(out: Path, image, mask, columns, n: int, seed: int, truth: Path | None) -> None:
    pheno = PHENOTYPES["translocation"]
    for c, condition in enumerate(pheno.conditions):
        (out / condition).mkdir(parents=True, exist_ok=True)
        if truth:
            (truth / condition).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, c, i])
            data, nuclei, cells = field(image, mask, columns, treated=c == 1, rng=rng)
            stem = f"{condition}_{i:04d}"
            tifffile.imwrite(
                out / condition / f"{stem}.tif",
                data,
                imagej=True,
                metadata={"axes": "CYX", "Labels": list(pheno.channels), "mode": "composite"},
            )
            if truth:
                tifffile.imwrite(truth / condition / f"{stem}_nuclei.tif", nuclei.astype(np.uint16))
                tifffile.imwrite(truth / condition / f"{stem}_cells.tif", cells.astype(np.uint16))
    if truth:
        (truth / "truth.json").write_text(
            json.dumps(
                {
                    "phenotype": "translocation",
                    "conditions": list(pheno.conditions),
                    "channels": list(pheno.channels),
                    "source": f"{WHEEL} {IMAGE} (DNA) and {MASK} (nuclei); reporter painted (benchmarks/semireal.py)",
                    "size": SIZE,
                    "seed": seed,
                    "n_per_class": n,
                },
                indent=2,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=100, help="training images per condition")
    parser.add_argument("--held-out", type=int, default=24, help="held-out images per condition")
    parser.add_argument("--wheels", type=Path, default=Path("/tmp/wheels"))
    parser.add_argument(
        "--held-out-only",
        metavar="NAME",
        help="write only another held-out set, OUT/NAME (fresh cuts and cells of the held-out columns, seed "
        "--seed), to check a choice made on the first one",
    )
    parser.add_argument("--seed", type=int, default=1, help="the held-out set's seed (training uses 0)")
    args = parser.parse_args()
    image, mask = real_image(args.wheels)
    width = image.shape[1]
    held_out = args.held_out_only or "held_out"
    if not args.held_out_only:
        write_set(args.out / "train", image, mask, (0, HELD_OUT_FROM), args.train, 0, None)
    write_set(
        args.out / held_out,
        image,
        mask,
        (HELD_OUT_FROM, width),
        args.held_out,
        args.seed,
        args.out / f"{held_out}_truth",
    )
    print(f"written: {args.out}/{held_out} ({args.held_out} per condition, truth in {held_out}_truth)")


if __name__ == "__main__":
    main()
