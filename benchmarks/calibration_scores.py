"""Do the no-truth scores of `phendiff calibrate` follow the ground truth? Per setting, both directions.

    python benchmarks/calibration_scores.py --work /tmp/recipe --phenotypes actin golgi [--variant baseline]

Uses training_recipe.py's folders (its trained model recipe_<variant> and held-out set with truth) and a calibration
set like compare_methods.py's (16 fields per condition, seed 2, no truth used). Every setting of a strength x
guidance grid (source negative, DNA kept) translates the held-out source fields, and each translation is scored
three ways:
- transfer: the simulator's ground truth (share of cells whose phenotype moved to the target);
- moved: calibrate's score, the mean probability a condition classifier trained on the calibration set gives the
  target;
- cells moved: the per-cell measurements of `phendiff evaluate` (intensities, ratios, texture per channel, on the
  original's nuclei) that differ between the real conditions of the calibration set: the median over them of how far
  the translated median went from the real source's towards the real target's (1 = all the way; > 1 past it).
The kept channels' measurements and the areas (the same masks by construction) are left out.

Translations are cached in --work (translations_<variant>_<source>.npz) so the scores can be recomputed cheaply.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core import calibrate as cal
from napari_phendiff.core.dataset import load_folder
from napari_phendiff.core.cellstats import summary_of
from napari_phendiff.core.features import train_classifier
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.options import TranslateOptions
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset

from report import hardware, save_figure, table, write_section
from training_recipe import SHOWN
from translation_frontier import folder_sets, score

KEEP = ("DNA",)
EXAMPLE_SETTINGS = ((0.2, 6.0), (0.45, 6.0), (0.8, 6.0))  # (strength, guidance) shown in the example figure


def translations(
    folder: Path, variant: str, model, sets: dict, source: str, target: str, settings: list[cal.Setting], steps: int
) -> dict[cal.Setting, np.ndarray]:
    cache = folder / f"translations_{variant}_{source}.npz"
    key = lambda s: f"{s.strength}_{s.guidance}"  # noqa: E731
    saved = dict(np.load(cache)) if cache.is_file() else {}
    missing = [s for s in settings if key(s) not in saved]
    if missing:
        base = TranslateOptions(steps=steps, batch_size=10, keep_channels=KEEP).validate()
        saved.update(
            {key(s): v for s, v in cal.sweep(model, sets[source]["images"], source, target, missing, base).items()}
        )
        np.savez_compressed(cache, **saved)
    return {s: saved[key(s)] for s in settings}


def medians_moved(model, originals: np.ndarray, translated: np.ndarray, targets: list[np.ndarray]) -> tuple[float, int]:
    """Median `moved` of evaluate's per-cell measurements that differ between the real conditions, and how many.
    (As this section's figures were measured, under the key "cells_moved"; calibrate now counts the cells that
    moved instead: cellstats.cells_moved.)"""
    moved = [
        s["moved"]
        for s in summary_of(originals, translated, targets, model.channel_names)
        if s["differs"]
        and np.isfinite(s["moved"])
        and not s["measurement"].endswith("_area")
        and not any(s["measurement"].startswith(f"{k}_") for k in KEEP)
    ]
    return (float(np.median(moved)) if moved else float("nan")), len(moved)


def run(folder: Path, phenotype: str, args) -> tuple[dict, list]:
    calib = folder / "calib"
    if not calib.exists():  # compare_methods.py's calibration set
        simulate_dataset(calib, phenotype, 16, 64, seed=2, cell_diameter=20.0)
    model = load_checkpoint(folder / f"recipe_{args.variant}", device="cpu")
    _, sets = folder_sets(folder / "held_out", args.fields)
    real = load_folder(calib)
    classifier = train_classifier(real.images, real.labels, real.conditions, steps=400, seed=0)
    settings = cal.grid(args.strengths, args.guidances, ["source"])
    results = {
        "phenotype": phenotype,
        "variant": args.variant,
        "classifier_accuracy": classifier.accuracy,
        "directions": {},
    }
    source, target = PHENOTYPES[phenotype].conditions
    examples, shown = [], model.channel_names.index(SHOWN[phenotype])
    for a, b in ((source, target), (target, source)):
        targets = [im for im, label in zip(real.images, real.labels) if real.conditions[label] == b]
        translated = translations(folder, args.variant, model, sets, a, b, settings, args.steps)
        examples.append(
            (
                f"{phenotype}: {a} -> {b}",
                [("original", sets[a]["images"][0, shown])]
                + [
                    (f"s {s.strength:g}, w {s.guidance:g}", out[0, shown])
                    for s, out in translated.items()
                    if (s.strength, s.guidance) in EXAMPLE_SETTINGS
                ]
                + [(f"real {b} (another field)", sets[b]["images"][0, shown])],
            )
        )
        rows, real_mean = [], float(np.mean(sets[b]["images"][:, shown], dtype=np.float64))
        for setting, out in [(None, sets[a]["images"])] + list(translated.items()):
            truth = score(phenotype, model, classifier, sets[a], sets[b], b, out)
            moved, n = medians_moved(model, sets[a]["images"], out, targets)
            rows.append(
                {
                    "setting": "untranslated" if setting is None else f"s {setting.strength:g}, w {setting.guidance:g}",
                    "strength": 0.0 if setting is None else setting.strength,
                    "guidance": 1.0 if setting is None else setting.guidance,
                    "transfer": truth["transfer"],
                    "moved": truth["moved"],
                    "cells_moved": moved,
                    "measurements": n,
                    "brightness": float(np.mean(out[:, shown], dtype=np.float64)) / real_mean,
                }
            )
        results["directions"][f"{a}->{b}"] = rows
        print(f"{phenotype} {a}->{b}: done", flush=True)
    (folder / f"calibration_scores_{args.variant}.json").write_text(json.dumps(results, indent=1))
    return results, examples


def markdown(all_results: list[dict], args, figure: Path, examples: Path) -> str:
    lines = [
        "## Do the no-truth scores follow the truth? (`benchmarks/calibration_scores.py`)",
        "",
        f"Models and held-out fields of the training-recipe benchmark (`{args.variant}`, {args.fields} fields per "
        f"direction), the DNA kept, a {args.steps}-step grid. *moved*: `phendiff calibrate`'s classifier "
        "P(target) (classifier trained on 16 other fields per condition, held-out accuracy in the heading); "
        "*cells moved*: median over the per-cell measurements of `phendiff evaluate` that differ between the "
        "real conditions of how far the translated median went towards the real target's (1 = all the way, "
        "> 1 past it; areas and DNA measurements left out). *brightness*: the mean of the channel the condition "
        "changes over the translated fields, divided by its mean over the real target fields (held-out). "
        "*transfer*: the simulator's ground truth. "
        f"Hardware: {hardware()}.",
        "",
    ]
    for result in all_results:
        for direction, rows in result["directions"].items():
            lines += [
                f"**{result['phenotype']}, {direction.replace('->', ' → ')}** (classifier accuracy "
                f"{result['classifier_accuracy']:.2f})",
                "",
                table(
                    [
                        "setting",
                        "transfer (truth)",
                        "moved (classifier)",
                        "cells moved",
                        "measurements",
                        f"{SHOWN[result['phenotype']]} brightness (real target 1)",
                    ],
                    [
                        [r["setting"], r["transfer"], r["moved"], r["cells_moved"], r["measurements"], r["brightness"]]
                        for r in rows
                    ],
                ),
                "",
            ]
    lines += [
        f"![scores]({figure.relative_to(figure.parent.parent)})",
        "",
        f"What the translations look like: the first held-out field of each direction, the {', '.join(SHOWN.values())} "
        "channel; each row on one scale (from the original's 1st percentile to the 99.7th of the original and the real "
        "target field together), so a translation brighter than real cells shows as white.",
        "",
        f"![examples]({examples.relative_to(examples.parent.parent)})",
    ]
    return "\n".join(lines)


def plot(all_results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r["phenotype"], d, rows) for r in all_results for d, rows in r["directions"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (phenotype, direction, rows) in zip(axes[0], panels):
        swept = [r for r in rows if r["setting"] != "untranslated"]
        for key, marker, label in (("moved", "o", "moved (classifier)"), ("cells_moved", "^", "cells moved")):
            ax.scatter([r[key] for r in swept], [r["transfer"] for r in swept], marker=marker, s=18, label=label)
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("no-truth score (1 = like the real target)")
        ax.set_ylabel("transfer (ground truth)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{phenotype}: {direction.replace('->', ' -> ')}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_examples(examples: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for _, images in examples)
    fig, axes = plt.subplots(len(examples), columns, figsize=(2.2 * columns, 2.4 * len(examples)), squeeze=False)
    for row, (title, images) in zip(axes, examples):
        for ax in row:
            ax.axis("off")
        real = np.concatenate([np.ravel(images[0][1]), np.ravel(images[-1][1])])  # the original and the real target
        low, high = np.percentile(images[0][1], 1), np.percentile(real, 99.7)
        for ax, (label, image) in zip(row, images):
            ax.imshow(np.asarray(image, np.float64), cmap="gray", vmin=low, vmax=high)
            ax.set_title(label, fontsize=8)
        row[0].text(-0.08, 0.5, title, transform=row[0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="training_recipe.py's --work")
    parser.add_argument("--phenotypes", nargs="+", default=["actin", "golgi"])
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.45, 0.6, 0.8])
    parser.add_argument("--guidances", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [run(args.work / p, p, args) for p in args.phenotypes]
    if args.no_write:
        return
    results, examples = [r for r, _ in runs], [e for _, found in runs for e in found]
    images = Path(__file__).resolve().parent.parent / "docs" / "images"
    figure, example_figure = images / "calibration_scores.png", images / "calibration_examples.png"
    plot(results, figure)
    plot_examples(examples, example_figure)
    text = markdown(results, args, figure, example_figure)
    print(text)
    print(f"written to {write_section('calibration_scores', text)}")


if __name__ == "__main__":
    main()
