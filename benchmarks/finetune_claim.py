"""Phen-LDiff's claim on this computer: does fine-tuning the shipped microscopy base on a few images per condition beat
training from scratch on them, at equal wall-clock training time?

    python benchmarks/finetune_claim.py --work /tmp/claim [--phenotype translocation] [--sizes 25 50 100]
        [--methods lora svdiff attention full pixel cyclegan default] [--minutes 8] [--directions both|back]

For each training-set size (images per condition, simulator seed 0, 64 px, cell diameter 20 px) and each method, the
model is trained for the same wall-clock budget, as `phendiff train --minutes` does it: a few steps of the run are
timed first, then it is given budget / (seconds per step) steps (its learning-rate schedule ends with the budget); *default* is not held to
the budget: it is `phendiff train DATA --out OUT --model latent` with every setting its default, timed. Each model is then calibrated
with `phendiff calibrate --keep-channels DNA` on separate simulated fields (seed 2, no ground truth used) and
evaluated with `phendiff evaluate --truth` on held-out fields (seed 1) in both directions at its calibrated setting
(both at the checkpoint's own DDIM steps: 50 for a fine-tune of the shipped base, else 20; `--fixed S W` adds a fixed
setting, `--fixed-steps` other grids for it),
beside the copy-the-source baseline (the untranslated images scored as if they were the translations: evaluate's
baseline_phenotype_transfer and identity_iou_reference). FID/KID use the
offline condition classifier's features (no Inception weights here). Memorisation: 16 images per condition generated
from noise by each diffusion model, each compared with its nearest training crop (cosine similarity of mean-centred
images, as core/generalization.py; Phen-LDiff's figure); the histograms go to docs/images/finetune_memorisation.png.

Every stage already done in --work is reused, so an interrupted run continues; `--collect` only gathers the tables
into docs/benchmarks.md (section finetune_claim, or finetune_claim_<phenotype> for another phenotype, or --section).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core.calibrate import calibrate, grid
from napari_phendiff.core.dataset import load_folder
from napari_phendiff.core.evaluate import evaluate
from napari_phendiff.core.generalization import nearest_training
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.models.bases import DEFAULT_BASE, SHIPPED_BASES
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset
from napari_phendiff.core.training.run import iter_train
from napari_phendiff.core.walk import sample

from report import hardware, save_figure, table, write_section

SIZE, CELL, CROP = 64, 20.0, 48
# How each method is trained; every run gets the same wall-clock budget (--minutes).
METHODS = {
    # the shipped base's own default learning rates (data/base/base.json)
    "lora": dict(model="latent", adapter="lora", batch_size=8),
    "svdiff": dict(model="latent", adapter="svdiff", batch_size=8),
    "attention": dict(model="latent", adapter="attention", batch_size=8),
    "full": dict(model="latent", adapter="full", batch_size=8),
    "pixel": dict(model="pixel", preset="tiny", image_size=CROP, batch_size=8),
    "cyclegan": dict(model="cyclegan", preset="tiny", image_size=CROP, batch_size=1),
    # LoRA at other learning rates than the base's own (base.json: 1e-3), the same budget
    "lora-lr1e-4": dict(model="latent", adapter="lora", batch_size=8, lr=1e-4),
    "lora-lr3e-3": dict(model="latent", adapter="lora", batch_size=8, lr=3e-3),
    "lora-lr1e-2": dict(model="latent", adapter="lora", batch_size=8, lr=1e-2),
    # the full fine-tune at the base's own pre-training learning rate and above (base.json: 1e-4)
    "full-lr3e-4": dict(model="latent", adapter="full", batch_size=8, lr=3e-4),
    "full-lr1e-3": dict(model="latent", adapter="full", batch_size=8, lr=1e-3),
    # LoRA with the loss options diffusers' training examples offer (issue: dark fluorescence backgrounds)
    "lora-snr5": dict(model="latent", adapter="lora", batch_size=8, snr_gamma=5.0),
    "lora-offset0.1": dict(model="latent", adapter="lora", batch_size=8, noise_offset=0.1),
    # not timed to the budget: `phendiff train DATA --out OUT --model latent` as a new user types it, every setting
    # its default (the shipped base, LoRA, its own steps and learning rate, batch 16)
    "default": dict(model="latent"),
}
NAMES = {
    "lora": "shipped base + LoRA",
    "svdiff": "shipped base + SVDiff",
    "attention": "shipped base + attention",
    "full": "shipped base, full fine-tune",
    "pixel": "PhenDiff pixel, from scratch",
    "cyclegan": "CycleGAN, from scratch",
    "default": "shipped base + LoRA, every default (not timed)",
    "lora-lr1e-4": "shipped base + LoRA, lr 1e-4",
    "lora-lr3e-3": "shipped base + LoRA, lr 3e-3",
    "lora-lr1e-2": "shipped base + LoRA, lr 1e-2",
    "full-lr3e-4": "shipped base, full fine-tune, lr 3e-4",
    "full-lr1e-3": "shipped base, full fine-tune, lr 1e-3",
    "lora-snr5": "shipped base + LoRA, min-SNR 5",
    "lora-offset0.1": "shipped base + LoRA, noise offset 0.1",
    "copy": "copy the source (baseline)",
}
COLUMNS = ("phenotype_transfer", "identity_iou", "classifier_target_rate", "fid", "kid_mean")


def data_sets(work: Path, phenotype: str, sizes: list[int]) -> dict:
    sets = {}
    for n in sizes:
        sets[n] = work / f"train_{n}"
        if not sets[n].exists():
            simulate_dataset(sets[n], phenotype, n, SIZE, seed=0, cell_diameter=CELL)
    for name, n, seed in (("held_out", 20, 1), ("calib", 16, 2)):
        if not (work / name).exists():
            simulate_dataset(work / name, phenotype, n, SIZE, seed=seed, cell_diameter=CELL)
    return sets


def train_for(
    budget_s: float, config: dict, data: Path, out: Path, channels: list[str], steps: int | None = None
) -> dict:
    """Train `config` for about `budget_s` seconds of steps, or exactly `steps` (arms that cost the same per step
    compared at equal steps, free of the machine's load during a probe); returns the timing record (reused when
    done)."""
    record_path = out.with_name(out.name + "_timing.json")
    if record_path.is_file() and (out / "phendiff.json").is_file():
        return json.loads(record_path.read_text())
    if config == METHODS["default"]:  # every setting its default: the user's command, its own steps
        run = TrainConfig(data=data, out=out, device="cpu", channel_names=channels, **config)
    else:
        # A budget goes through the product's own (`phendiff train --minutes`: core/training/run.fit_budget times a
        # few steps of this very run first), so the benchmark gives each method what a user's budget would.
        run = TrainConfig(
            data=data,
            out=out,
            checkpoint_every=10**9,  # one checkpoint, at the end
            device="cpu",
            channel_names=channels,
            warmup_steps=100 if steps is None else min(100, steps // 10),  # a budget's: at most a tenth of its steps
            **(dict(steps=steps) if steps is not None else dict(minutes=budget_s / 60)),
            **config,
        )
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    for event in iter_train(run):
        if event.kind == "start" and run.minutes is not None:  # after the budget's timing steps: the run is timed
            started = time.perf_counter()
    budget = json.loads((out / "phendiff.json").read_text())["metadata"].get("budget", {})
    per_step, steps = budget.get("seconds_per_step"), budget.get("steps", run.steps)
    record = {"probe_seconds_per_step": per_step, "steps": steps, "train_seconds": time.perf_counter() - started}
    record_path.write_text(json.dumps(record))
    return record


def calibrated(model_dir: Path, work: Path, direction: tuple[str, str], args) -> dict:
    out = work / f"calibration_{model_dir.name}_{direction[0]}-to-{direction[1]}"
    if not (out / "calibration.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        calibrate(
            model_dir,
            work / "calib",
            *direction,
            out,
            settings=grid(args.strengths, args.guidances),
            n=16,
            steps=None,  # the checkpoint's own (a fine-tune of the shipped base: 50), else 20
            seed=0,
            store=False,
            keep_channels=["DNA"],
        )
    chosen = json.loads((out / "calibration.json").read_text())["chosen"]
    return {**{k: chosen[k] for k in ("strength", "guidance", "negative")}, "keep_channels": ("DNA",)}


def fixed_tag(fixed: tuple) -> str:
    """A fixed setting's tag: (strength, guidance) or (strength, guidance, DDIM steps)."""
    return f"_fixed-s{fixed[0]:g}-w{fixed[1]:g}" + (f"-{fixed[2]}steps" if len(fixed) > 2 else "")


