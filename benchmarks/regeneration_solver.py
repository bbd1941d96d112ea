"""Fewer network calls in regeneration: does DPM-Solver++ on part of the DDIM grid keep the translation?

    python benchmarks/regeneration_solver.py [--fields 8] [--shares 0.5 0.67 0.8] [--size 96]

A translation inverts k = strength x steps DDIM steps (one network call each) and regenerates over the same k levels
with guidance (two branches per call), so regeneration is two thirds of its cost. Here regeneration runs DPM-Solver++
(2M) (Lu et al. 2022; diffusers' DPMSolverMultistepScheduler, "dpmsolver++", final step to the clean image) over a
share of the grid's levels (evenly spaced from the inversion's top level down to level 0), the kept DNA replaced by
the inversion's state at every level it visits, as the DDIM walk does. The demo model at its own settings, held-out
simulated fields (seeds 1000...) of both directions, float32; ground-truth transfer as reveal_cells.py counts it
(each cell's phenotype closer to the real target's median than to the source's) and the reporter's mean absolute
difference from the DDIM translation. Not part of the product: measured to decide (docs/benchmarks.md, section
regeneration_solver).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from napari_phendiff.core import translate as translate_module
from napari_phendiff.core import walk
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.options import grid_steps
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section


def dpm_generate(model, start, condition, steps, *, strength, guidance, negative, interval, dtype, keep, share, **_):
    """walk.generate's DDIM branch with DPM-Solver++(2M) over `share` of the levels (see the module's docstring)."""
    depth = grid_steps(steps, strength)
    kept = walk._kept_states(start, depth) if keep else []
    x, _ = start.start(depth)
    prediction = walk._guided(model, condition, x.shape[0], x.device, guidance, negative, interval, dtype)
    grid = walk._Grid(model.scheduler_config, steps, x.device)
    n = max(1, int(np.ceil(depth * share)))
    levels = sorted({int(round(v)) for v in np.linspace(depth - 1, 0, n)}, reverse=True)
    scheduler = DPMSolverMultistepScheduler.from_config(
        model.scheduler_config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    scheduler.set_timesteps(timesteps=[int(grid.timesteps[level]) for level in levels], device=x.device)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(prediction(x, t), t, x).prev_sample
        if keep:  # the state after k inversion steps lies at level k - 1; the last step ends clean (state 0)
            x[:, list(keep)] = kept[levels[i + 1] + 1 if i + 1 < len(levels) else 0][:, list(keep)]
        yield
    return x


def run(model, share: float | None, fields: int, size: int) -> dict:
    """Translate every held-out field of both directions with DDIM (share None) or DPM-Solver++ at `share`."""
    real_generate = walk.generate

    def generate(*args, **kwargs):
        if share is None:
            return real_generate(*args, **kwargs)
        return torch.inference_mode()(dpm_generate)(*args, share=share, **kwargs)

    translate_module.generate = generate
    calls, results = [0], {}
    real_predict = walk.predict

    def counted(*args, **kwargs):
        calls[0] += 1
        return real_predict(*args, **kwargs)

    walk.predict = counted
    try:
        phenotype = PHENOTYPES["translocation"]
        for source, target in (phenotype.conditions, phenotype.conditions[::-1]):
            moved, images, started = [], [], time.perf_counter()
            for seed in range(1000, 1000 + fields):
                field = simulate_field("translocation", source, size, seed=seed, cell_diameter=20.0)
                truth = simulate_field("translocation", target, size, seed=seed, cell_diameter=20.0)
                out = translate(model, field.image, source, target, precision="fp32")
                values = measure_phenotype(out, field.nuclei, field.cells, "translocation")
                real = measure_phenotype(truth.image, truth.nuclei, truth.cells, "translocation")
                start = measure_phenotype(field.image, field.nuclei, field.cells, "translocation")
                ok = np.isfinite(values)
                moved += list((np.abs(values - np.nanmedian(real)) < np.abs(values - np.nanmedian(start)))[ok])
                images.append(out)
            results[(source, target)] = {
                "transfer": float(np.mean(moved)),
                "images": images,
                "seconds": time.perf_counter() - started,
            }
    finally:
        translate_module.generate, walk.predict = real_generate, real_predict
    return {"calls": calls[0] / (2 * fields), "directions": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.67, 0.8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint("demo", device="cpu")
    ddim = run(model, None, args.fields, args.size)
    rows = []
    for share in [None, *args.shares]:
        got = ddim if share is None else run(model, share, args.fields, args.size)
        for direction, found in got["directions"].items():
            reference = ddim["directions"][direction]["images"]
            difference = np.mean([np.abs(a[1].astype(float) - b[1]).mean() for a, b in zip(found["images"], reference)])
            rows.append(
                [
                    "DDIM (the walk today)" if share is None else f"DPM-Solver++(2M), {share:g} of the levels",
                    f"{direction[0]} → {direction[1]}",
                    f"{got['calls']:.1f}",
                    f"{found['seconds'] / args.fields:.2f}",
                    f"{found['transfer']:.2f}",
                    f"{difference:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "regeneration",
        "direction",
        "network calls per field (a guided call: both branches in one batch)",
        "seconds per field",
        "transfer (truth)",
        "reporter |difference| from DDIM (counts)",
    ]
    markdown = f"""## Fewer network calls in regeneration (`benchmarks/regeneration_solver.py`)

The demo model at its own settings (untreated → TNFα strength 0.45, guidance 3; back 0.4, guidance 4; both against
the source, DNA kept, 20-step grid), {args.fields} held-out {args.size}-px fields per direction, float32,
{args.threads} thread(s). Regeneration by DPM-Solver++(2M) over a share of the grid's levels instead of DDIM over all
of them; inversion unchanged. Hardware: {hardware()}.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section("regeneration_solver", markdown)


if __name__ == "__main__":
    main()
