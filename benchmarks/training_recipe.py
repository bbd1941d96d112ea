"""Training recipe changes, one at a time, scored on the simulator's ground truth at the best translation settings.

    python benchmarks/training_recipe.py --work /tmp/compare --phenotypes actin golgi \
        [--variants baseline min-snr-5 steps-2400 crops-64 no-null-dropout small seed-1] [--threads 1] [--no-write]
    python benchmarks/training_recipe.py --work /tmp/compare --phenotypes actin golgi --collect

The training and held-out sets are benchmarks/compare_methods.py's (same simulator seeds and sizes, and the same
folders when --work is the same), so its CycleGAN rows are the bar. The baseline is its PhenDiff budget (`tiny`,
1200 steps, batch 8, 48-px crops); each variant changes one TrainConfig field from it
(`seed-1` only the seed: the spread between two runs of the same recipe). Every trained model is swept
over strength x guidance (source negative) with the DNA kept, on the held-out fields of both directions, and each
translation scored with the truth (translation_frontier.score): the share of cells whose phenotype moved, the
median phenotype reached against the real target's, and the change of the unkept channels. With the DNA kept the
nuclei, hence identity, are the original's by construction, so the frontier's top is the highest transfer.

Stages already done in --work are reused (several variants can train as separate processes with --no-write; one
final --collect writes the section recipe_<phenotype> of docs/benchmarks.md and its plot).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core import calibrate as cal
from napari_phendiff.core.options import TrainConfig, TranslateOptions
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset
from napari_phendiff.core.training.run import train

from report import hardware, save_figure, table, write_section
from translation_frontier import _setting, folder_sets, score

SHOWN = {"actin": "actin", "golgi": "Golgi"}  # the channel whose structure the condition changes
BASELINE = dict(model="pixel", preset="tiny", steps=1200, batch_size=8, image_size=48, seed=0)
# One change each from the baseline: what the issue names as the recipe's levers.
VARIANTS = {
    "baseline": {},
    "min-snr-5": {"snr_gamma": 5.0},  # Hang et al. 2023: min-SNR-gamma weighting, gamma 5
    "steps-2400": {"steps": 2400},  # twice the optimisation steps
    "steps-4800": {"steps": 4800},  # four times
    "crops-64": {"image_size": 64},  # whole 64-px fields (3.2 cell diameters) instead of 48-px crops
    "no-null-dropout": {"condition_dropout": 0.0},  # every image with its condition (source-negative guidance
    # never calls the null class)
    "small": {"preset": "small"},  # the next model size: 3.6x the parameters, wider and deeper levels
    "seed-1": {"seed": 1},  # not a change: the baseline again from another initialisation and
    # batch order, to tell a variant's effect from chance
}


def prepare_data(folder: Path, phenotype: str) -> tuple[Path, Path]:
    """compare_methods.py's training set (seed 0) and held-out set with truth (seed 1)."""
    train_data, held_out = folder / "train", folder / "held_out"
    if not train_data.exists():
        simulate_dataset(train_data, phenotype, 100, 64, seed=0, cell_diameter=20.0)
    if not held_out.exists():
        simulate_dataset(held_out, phenotype, 20, 64, seed=1, cell_diameter=20.0)
    return train_data, held_out


def train_variant(folder: Path, phenotype: str, variant: str) -> Path:
    checkpoint = folder / f"recipe_{variant}"
    config = {**BASELINE, **VARIANTS[variant]}
    manifest = checkpoint / "phendiff.json"
    if manifest.is_file() and json.loads(manifest.read_text())["trained_steps"] >= config["steps"]:
        return checkpoint
    start = time.perf_counter()
    train(
        TrainConfig(
            **config,
            data=folder / "train",
            out=checkpoint,
            checkpoint_every=300,
            channel_names=list(PHENOTYPES[phenotype].channels),
            resume=checkpoint.exists(),
        )
    )
    _timing(checkpoint, time.perf_counter() - start)
    return checkpoint


def _timing(checkpoint: Path, seconds: float) -> None:
    path = checkpoint.with_name(checkpoint.name + "_timing.json")
    before = json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0
    path.write_text(json.dumps({"train_seconds": before + seconds, "hardware": hardware()}))


