"""Does reveal (core/reveal.py) find where and in which cells the phenotype moved? Scored on the simulator's truth.

    python benchmarks/reveal_cells.py [--cases demo:demo:translocation:96:20 ...] [--fields 20] [--classifier]

A case is NAME:CHECKPOINT:PHENOTYPE:FIELD_PX:CELL_DIAMETER; CHECKPOINT "tiny1200" is a PhenDiff `tiny` model trained
here (in --work, reused) as benchmarks/compare_methods.py trains one: 100 simulated images per condition (seed 0,
64 px, cells of CELL_DIAMETER px), 48-px crops, batch 8, 1200 steps. For each direction, held-out fields (seeds 1000...) are
translated at the checkpoint's own setting; each field's true counterfactual (same seed, other condition: the same
cells) gives the truth:
- *true change captured*: the share of the true change (|counterfactual - original|, per channel over its range,
  summed: core/reveal.py's difference map on the truth) inside the cells that lies within the reveal masks, beside the
  same for the raw difference |translated - original| thresholded over the field at the masks' total area, and the
  share of the cells' area the masks cover (what a random mask of that area captures on average);
- *ranking*: whether the score puts the cells the translation truly moved (their phenotype value closer to the real
  target's median than to the source's) before those it did not: the area under the ROC curve (0.5: chance).
With --classifier, reveal is also scored as QuAC scores: a condition classifier (core/features.py, as calibrate trains
it) learns the phenotype's two conditions on 16 real simulated fields each (seeds 2000...), and reveal's masks must
also carry most of the change of its P(target) (core/reveal_classifier.py); reported: the share of each cell's
classifier change its mask keeps (cells whose paste moved P(target) by 0.05 or more), and the conversion rate (share
of fields the classifier calls the target) of the translations, of the originals with only the masks pasted, and of
the originals.
Results go to docs/benchmarks.md (section reveal_cells, or reveal_cells_classifier) and a figure per case (both
directions) to docs/images/reveal_cells[_classifier]_<case>.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from matplotlib.figure import Figure

from napari_phendiff.core.features import train_classifier
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


def trained_here(phenotype: str, diameter: float, work: Path) -> Path:
    """The `tiny1200` checkpoint of a phenotype (trained once into `work`)."""
    from napari_phendiff.core.options import TrainConfig
    from napari_phendiff.core.simulate import simulate_dataset
    from napari_phendiff.core.training.run import train

    out = work / f"{phenotype}_tiny1200"
    if (out / "phendiff.json").is_file():
        return out
    data = work / f"{phenotype}_train"
    if not data.is_dir():
        simulate_dataset(data, phenotype, 100, 64, seed=0, cell_diameter=diameter)
    config = TrainConfig(
        data=data, out=out, preset="tiny", image_size=48, steps=1200, batch_size=8, checkpoint_every=1200, device="cpu"
    )
    return train(config)


def condition_classifier(phenotype: str, size: int, diameter: float):
    """A classifier of the phenotype's two conditions trained on real simulated fields (as calibrate trains one)."""
    conditions = PHENOTYPES[phenotype].conditions
    fields = [
        simulate_field(phenotype, condition, size, seed=2000 + i, cell_diameter=diameter).image
        for condition in conditions
        for i in range(16)
    ]
    return train_classifier(fields, [0] * 16 + [1] * 16, list(conditions), steps=400, seed=0)


def direction(
    model,
    phenotype: str,
    source: str,
    target: str,
    fields: int,
    size: int,
    diameter: float,
    example: dict | None,
    classifier=None,
) -> dict:
    captured, raw, area, scores, moved, true_changes = [], [], [], [], [], []
    kept, converted = [], {"translated": [], "pasted": [], "original": []}
    for seed in range(1000, 1000 + fields):
        field = simulate_field(phenotype, source, size, seed=seed, cell_diameter=diameter)
        truth = simulate_field(phenotype, target, size, seed=seed, cell_diameter=diameter)
        translated = translate(model, field.image, source, target)
        found = reveal(
            field.image,
            translated,
            model.channel_names,
            nuclei=field.nuclei,
            cells=field.cells,
            classifier=classifier,
            target=target if classifier is not None else None,
        )
        if classifier is not None:
            kept += [row["classifier_reached"] for row in found.rows if row["classifier_change"] >= 0.05]
            p = classifier.probabilities([translated, found.pasted, field.image])[
                :, classifier.conditions.index(target)
            ]
            for name, value in zip(converted, p):
                converted[name].append(value >= 0.5)
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
        "classifier_kept": float(np.mean(kept)) if kept else np.nan,
        "classifier_cells": len(kept),
        **{f"converted_{name}": float(np.mean(v)) if v else np.nan for name, v in converted.items()},
    }