def fixed_settings(args) -> list[tuple]:
    """--fixed, once per --fixed-steps when given (else at each checkpoint's own steps)."""
    if not args.fixed:
        return []
    return [(*args.fixed, steps) for steps in args.fixed_steps] if args.fixed_steps else [tuple(args.fixed)]


def evaluated(model_dir: Path, work: Path, direction: tuple[str, str], args, fixed: tuple | None = None) -> dict:
    """The model's scores on the held-out fields at its calibrated setting, or at `fixed` (strength, guidance[,
    DDIM steps])."""
    report = work / f"report_{model_dir.name}_{direction[0]}-to-{direction[1]}{fixed_tag(fixed) if fixed else ''}"
    if not (report / "metrics.json").is_file():
        shutil.rmtree(report, ignore_errors=True)
        if fixed:
            overrides = {"strength": fixed[0], "guidance": fixed[1], "negative": "source", "keep_channels": ("DNA",)}
            overrides.update({"steps": fixed[2]} if len(fixed) > 2 else {})
        elif model_dir.name.startswith("cyclegan"):
            overrides = {"keep_channels": ("DNA",)}
        else:
            overrides = calibrated(model_dir, work, direction, args)
        evaluate(
            model_dir,
            work / "held_out",
            *direction,
            report,
            truth=work / "held_out_truth",
            steps=None,  # the checkpoint's own (a fine-tune of the shipped base: 50), else 20
            seed=0,
            device="cpu",
            **overrides,
        )
    return json.loads((report / "metrics.json").read_text())


