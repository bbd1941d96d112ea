"""Translation quality vs number of DDIM steps, on the simulator with ground truth (docs/benchmarks.md, a plot).

    python benchmarks/steps_curve.py [--checkpoint demo] [--steps 10 20 25 50 100 200] [--fields 6]

For each step count (the same count for inversion and generation), with the checkpoint's own simulator settings:
- transfer: share of cells whose phenotype value moved closer to the target condition (ground-truth masks), both
  directions averaged;
- paired RMSE: translated image vs the same field simulated in the target condition (the simulator pairs
  conditions by seed), normalised units;
- reconstruction RMSE: source -> source through the same inversion (how exactly inversion + generation return the
  image).
Also the largest step count's quality within 5% is reported as the smallest adequate default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.measure import rmse, transfer_rate
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field
from napari_phendiff.core.translate import translate

from report import hardware, save_figure, table, write_section

PLOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "steps_curve.png"
FIRST_SEED = 2_000_000  # fields no model was trained on


def measure(model, steps: int, fields: dict, values: dict, conditions: tuple[str, str]) -> dict:
    norm = model.normalization.forward
    transfer, paired, recon = [], [], []
    for source, target in (conditions, conditions[::-1]):
        stack = np.stack([f.image for f in fields[source]])
        out = translate(model, stack, source, [target, source], steps=steps, seed=0, tiles=False)
        moved = np.concatenate(
            [
                measure_phenotype(im, f.nuclei, f.cells, model_phenotype(model))
                for im, f in zip(out[target], fields[source])
            ]
        )
        transfer.append(transfer_rate(moved, values[source], values[target]))
        paired.append(rmse(norm(out[target]), norm(np.stack([f.image for f in fields[target]]))))
        recon.append(rmse(norm(out[source]), norm(stack)))
    return {"transfer": float(np.mean(transfer)), "paired": float(np.mean(paired)), "recon": float(np.mean(recon))}


def model_phenotype(model) -> str:
    return model.manifest["metadata"]["simulator"]["phenotype"]


def plot(rows: list[list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r[0] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, column, label in zip(
        axes,
        (1, 2, 3),
        ("phenotype transfer (higher is better)", "paired RMSE to ground truth (lower)", "reconstruction RMSE (lower)"),
    ):
        ax.plot(steps, [r[column] for r in rows], "o-")
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_xlabel("DDIM steps (each way)")
        ax.set_title(label, fontsize=9)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 25, 50, 100, 200])
    parser.add_argument("--fields", type=int, default=6)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    sim = model.manifest["metadata"]["simulator"]
    conditions = PHENOTYPES[sim["phenotype"]].conditions
    # paired fields: the same seed gives the same cells in both conditions
    fields = {
        c: [
            simulate_field(sim["phenotype"], c, sim["size"], seed=FIRST_SEED + i, cell_diameter=sim["cell_diameter"])
            for i in range(args.fields)
        ]
        for c in conditions
    }
    values = {
        c: np.concatenate([measure_phenotype(f.image, f.nuclei, f.cells, sim["phenotype"]) for f in fields[c]])
        for c in conditions
    }
    rows = []
    for steps in args.steps:
        started = time.perf_counter()
        r = measure(model, steps, fields, values, conditions)
        rows.append([steps, r["transfer"], r["paired"], r["recon"], time.perf_counter() - started])
        print(rows[-1], flush=True)
    best = rows[-1]
    adequate = next(r[0] for r in rows if r[1] >= 0.95 * best[1] and r[2] <= 1.05 * best[2])
    header = ["steps each way", "transfer", "paired RMSE", "reconstruction RMSE", "seconds (all fields)"]
    markdown = f"""## Quality vs DDIM steps (`benchmarks/steps_curve.py`)

Checkpoint `{args.checkpoint}` ({sim["phenotype"]}), {args.fields} paired simulated fields per condition
({sim["size"]} px, each translated whole: tiles change nothing here, see large_fields), both directions averaged,
seed 0. Hardware: {hardware()}.

{table(header, rows)}

The smallest step count within 5% of {best[0]} steps on both transfer and paired RMSE: **{adequate}**.

![quality vs steps](images/steps_curve.png)
"""
    print(markdown)
    if not args.no_write:
        plot(rows, PLOT)
        write_section("steps_curve", markdown)


if __name__ == "__main__":
    main()
