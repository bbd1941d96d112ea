"""Fewer whole network calls in regeneration: does reusing the UNet's deep features between steps keep the translation?

    python benchmarks/deep_cache.py [--fields 20] [--every 1 2 3 4] [--size 96] [--threads 2]

A translation inverts k = strength x steps DDIM steps and regenerates over the same k levels with guidance (two
branches per call), so regeneration is two thirds of its cost. With `deep_cache N` (DeepCache, Ma et al. 2024;
core/models/deep_features.py) regeneration runs the whole UNet on its first step and every N-th after it, and only
the outermost level (input convolution, first down block, last up block) on the steps between, on the deep features
of the last whole step; inversion is unchanged. The demo model at its own calibrated settings, held-out simulated
fields (seeds 1000...) of both directions, the translation as a user runs it (precision auto). Per arm and direction:
network calls per field (whole / outermost level only), seconds per field, ground-truth transfer (each cell's
phenotype closer to the real target's median than to the source's, as reveal_cells.py counts it), the reporter's mean
absolute error against the true counterfactual and its mean absolute difference from N = 1 (in counts). The kept DNA
makes nuclear identity 1.0 in every arm, so it is not a column. Not a test: measured to choose the default
(docs/benchmarks.md, section deep_cache).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_phendiff.core import walk
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.models.deep_features import DeepFeatureCache
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section

REPORTER = 1  # the demo's channels: DNA, reporter


def run(model, every: int, fields: int, size: int) -> dict:
    """Translate the held-out fields of both directions with deep_cache `every`; count the network calls."""
    caches: list[DeepFeatureCache] = []
    calls = [0]
    real_init, real_predict = DeepFeatureCache.__init__, walk.predict

    def init(self, unet):
        real_init(self, unet)
        caches.append(self)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real_predict(*args, **kwargs)

    DeepFeatureCache.__init__, walk.predict = init, counted  # type: ignore[method-assign]
    results = {}
    try:
        phenotype = PHENOTYPES["translocation"]
        for source, target in (phenotype.conditions, phenotype.conditions[::-1]):
            calls[0], caches[:] = 0, []
            moved, errors, images, started = [], [], [], time.perf_counter()
            for seed in range(1000, 1000 + fields):
                field = simulate_field("translocation", source, size, seed=seed, cell_diameter=20.0)
                truth = simulate_field("translocation", target, size, seed=seed, cell_diameter=20.0)
                out = translate(model, field.image, source, target, deep_cache=every)
                values = measure_phenotype(out, field.nuclei, field.cells, "translocation")
                real = measure_phenotype(truth.image, truth.nuclei, truth.cells, "translocation")
                start = measure_phenotype(field.image, field.nuclei, field.cells, "translocation")
                ok = np.isfinite(values)
                moved += list((np.abs(values - np.nanmedian(real)) < np.abs(values - np.nanmedian(start)))[ok])
                errors.append(np.abs(out[REPORTER].astype(float) - truth.image[REPORTER]).mean())
                images.append(out)
            reused = sum(cache.reused_calls for cache in caches)
            results[(source, target)] = {
                "transfer": float(np.mean(moved)),
                "error": float(np.mean(errors)),
                "images": images,
                "seconds": (time.perf_counter() - started) / fields,
                "whole": (calls[0] - reused) / fields,
                "reused": reused / fields,
            }
    finally:
        DeepFeatureCache.__init__, walk.predict = real_init, real_predict  # type: ignore[method-assign]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint("demo", device="cpu")
    runs = {every: run(model, every, args.fields, args.size) for every in sorted({1, *args.every})}
    rows = []
    for every, directions in runs.items():
        for direction, found in directions.items():
            reference = runs[1][direction]["images"]
            difference = np.mean(
                [np.abs(a[REPORTER].astype(float) - b[REPORTER]).mean() for a, b in zip(found["images"], reference)]
            )
            rows.append(
                [
                    "off (the walk today)" if every == 1 else f"every {every}",
                    f"{direction[0]} → {direction[1]}",
                    f"{found['whole']:.1f} / {found['reused']:.1f}",
                    f"{found['seconds']:.2f}",
                    f"{found['seconds'] / runs[1][direction]['seconds']:.2f}",
                    f"{found['transfer']:.2f}",
                    f"{found['error']:.1f}",
                    f"{difference:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "deep features (whole network every N-th regeneration step)",
        "direction",
        "network calls per field: whole / outermost level only",
        "seconds per field",
        "time vs off",
        "transfer (truth)",
        "reporter |error| vs truth (counts)",
        "reporter |difference| from off (counts)",
    ]
    markdown = f"""## Reusing deep features between regeneration steps (`benchmarks/deep_cache.py`)

The demo model at its own calibrated settings (untreated → TNFα strength 0.45, guidance 3; back 0.4, guidance 4; both
against the source, DNA kept, 20-step grid), {args.fields} held-out {args.size}-px fields per direction (seeds
1000...), precision auto, {args.threads} thread(s). Regeneration runs the whole UNet every N-th step and only its
outermost level between (DeepCache); inversion unchanged. Hardware: {hardware()}.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section("deep_cache", markdown)


if __name__ == "__main__":
    main()