def memorisation(model_dir: Path, data: Path, work: Path) -> list[float]:
    path = work / f"memorisation_{model_dir.name}.json"
    if not path.is_file():
        model = load_checkpoint(model_dir, device="cpu")
        training = load_folder(data)
        bank = [model.normalization.forward(im) for im in training.images]
        generated = np.concatenate([sample(model, c, 16, steps=20, seed=0) for c in model.conditions])
        similarity = nearest_training(model.normalization.forward(generated), bank)
        path.write_text(json.dumps([float(v) for v in similarity]))
    return json.loads(path.read_text())


def run(args) -> None:
    phenotype = PHENOTYPES[args.phenotype]
    channels = list(phenotype.channels)
    sets = data_sets(args.work, args.phenotype, args.sizes)
    directions = [phenotype.conditions, phenotype.conditions[::-1]]
    if args.directions == "back":
        directions = directions[1:]
    for n in args.sizes:
        for method in args.methods:
            out = args.work / f"{method}_{n}"
            timing = train_for(args.minutes * 60, METHODS[method], sets[n], out, channels, args.steps)
            print(f"{method} n={n}: {timing['steps']} steps in {timing['train_seconds'] / 60:.1f} min", flush=True)
            fixed = fixed_settings(args) if METHODS[method]["model"] != "cyclegan" else []
            for direction in directions:
                for setting in [None, *fixed]:
                    metrics = evaluated(out, args.work, direction, args, setting)
                    print(
                        f"  {direction[0]} -> {direction[1]}{fixed_tag(setting) if setting else ''}: transfer "
                        f"{metrics['phenotype_transfer']:.2f}, identity {metrics['identity_iou']:.2f}",
                        flush=True,
                    )
            if METHODS[method]["model"] != "cyclegan" and n == max(args.sizes) and args.memorisation:
                memorisation(out, sets[n], args.work)