def sweep_variant(folder: Path, phenotype: str, variant: str, checkpoint: Path, args) -> dict:
    """Sweep the model over the grid; settings already swept in an earlier run (its JSON) are not redone."""
    from napari_phendiff.core.models import load_checkpoint

    saved = folder / f"recipe_{variant}.json"
    source, target = PHENOTYPES[phenotype].conditions
    results = (
        json.loads(saved.read_text())
        if saved.is_file()
        else {
            "variant": variant,
            "changes": VARIANTS[variant],
            "phenotype": phenotype,
            "fields": args.fields,
            "steps": args.steps,
            "directions": {},
        }
    )
    if (results["fields"], results["steps"]) != (args.fields, args.steps):
        raise SystemExit(
            f"{saved} holds a sweep of {results['fields']} fields on a {results['steps']}-step grid; "
            "delete it or ask for the same."
        )
    grid = cal.grid(args.strengths, args.guidances, ["source"])
    model = sets = None
    for a, b in ((source, target), (target, source)):
        entry = results["directions"].setdefault(f"{a}->{b}", {"rows": [], "seconds": 0.0})
        done = {_setting(r) for r in entry["rows"]}
        settings = [s for s in grid if s not in done]
        if not settings:
            continue
        if model is None:
            model = load_checkpoint(checkpoint, device="cpu")
            _, sets = folder_sets(folder / "held_out", args.fields)
            results["trained_steps"] = model.manifest["trained_steps"]
        start = time.perf_counter()
        base = TranslateOptions(steps=args.steps, batch_size=10, keep_channels=("DNA",)).validate()
        translated = cal.sweep(model, sets[a]["images"], a, b, settings, base)
        entry["rows"] += [
            {**asdict(s), **score(phenotype, model, None, sets[a], sets[b], b, out)} for s, out in translated.items()
        ]
        entry["untranslated"] = score(phenotype, model, None, sets[a], sets[b], b, sets[a]["images"])
        entry["seconds"] += time.perf_counter() - start
        print(
            f"{phenotype} {variant} {a}->{b}: best transfer {max(r['transfer'] for r in entry['rows']):.3f}", flush=True
        )
    timing = checkpoint.with_name(checkpoint.name + "_timing.json")
    results["train_seconds"] = json.loads(timing.read_text())["train_seconds"] if timing.is_file() else None
    results["hardware"] = results.get("hardware") or hardware()
    saved.write_text(json.dumps(results, indent=1, default=float))
    return results


def _on_grid(results: dict, args) -> dict:
    """Only the rows of the grid asked for (a saved sweep may hold more settings from another run)."""
    grid = set(cal.grid(args.strengths, args.guidances, ["source"]))
    for entry in results["directions"].values():
        entry["rows"] = [r for r in entry["rows"] if _setting(r) in grid]
    return results


def best(rows: list[dict]) -> dict:
    """The highest transfer; within 0.02 of it, the gentlest (lowest strength, then guidance) setting."""
    top = max(r["transfer"] for r in rows)
    return min((r for r in rows if r["transfer"] >= top - 0.02), key=lambda r: (r["strength"], r["guidance"]))


def markdown(phenotype: str, results: list[dict], args, figure: Path, samples: Path) -> str:
    source, target = PHENOTYPES[phenotype].conditions
    first = results[0]
    lines = [
        f"## Training recipe, one change at a time: {phenotype} (`benchmarks/training_recipe.py`)",
        "",
        f"Training and held-out sets of `benchmarks/compare_methods.py` (100 images per condition, 64 px, cell "
        f"diameter 20 px; {first['fields']} held-out fields per direction with ground truth). Baseline: its "
        f"PhenDiff budget (`tiny`, 1200 steps, batch 8, 48-px crops); each variant changes one training "
        f"setting (`seed-1` only the seed, a repeat of the baseline: the spread between two runs). Every model "
        f"is swept over strength {', '.join(f'{s:g}' for s in args.strengths)} x guidance "
        f"{', '.join(f'{g:g}' for g in args.guidances)} against the source, the DNA kept, on a "
        f"{first['steps']}-step DDIM grid; *best* is the setting with the highest true transfer (the gentlest "
        f"within 0.02 of it), *mean* the transfer averaged over the whole sweep (how much of the grid works). "
        f"Hardware: {first.get('hardware') or hardware()}; train minutes are wall time on a shared machine.",
        "",
    ]
    header = [
        "variant",
        "change",
        "train min",
        "direction",
        "best transfer",
        "best setting",
        "median reached (real target)",
        "mean transfer",
        "untranslated",
    ]
    rows = []
    partial = [
        r
        for r in results
        if any(
            len(e["rows"]) < len(cal.grid(args.strengths, args.guidances, ["source"])) for e in r["directions"].values()
        )
    ]
    for a, b in ((source, target), (target, source)):
        common = set.intersection(
            *({_setting(r) for r in result["directions"][f"{a}->{b}"]["rows"]} for result in results)
        )
        for result in results:
            entry = result["directions"][f"{a}->{b}"]
            top, u = best(entry["rows"]), entry["untranslated"]
            change = (
                ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in result["changes"].items())
                or "-"
            )
            minutes = result["train_seconds"] / 60 if result.get("train_seconds") else float("nan")
            rows.append(
                [
                    result["variant"],
                    change,
                    minutes,
                    f"{a} → {b}",
                    top["transfer"],
                    f"s {top['strength']:g}, w {top['guidance']:g}",
                    f"{top['median_translated']:.3g} ({u['median_target']:.3g})",
                    np.mean([r["transfer"] for r in entry["rows"] if _setting(r) in common]),
                    u["transfer"],
                ]
            )
    for result in partial:
        swept = sorted({(r["strength"], r["guidance"]) for e in result["directions"].values() for r in e["rows"]})
        lines += [
            f"`{result['variant']}` was swept on {', '.join(f's {s:g} w {w:g}' for s, w in swept)} only "
            "(for lack of CPU time); *mean* is over the settings every variant has.",
            "",
        ]
    lines += [
        table(header, rows),
        "",
        f"![recipe]({figure.relative_to(figure.parent.parent)})",
        "",
        f"What the models draw from noise (50 DDIM steps, no guidance, the {SHOWN[phenotype]} channel, "
        f"{', '.join(f'`{v}`' for v in args.sample_variants)}), under crops of real held-out fields; every "
        "image on the scale of the first real row.",
        "",
        f"![samples]({samples.relative_to(samples.parent.parent)})",
    ]
    return "\n".join(lines)