def figure(examples: list[tuple[str, dict]], channel: int, title: str, name: str) -> Path:
    """One row per direction: original, translation, truth, raw difference and the masks, in one channel."""
    fig = Figure(figsize=(12, 3.2 * len(examples)))
    for row, (direction_name, example) in enumerate(examples):
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
        for i, (panel, image) in enumerate(panels):
            ax = fig.add_subplot(len(examples), len(panels), row * len(panels) + i + 1)
            ax.imshow(image, cmap="tab20" if panel == "reveal masks" else "magma", interpolation="nearest")
            ax.set_title(f"{direction_name}: {panel}" if i == 0 else panel, fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, IMAGES / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["demo:demo:translocation:96:20"])
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/reveal_cells"), help="where tiny1200 models are kept")
    parser.add_argument("--classifier", action="store_true", help="also score the masks with a condition classifier")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stem = "reveal_cells_classifier" if args.classifier else "reveal_cells"
    rows, judged, figures = [], [], []
    for case in args.cases:
        name, checkpoint, phenotype, size, diameter = case.split(":")
        if checkpoint == "tiny1200":
            checkpoint = str(trained_here(phenotype, float(diameter), args.work))
        model = load_checkpoint(checkpoint, device="cpu")
        conditions = PHENOTYPES[phenotype].conditions
        classifier = condition_classifier(phenotype, int(size), float(diameter)) if args.classifier else None
        examples: list[tuple[str, dict]] = []
        for source, target in (conditions, conditions[::-1]):
            example: dict = {}
            examples.append((f"{source} → {target}", example))
            got = direction(
                model,
                phenotype,
                source,
                target,
                args.fields,
                int(size),
                float(diameter),
                example,
                classifier,
            )
            if classifier is not None:
                judged.append(
                    [
                        name,
                        f"{source} → {target}",
                        f"{classifier.accuracy:.2f}",
                        got["classifier_cells"],
                        got["classifier_kept"],
                        got["area"],
                        got["converted_translated"],
                        got["converted_pasted"],
                        got["converted_original"],
                    ]
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
        # the channel the phenotype changes most in truth (the simulator has no other record of it)
        first = next(example for _, example in examples if example)
        change = np.abs(first["truth"].astype(float) - first["original"]).mean(axis=(1, 2))
        channel = int(np.argmax(change / (first["original"].std(axis=(1, 2)) + 1e-6)))
        figures.append(
            figure(
                [(label, example) for label, example in examples if example],
                channel,
                f"{name}: channel {PHENOTYPES[phenotype].channels[channel]}",
                f"{stem}_{name}",
            )
        )
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

{chr(10).join(f"![reveal, {path.stem.removeprefix(stem + '_')}](images/{path.name})" for path in figures)}
"""
    if judged:
        header = [
            "case",
            "direction",
            "classifier accuracy (held-out real)",
            "cells that moved P(target)",
            "classifier change kept by the mask",
            "mask area (share of cells)",
            "conversion: translated",
            "conversion: masks pasted",
            "conversion: original",
        ]
        markdown += f"""
Scored with a condition classifier as QuAC scores (--classifier; 16 real fields per condition, 400 steps): the masks
must also carry {0.8:.0%} of the change of P(target) that pasting the whole cell makes, judged in a 48-px window
around the cell. *Classifier change kept*: mean over the cells whose whole paste moved P(target) by 0.05 or more;
*conversion*: share of fields the classifier calls the target.

{table(header, judged)}
"""
    print(markdown)
    if not args.no_write:
        write_section(stem, markdown)


if __name__ == "__main__":
    main()