def collect(args) -> str:
    phenotype = PHENOTYPES[args.phenotype]
    directions = [phenotype.conditions, phenotype.conditions[::-1]]
    if args.directions == "back":
        directions = directions[1:]
    rows = []
    for direction in directions:
        tag = f"{direction[0]}-to-{direction[1]}"
        reports = sorted(args.work.glob(f"report_*_{tag}/metrics.json"))
        if reports:  # every report holds the same held-out fields' untranslated scores
            metrics = json.loads(reports[0].read_text())
            rows.append(
                [
                    f"{direction[0]} → {direction[1]}",
                    "",
                    NAMES["copy"],
                    "",
                    "",
                    "",
                    metrics["baseline_phenotype_transfer"],
                    metrics["identity_iou_reference"],
                    "",
                    "",
                    "",
                ]
            )
        fixed = [fixed_tag(setting) for setting in fixed_settings(args)]
        for n, method, suffix in [(n, m, x) for n in args.sizes for m in args.methods for x in ["", *fixed]]:
            report = args.work / f"report_{method}_{n}_{tag}{suffix}" / "metrics.json"
            timing_path = args.work / f"{method}_{n}_timing.json"
            if not report.is_file() or not timing_path.is_file():
                continue
            metrics, timing = json.loads(report.read_text()), json.loads(timing_path.read_text())
            translation = metrics.get("translation") or {}
            setting = f"s {translation['strength']:g}, w {translation['guidance']:g}" if translation else "direct"
            setting += f", {translation['steps']} steps" if translation.get("steps", 20) != 20 else ""
            setting += " (fixed)" if suffix else ""
            rows.append(
                [
                    f"{direction[0]} → {direction[1]}",
                    n,
                    NAMES[method],
                    timing["steps"],
                    timing["train_seconds"] / 60,
                    setting,
                ]
                + [metrics[c] for c in COLUMNS]
            )
    header = ["direction", "images per condition", "method", "train steps", "train min", "setting", *COLUMNS]
    memorised = []
    for method in args.methods:
        path = args.work / f"memorisation_{method}_{max(args.sizes)}.json"
        if path.is_file():
            values = np.asarray(json.loads(path.read_text()))
            memorised.append([NAMES[method], len(values), float(np.median(values)), float(np.mean(values > 0.9))])
    held_out = json.loads((SHIPPED_BASES[DEFAULT_BASE] / "base.json").read_text())["held_out_phenotype"]
    seen = (
        "Held-out phenotype: {0} (the shipped base's pre-training never saw it: data/base/base.json)"
        if args.phenotype == held_out
        else "Phenotype: {0} (the shipped base saw both its conditions in pre-training: data/base/base.json)"
    )
    text = (
        f"Hardware: {hardware()}. {seen.format(args.phenotype)}. Simulator fields of {SIZE} px, cell diameter {CELL:g} px: training sets of "
        f"{', '.join(map(str, args.sizes))} images per condition (seed 0), 16 calibration fields per condition "
        "(seed 2), 20 held-out fields per condition with ground truth (seed 1). "
        + (
            "The model trained with every default (its own steps, not timed to a budget), then calibrated"
            if args.methods == ["default"]
            else f"Every model trained for the same {args.steps} steps (train min is what the run took on a shared "
            "machine; *every default*: its own steps), then calibrated"
            if args.steps
            else f"Every model trained for the same wall-clock budget ({args.minutes:g} min, steps set from a probe "
            "of its seconds per step; train min is what the run took on a shared machine; *every default*: its own "
            "steps, not timed to the budget), then calibrated"
        )
        + " with `phendiff calibrate --keep-channels DNA` "
        "(no ground truth) and evaluated with the DNA kept at that setting (CycleGAN: DNA kept, direct). "
        "Identity is then the segmentation's ceiling for every method (nuclei are segmented on the kept DNA). "
        "FID/KID on the offline condition classifier's features."
        + (
            f" *(fixed)*: the same model at s {args.fixed[0]:g}, w {args.fixed[1]:g} against the source, uncalibrated"
            + (f", on grids of {', '.join(map(str, args.fixed_steps))} DDIM steps." if args.fixed_steps else ".")
            if args.fixed
            else ""
        )
        + "\n\n"
        + table(header, rows)
    )
    if memorised:
        text += (
            "\n\nMemorisation (16 images per condition generated from noise, nearest training crop): "
            "median cosine similarity and the share above 0.9 (near-copies).\n\n"
            + table(["method", "images", "median similarity", "share > 0.9"], memorised)
            + f"\n\n![memorisation](images/{memorisation_figure_name(args)})"
        )
    return text


def section_name(args) -> str:
    return args.section or (
        "finetune_claim" if args.phenotype == "translocation" else f"finetune_claim_{args.phenotype}"
    )


def memorisation_figure_name(args) -> str:
    """The histograms' file: one per docs section (finetune_memorisation.png for the first), so a follow-up run
    never redraws another section's figure."""
    section = section_name(args)
    return "finetune_memorisation.png" if section == "finetune_claim" else f"{section}_memorisation.png"


def _memorisation_figure(args) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for method in args.methods:
        path = args.work / f"memorisation_{method}_{max(args.sizes)}.json"
        if path.is_file():
            ax.hist(json.loads(path.read_text()), bins=np.linspace(0, 1, 26), histtype="step", label=NAMES[method])
    ax.set_xlabel("similarity to the nearest training crop")
    ax.set_ylabel("generated images")
    ax.set_title(f"{args.phenotype}, {max(args.sizes)} training images per condition", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, Path(__file__).resolve().parent.parent / "docs" / "images" / memorisation_figure_name(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--phenotype", default="translocation", choices=list(PHENOTYPES))
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget per model")
    parser.add_argument("--steps", type=int, help="train every model this many steps instead of a budget")
    parser.add_argument(
        "--directions", choices=["both", "back"], default="both", help="back: only treated -> untreated"
    )
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--guidances", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    parser.add_argument(
        "--fixed",
        type=float,
        nargs=2,
        metavar=("STRENGTH", "GUIDANCE"),
        help="also evaluate every diffusion model at this setting (against the source, DNA kept), uncalibrated",
    )
    parser.add_argument(
        "--fixed-steps",
        type=int,
        nargs="+",
        help="evaluate --fixed at each of these DDIM step counts (default: each checkpoint's own)",
    )
    parser.add_argument("--no-memorisation", dest="memorisation", action="store_false")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--collect", action="store_true", help="only gather finished results into the docs")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--section",
        help="the docs section to write (default finetune_claim[_<phenotype>]); a "
        "follow-up run in another --work folder gets its own",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        run(args)
    markdown = collect(args)
    print(markdown)
    if not args.no_write:
        if "![memorisation]" in markdown:
            _memorisation_figure(args)
        print(f"written to {write_section(section_name(args), markdown)}")


if __name__ == "__main__":
    main()