def plot(phenotype: str, results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, target = PHENOTYPES[phenotype].conditions
    directions = [f"{source}->{target}", f"{target}->{source}"]
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        guidances = sorted({r["guidance"] for result in results for r in result["directions"][direction]["rows"]})
        styles = dict(zip(guidances, ("-", "--", ":", "-.")))
        for i, result in enumerate(results):  # a colour per variant, a line style per guidance
            rows = result["directions"][direction]["rows"]
            for guidance in sorted({r["guidance"] for r in rows}):
                style = styles.get(guidance, "-")
                members = sorted((r for r in rows if r["guidance"] == guidance), key=lambda r: r["strength"])
                ax.plot(
                    [r["strength"] for r in members],
                    [r["transfer"] for r in members],
                    style,
                    color=f"C{i}",
                    marker="o",
                    ms=3,
                    label=f"{result['variant']}, w {guidance:g}",
                )
        ax.set_xlabel("strength (DNA kept)")
        ax.set_ylabel("phenotype transfer (ground truth)")
        ax.set_title(f"{phenotype}: {direction.replace('->', ' -> ')}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=5, loc="upper left", ncol=2)
    return save_figure(fig, path)


def plot_samples(folder: Path, phenotype: str, variants: list[str], path: Path, n: int = 4) -> Path:
    """What each model generates from noise for each condition (50 DDIM steps, no guidance), under crops of real
    held-out fields of the model's size: whether it has learned to draw the structure a translation must make."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_phendiff.core.models import load_checkpoint
    from napari_phendiff.core.walk import sample

    _, sets = folder_sets(folder / "held_out", n)
    models = {
        v: load_checkpoint(folder / f"recipe_{v}", device="cpu")
        for v in variants
        if (folder / f"recipe_{v}" / "phendiff.json").is_file()
    }
    first = next(iter(models.values()))
    shown, size = first.channel_names.index(SHOWN[phenotype]), first.manifest["image_size"]
    rows = []
    for condition in PHENOTYPES[phenotype].conditions:
        rows.append((f"real {condition}", sets[condition]["images"][:n, shown, :size, :size]))
        rows += [
            (f"{variant}: {condition}", sample(model, condition, n=n, steps=50, seed=0)[:, shown])
            for variant, model in models.items()
        ]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    low, high = np.percentile(rows[0][1], 1), np.percentile(rows[0][1], 99.7)  # one scale: the first real row
    for row, (label, images) in zip(axes, rows):
        for ax, image in zip(row, images):
            ax.imshow(np.asarray(image, np.float64), cmap="gray", vmin=low, vmax=high)
            ax.axis("off")
        row[0].set_title(label, fontsize=7, loc="left")
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--phenotypes", nargs="+", default=["actin", "golgi"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--fields", type=int, default=20, help="held-out fields per direction")
    parser.add_argument("--steps", type=int, default=20, help="DDIM grid of the translations")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.45, 0.6, 0.8])
    parser.add_argument("--guidances", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--collect", action="store_true", help="only gather finished results into the docs")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument(
        "--sample-variants",
        nargs="+",
        default=["baseline", "seed-1"],
        help="variants whose samples from noise the docs show",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for phenotype in args.phenotypes:
        folder = args.work / phenotype
        results = []
        for variant in args.variants:
            saved = folder / f"recipe_{variant}.json"
            if args.collect:
                if saved.is_file():
                    results.append(_on_grid(json.loads(saved.read_text()), args))
                continue
            prepare_data(folder, phenotype)
            checkpoint = train_variant(folder, phenotype, variant)
            results.append(_on_grid(sweep_variant(folder, phenotype, variant, checkpoint, args), args))
        if not results or args.no_write:
            continue
        figure = Path(__file__).resolve().parent.parent / "docs" / "images" / f"recipe_{phenotype}.png"
        plot(phenotype, results, figure)
        samples = plot_samples(
            folder, phenotype, args.sample_variants, figure.with_name(f"recipe_samples_{phenotype}.png")
        )
        text = markdown(phenotype, results, args, figure, samples)
        print(text)
        print(f"written to {write_section(f'recipe_{phenotype}', text)}")


if __name__ == "__main__":
    main()
