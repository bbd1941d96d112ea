"""Does reveal (core/reveal.py) find where and in which cells the phenotype moved? Scored on the simulator's truth.

    python benchmarks/reveal_cells.py [--cases demo:demo:translocation:96:20 ...] [--fields 20]

A case is NAME:CHECKPOINT:PHENOTYPE:FIELD_PX:CELL_DIAMETER. For each direction, held-out fields (seeds 1000...) are
translated at the checkpoint's own setting; each field's true counterfactual (same seed, other condition: the same
cells) gives the truth:
- *true change captured*: the share of the true change (|counterfactual - original|, per channel over its range,
  summed: core/reveal.py's difference map on the truth) inside the cells that lies within the reveal masks, beside the
  same for the raw difference |translated - original| thresholded over the field at the masks' total area, and the
  share of the cells' area the masks cover (what a random mask of that area captures on average);
- *ranking*: whether the score puts the cells the translation truly moved (their phenotype value closer to the real
  target's median than to the source's) before those it did not: the area under the ROC curve (0.5: chance).
Results go to docs/benchmarks.md (section reveal_cells) and a figure to docs/images/reveal_cells.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from matplotlib.figure import Figure

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.reveal import difference_map, reveal
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field
from napari_phendiff.core.translate import translate

from report import hardware, save_figure, table, write_section

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive outranks a negative (ties count half); nan without both."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def direction(
    model, phenotype: str, source: str, target: str, fields: int, size: int, diameter: float, example: dict | None
) -> dict:
    captured, raw, area, scores, moved, true_changes = [], [], [], [], [], []
    for seed in range(1000, 1000 + fields):
        field = simulate_field(phenotype, source, size, seed=seed, cell_diameter=diameter)
        truth = simulate_field(phenotype, target, size, seed=seed, cell_diameter=diameter)
        translated = translate(model, field.image, source, target)
        found = reveal(field.image, translated, model.channel_names, nuclei=field.nuclei, cells=field.cells)
        inside = field.cells > 0
        true_change = difference_map(field.image, truth.image) * inside
        total = true_change.sum()
        if total <= 0 or not found.rows:
            continue
        captured.append(true_change[found.mask].sum() / total)
        changed = difference_map(field.image, translated) * inside
        k = int(found.mask.sum())
        top = np.zeros(inside.size, bool)
        if k:
            top[np.argsort(-changed.ravel())[:k]] = True
        raw.append(true_change.ravel()[top].sum() / total)
        area.append(found.mask.sum() / inside.sum())
        values = measure_phenotype(translated, field.nuclei, field.cells, phenotype)
        start = measure_phenotype(field.image, field.nuclei, field.cells, phenotype)
        real = measure_phenotype(truth.image, truth.nuclei, truth.cells, phenotype)
        true = {
            row["cell"]: row["change"]
            for row in reveal(
                field.image, truth.image, model.channel_names, nuclei=field.nuclei, cells=field.cells
            ).rows
        }
        for row in found.rows:
            i = row["cell"] - 1
            if np.isfinite(values[i]):
                scores.append(row["reveal_score"])
                true_changes.append(true[row["cell"]])
                moved.append(abs(values[i] - np.nanmedian(real)) < abs(values[i] - np.nanmedian(start)))
        if example is not None and not example:
            example.update(
                original=field.image, translated=translated, truth=truth.image, mask=found.mask, cells=field.cells
            )
    scores, moved = np.asarray(scores), np.asarray(moved, bool)
    return {
        "fields": len(captured),
        "cells": len(scores),
        "moved": float(moved.mean()) if len(moved) else np.nan,
        "area": float(np.mean(area)),
        "captured": float(np.mean(captured)),
        "raw": float(np.mean(raw)),
        "auc": roc_auc(scores, moved),
        "unmoved": int((~moved).sum()),
        "rho": float(spearmanr(scores, true_changes).statistic) if len(scores) > 2 else np.nan,
    }


def figure(example: dict, channel: int, title: str) -> Path:
    fig = Figure(figsize=(12, 3.2))
    panels = [
        ("original", example["original"][channel]),
        ("translated", example["translated"][channel]),
        ("true counterfactual", example["truth"][channel]),
        (
            "|translated - original|",
            np.abs(example["translated"][channel].astype(float) - example["original"][channel]),
        ),
        ("reveal masks", np.ma.masked_equal(np.where(example["mask"], example["cells"], 0), 0)),
    ]
    for i, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(image, cmap="tab20" if name == "reveal masks" else "magma", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, IMAGES / "reveal_cells.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["demo:demo:translocation:96:20"])
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, example = [], {}
    for case in args.cases:
        name, checkpoint, phenotype, size, diameter = case.split(":")
        model = load_checkpoint(checkpoint, device="cpu")
        conditions = PHENOTYPES[phenotype].conditions
        for source, target in (conditions, conditions[::-1]):
            got = direction(
                model, phenotype, source, target, args.fields, int(size), float(diameter), example if not rows else None
            )
            rows.append(
                [
                    name,
                    f"{source} → {target}",
                    got["fields"],
                    got["cells"],
                    got["moved"],
                    got["area"],
                    got["captured"],
                    got["raw"],
                    got["rho"],
                    f"{got['auc']:.2f} ({got['unmoved']} not moved)",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "case",
        "direction",
        "fields",
        "cells",
        "moved (truth)",
        "mask area (share of cells)",
        "true change captured: reveal",
        "raw difference, same area",
        "score vs true change (Spearman)",
        "score ROC AUC, moved vs not",
    ]
    markdown = f"""## Reveal on the simulator's truth (`benchmarks/reveal_cells.py`)

Each cell's change mask and score (core/reveal.py) on held-out simulated fields translated at the checkpoint's own
setting, scored against each field's true counterfactual (the same cells in the other condition). *True change
captured*: the share of the true change inside the cells that the masks hold; beside it the raw difference
thresholded over the field at the same total area, and the area itself (what a random mask of that area holds on
average). *Score ROC AUC*: how well the score puts the cells that truly moved before those that did not (0.5:
chance; few cells not moved make it noisy); *score vs true change*: the rank correlation of each cell's score with how much its measurements differ
between the cell and its true counterfactual (core/reveal.py's change, on the truth). Hardware: {hardware()}.

{table(header, rows)}

![reveal](images/reveal_cells.png)
"""
    print(markdown)
    if example:
        first = args.cases[0].split(":")
        channel = len(PHENOTYPES[first[2]].channels) - 1
        figure(
            example,
            channel,
            f"{first[0]}: {' → '.join(PHENOTYPES[first[2]].conditions)}, channel "
            f"{PHENOTYPES[first[2]].channels[channel]}",
        )
    if not args.no_write:
        write_section("reveal_cells", markdown)


if __name__ == "__main__":
    main()
