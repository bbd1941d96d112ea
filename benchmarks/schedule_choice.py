"""Choose PhenDiff's DDIM defaults by measuring them on the simulator (translocation phenotype).

    python benchmarks/schedule_choice.py --work /tmp/schedule [--steps 800]

Training-time choices (prediction type x beta schedule) get one `tiny` model each, trained with the same budget
and seed. Inference-time choices (timestep spacing x number of DDIM steps) are then measured on held-out fields:
- reconstruction: RMSE of source -> source translation (normalised units, the data span about [-1, 1]);
- transfer: share of cells whose nuclear/cytoplasmic reporter ratio, measured with the source masks, moved to the
  other condition (1 = all, 0 = none);
- paired RMSE: translated image vs the same field simulated in the target condition (the simulator pairs conditions
  by seed: same cells, same DNA), i.e. distance to the ground-truth translation; camera noise sets its floor.
Both directions (untreated -> TNFa, TNFa -> untreated) are averaged. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.measure import rmse, transfer_rate
from napari_phendiff.core.simulate import measure_phenotype, simulate_dataset, simulate_field
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.training.run import train
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section

TRAINING_CHOICES = {
    "epsilon + linear": dict(prediction_type="epsilon", beta_schedule="linear"),
    "epsilon + cosine": dict(prediction_type="epsilon", beta_schedule="squaredcos_cap_v2"),
    "v + cosine": dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"),
}
SPACINGS = ("leading", "trailing")
STEP_COUNTS = (10, 20, 50, 100)
SIZE, CELL, FIELDS = 32, 16.0, 12
CONDITIONS = ("untreated", "TNFa")


def held_out_fields():
    """Paired fields: index i of both conditions shares its cells (same seed)."""
    return {
        c: [simulate_field("translocation", c, SIZE, seed=500_000 + i, cell_diameter=CELL) for i in range(FIELDS)]
        for c in CONDITIONS
    }


def evaluate(model, fields, spacing: str, steps: int) -> dict:
    model.scheduler_config = {**model.scheduler_config, "timestep_spacing": spacing}
    values = {
        c: np.concatenate([measure_phenotype(f.image, f.nuclei, f.cells, "translocation") for f in fields[c]])
        for c in CONDITIONS
    }
    scores = {"reconstruction": [], "transfer": [], "paired": []}
    for source, target in (CONDITIONS, CONDITIONS[::-1]):
        stack = np.stack([f.image for f in fields[source]])
        out = translate(model, stack, source, [source, target], steps=steps)
        norm = model.normalization.forward
        scores["reconstruction"].append(rmse(norm(out[source]), norm(stack)))
        moved = np.concatenate(
            [measure_phenotype(im, f.nuclei, f.cells, "translocation") for im, f in zip(out[target], fields[source])]
        )
        scores["transfer"].append(transfer_rate(moved, values[source], values[target]))
        truth = np.stack([f.image for f in fields[target]])
        scores["paired"].append(rmse(norm(out[target]), norm(truth)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=800, help="training steps per model")
    args = parser.parse_args()
    data = args.work / "cells"
    if not data.exists():
        simulate_dataset(data, "translocation", 100, 64, seed=0, cell_diameter=CELL)
    fields = held_out_fields()
    rows, started = [], time.time()
    for name, schedule in TRAINING_CHOICES.items():
        out = args.work / name.replace(" + ", "-")
        if not (out / "phendiff.json").exists():
            t0 = time.time()
            train(
                TrainConfig(
                    data=data,
                    out=out,
                    preset="tiny",
                    image_size=SIZE,
                    steps=args.steps,
                    batch_size=16,
                    lr=3e-4,
                    checkpoint_every=args.steps,
                    device="cpu",
                    schedule=schedule,
                )
            )
            print(f"{name}: trained {args.steps} steps in {time.time() - t0:.0f} s", flush=True)
        model = load_checkpoint(out, device="cpu")
        for spacing in SPACINGS:
            for steps in STEP_COUNTS:
                score = evaluate(model, fields, spacing, steps)
                rows.append([name, spacing, steps, score["reconstruction"], score["transfer"], score["paired"]])
                print(rows[-1], flush=True)
    header = ["training schedule", "spacing", "DDIM steps", "reconstruction RMSE", "transfer", "paired RMSE"]
    print(table(header, rows))
    write_section(
        "schedule_choice",
        f"""## Choice of the DDIM schedule (`benchmarks/schedule_choice.py`)

Translocation phenotype, `tiny` models trained {args.steps} steps (batch 16, {SIZE} px crops, same seed) per
training schedule; {FIELDS} held-out paired fields of {SIZE} px per condition, both directions averaged.
Reconstruction: RMSE of source -> source in normalised units (data span about [-1, 1]). Transfer: share of cells
whose reporter ratio moved to the other condition. Paired RMSE: distance to the same cells simulated in the target
condition (camera noise sets its floor). Hardware: {hardware()}; total {time.time() - started:.0f} s.

{table(header, rows)}
""",
    )


if __name__ == "__main__":
    main()
