"""The papers' comparison on the simulator: CycleGAN vs PhenDiff (pixel) [vs Phen-LDiff], every evaluation metric.

    python benchmarks/compare_methods.py --work /tmp/compare [--phenotypes translocation golgi actin]
        [--n-per-class 100] [--pixel-steps 1200] [--cyclegan-steps 1200] [--latent-base SD_FOLDER]

For each phenotype: simulate a training set (seed 0), a held-out set with ground truth (seed 1) and a calibration
set (seed 2), train each method on the training set with the stated budget, calibrate the PhenDiff model on the
calibration set (`--calibrate`: `phendiff calibrate`, no ground truth), and run `phendiff evaluate` in both
directions on the held-out set: CycleGAN, PhenDiff at its calibrated setting, PhenDiff's original full inversion. Stages already done in --work are reused, so an interrupted run continues and several phenotypes can
run as separate processes (--no-write), with one final `--collect` writing the table into docs/benchmarks.md.

`--seeds 0 1 ...` repeats the fair pair (both methods with the DNA kept, PhenDiff calibrated on the calibration set)
for further training seeds, everything else alike, so a win or a loss is not one draw of either method's training:

    python benchmarks/compare_methods.py --work /tmp/compare --seeds 0 1 --evaluated cyclegan-keep pixel-keep \
        --sections method_comparison_seeds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core.calibrate import calibrate, grid
from napari_phendiff.core.evaluate import evaluate
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.training.run import train

from report import hardware, table, write_section

# What is evaluated: the model folder (before "-") and translation options over the checkpoint's defaults.
# "-keep": the DNA channel kept as the original's (keep_channels), for both methods alike; PhenDiff's setting then
# comes from `calibrate --keep-channels DNA` on the calibration set (not stored, so "pixel" keeps its own).
EVALUATED = {
    "cyclegan": {},
    "pixel": {},
    "pixel-full": {"strength": 1.0, "guidance": 1.0},
    "latent": {},
    "cyclegan-keep": {"keep_channels": ("DNA",)},
    "pixel-keep": None,
}
NAMES = {
    "cyclegan": "CycleGAN",
    "pixel": "PhenDiff (pixel), calibrated",
    "pixel-full": "PhenDiff (pixel), full inversion",
    "latent": "Phen-LDiff (LoRA)",
    "cyclegan-keep": "CycleGAN, DNA kept",
    "pixel-keep": "PhenDiff (pixel), DNA kept, calibrated",
}
# What is repeated for each further training seed (--seeds): the DNA-kept pair, the fair comparison.
SEEDED = ("cyclegan-keep", "pixel-keep")
IDENTITY_MARGIN = 0.05
COLUMNS = (
    "phenotype_transfer",
    "identity_iou",
    "classifier_target_rate",
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "cycle_l2_per_pixel",
)


def run_phenotype(work: Path, phenotype: str, args) -> None:
    folder = work / phenotype
    train_data, held_out = folder / "train", folder / "held_out"
    if not train_data.exists():
        simulate_dataset(train_data, phenotype, args.n_per_class, args.size, seed=0, cell_diameter=args.cell_diameter)
    if not held_out.exists():
        simulate_dataset(held_out, phenotype, args.n_held_out, args.size, seed=1, cell_diameter=args.cell_diameter)
    if not (folder / "calib").exists():
        simulate_dataset(
            folder / "calib", phenotype, args.n_calibrate, args.size, seed=2, cell_diameter=args.cell_diameter
        )
    source, target = PHENOTYPES[phenotype].conditions
    channels = list(PHENOTYPES[phenotype].channels)
    methods = {
        "CycleGAN": dict(model="cyclegan", steps=args.cyclegan_steps, batch_size=1),
        "PhenDiff (pixel)": dict(model="pixel", steps=args.pixel_steps, batch_size=args.pixel_batch),
    }
    if args.latent_base:
        methods["Phen-LDiff (LoRA)"] = dict(
            model="latent",
            base=args.latent_base,
            adapter="lora",
            resize=True,
            image_size=512,
            steps=args.pixel_steps,
            batch_size=args.pixel_batch,
        )
    for seed in sorted({0, *args.seeds}):
        for name, options in methods.items():
            if seed and options["model"] == "latent":
                continue
            _train(folder / f"model_{options['model']}{_suffix(seed)}", options, train_data, channels, seed, args)
            print(f"{phenotype} {name} seed {seed}: trained", flush=True)
    if args.train_only:
        return
    for direction in ((source, target), (target, source)):
        tag = f"{direction[0]}-to-{direction[1]}"
        for seed in sorted({0, *args.seeds}):  # further seeds: the DNA-kept pair (SEEDED) only
            suffix = _suffix(seed)
            for slug, overrides in EVALUATED.items():
                if slug not in args.evaluated or (seed and slug not in SEEDED):
                    continue
                checkpoint = folder / f"model_{slug.split('-')[0]}{suffix}"
                if not (checkpoint / "phendiff.json").is_file():
                    continue
                if slug == "pixel" and args.calibrate and not (folder / f"calibration_{tag}").is_dir():
                    start = time.perf_counter()
                    calibrate(
                        checkpoint,
                        folder / "calib",
                        *direction,
                        folder / f"calibration_{tag}",
                        settings=grid(args.strengths, args.guidances),
                        n=args.n_calibrate,
                        steps=args.translate_steps,
                        seed=0,
                    )
                    _note(checkpoint, f"calibrate_seconds_{tag}", time.perf_counter() - start)
                if overrides is None:  # calibrated with the DNA kept, on the calibration set
                    overrides = _kept_calibration(checkpoint, folder, direction, suffix, args)
                _evaluate(checkpoint, folder / f"report_{slug}_{tag}{suffix}", held_out, direction, overrides, args)
                print(f"{phenotype} {slug} {tag} seed {seed}: evaluated", flush=True)


def _suffix(seed: int) -> str:
    """Folder-name suffix of a further training seed (seed 0 keeps the plain names)."""
    return f"_seed{seed}" if seed else ""


def _train(checkpoint: Path, options: dict, train_data: Path, channels: list[str], seed: int, args) -> None:
    if (checkpoint / "phendiff.json").is_file() and _trained(checkpoint) >= options["steps"]:
        return
    start = time.perf_counter()
    train(
        TrainConfig(
            **{"image_size": args.crop, **options},
            data=train_data,
            out=checkpoint,
            seed=seed,
            checkpoint_every=max(options["steps"] // 4, 1),
            channel_names=channels,
            resume=checkpoint.exists(),
        )
    )
    _note(checkpoint, "train_seconds", time.perf_counter() - start)


def _kept_calibration(checkpoint: Path, folder: Path, direction: tuple[str, str], suffix: str, args) -> dict:
    """`phendiff calibrate --keep-channels DNA` on the calibration set (not stored): the overrides it chose."""
    tag = f"{direction[0]}-to-{direction[1]}"
    calibration = folder / f"calibration_keep_{tag}{suffix}"
    if not (calibration / "calibration.json").is_file():
        start = time.perf_counter()
        calibrate(
            checkpoint,
            folder / "calib",
            *direction,
            calibration,
            settings=grid(args.keep_strengths, args.keep_guidances),
            n=args.n_calibrate,
            steps=args.translate_steps,
            seed=0,
            store=False,
            keep_channels=["DNA"],
        )
        _note(checkpoint, f"calibrate_keep_seconds_{tag}", time.perf_counter() - start)
    chosen = json.loads((calibration / "calibration.json").read_text())["chosen"]
    overrides = {k: chosen[k] for k in ("strength", "guidance", "negative")}
    overrides["keep_channels"] = tuple(chosen["keep_channels"])
    return overrides


def _evaluate(
    checkpoint: Path, report: Path, held_out: Path, direction: tuple[str, str], overrides: dict, args
) -> None:
    if (report / "metrics.json").is_file():
        return
    start = time.perf_counter()
    evaluate(
        checkpoint,
        held_out,
        *direction,
        report,
        truth=held_out.with_name("held_out_truth"),
        steps=args.translate_steps,
        seed=0,
        **overrides,
    )
    _note(checkpoint, f"evaluate_seconds_{report.name}", time.perf_counter() - start)


def _trained(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "phendiff.json").read_text()).get("trained_steps", 0))


def _note(checkpoint: Path, key: str, value: float) -> None:
    path = checkpoint.parent / f"timing_{checkpoint.name}.json"
    timing = json.loads(path.read_text()) if path.is_file() else {}
    timing[key] = round(value, 1)
    path.write_text(json.dumps(timing))


def collect(work: Path, args) -> str:
    rows, settings = [], set()
    for phenotype in args.phenotypes:
        source, target = PHENOTYPES[phenotype].conditions
        for direction in ((source, target), (target, source)):
            tag = f"{direction[0]}-to-{direction[1]}"
            for slug, name in NAMES.items():
                metrics_path = work / phenotype / f"report_{slug}_{tag}" / "metrics.json"
                if not metrics_path.is_file():
                    continue
                metrics = json.loads(metrics_path.read_text())
                if metrics.get("settings"):
                    settings.add(f"{name}: {metrics['settings']}")
                model = slug.split("-")[0]
                timing_path = work / phenotype / f"timing_model_{model}.json"
                timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
                steps = _trained(work / phenotype / f"model_{model}")
                minutes = timing.get("train_seconds", float("nan")) / 60
                translation = metrics.get("translation") or {}
                setting = f"s {translation['strength']:g}, w {translation['guidance']:g}" if translation else "direct"
                rows.append(
                    [phenotype, f"{direction[0]} → {direction[1]}", name, setting, f"{steps}", minutes]
                    + [metrics[c] for c in COLUMNS]
                    + [f"{metrics['identity_iou_reference']:.2f}", f"{metrics['classifier_accuracy']:.2f}"]
                )
    header = [
        "phenotype",
        "direction",
        "method",
        "translation",
        "train steps",
        "train min",
        *COLUMNS,
        "IoU ref.",
        "clf acc.",
    ]
    return (
        f"Hardware: {hardware()}. Simulator: {args.n_per_class} training images per condition "
        f"({args.size} px, cell diameter {args.cell_diameter:g} px, seed 0), {args.n_held_out} held-out images per "
        f"condition (seed 1) with ground truth. Budget: PhenDiff `tiny` {args.pixel_steps} steps, batch "
        f"{args.pixel_batch}, {args.crop}-px crops; CycleGAN `tiny` {args.cyclegan_steps} steps, batch 1, "
        f"{args.crop}-px crops. PhenDiff is evaluated twice: *calibrated* is `phendiff calibrate` run on "
        f"{args.n_calibrate} other simulated fields per condition (seed 2, no ground truth used) and then `phendiff "
        "evaluate` at the stored setting; *full inversion* is the original PhenDiff translation (strength 1, no "
        f"guidance). {args.translate_steps}-step DDIM grid; features from the offline condition classifier (not "
        "Inception: no weights here, so FID/KID are comparable within this table only). Train minutes are wall time "
        "on a shared machine.\n\n"
        + table(header, rows)
        + "\n\nphenotype_transfer and identity_iou use the simulator's ground truth (1 = every cell's phenotype "
        "moved to the target / the nuclei stayed exactly in place; IoU ref. is the segmentation's own ceiling on "
        "the originals). classifier_target_rate: share of translations that a classifier trained on real images "
        "(held-out accuracy: clf acc.) calls the target. FID and KID: lower is better; precision, recall: higher."
    )


def collect_seeds(work: Path, args) -> str:
    """The DNA-kept pair over training seeds: per seed and mean transfer and identity, and whether PhenDiff's mean
    transfer reaches CycleGAN's with its mean identity within IDENTITY_MARGIN of CycleGAN's."""
    seeds = sorted(set(args.seeds))
    rows = []
    for phenotype in args.phenotypes:
        source, target = PHENOTYPES[phenotype].conditions
        for direction in ((source, target), (target, source)):
            tag = f"{direction[0]}-to-{direction[1]}"
            means = {}
            for slug in SEEDED:
                runs = [
                    json.loads(path.read_text())
                    for seed in seeds
                    if (path := work / phenotype / f"report_{slug}_{tag}{_suffix(seed)}" / "metrics.json").is_file()
                ]
                if not runs:
                    continue
                transfer = [m["phenotype_transfer"] for m in runs]
                identity = [m["identity_iou"] for m in runs]
                settings = [(m.get("translation") or {}) for m in runs]
                means[slug] = (float(np.mean(transfer)), float(np.mean(identity)), len(runs))
                rows.append(
                    [
                        phenotype,
                        f"{direction[0]} → {direction[1]}",
                        NAMES[slug],
                        len(runs),
                        " / ".join(f"{t:.2f}" for t in transfer),
                        means[slug][0],
                        " / ".join(f"{i:.2f}" for i in identity),
                        means[slug][1],
                        " / ".join(f"s {t['strength']:g} w {t['guidance']:g}" if t else "direct" for t in settings),
                        "",
                    ]
                )
            if len(means) == 2 and means["pixel-keep"][2] == means["cyclegan-keep"][2] == len(seeds):
                (pixel_t, pixel_i, _), (gan_t, gan_i, _) = means["pixel-keep"], means["cyclegan-keep"]
                rows[-1][-1] = "yes" if pixel_t >= gan_t and pixel_i >= gan_i - IDENTITY_MARGIN else "no"
    header = [
        "phenotype",
        "direction",
        "method",
        "seeds",
        "transfer per seed",
        "mean transfer",
        "identity per seed",
        "mean identity",
        "setting per seed",
        "PhenDiff target met",
    ]
    return (
        f"The DNA-kept pair of the table above trained from {len(seeds)} seeds ({', '.join(map(str, seeds))}; seed 0 "
        "is the table above), everything else alike: the same data, budget, calibration fields (PhenDiff calibrated "
        "anew for each model, no ground truth) and held-out fields. *PhenDiff target met*: PhenDiff's mean transfer "
        f">= CycleGAN's, with its mean identity IoU within {IDENTITY_MARGIN:g} of CycleGAN's (the comparison target, "
        "read on the means; blank where a seed is missing).\n\n" + table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--phenotypes", nargs="+", default=list(PHENOTYPES))
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--n-held-out", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cell-diameter", type=float, default=20.0)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--pixel-steps", type=int, default=1200)
    parser.add_argument("--pixel-batch", type=int, default=8)
    parser.add_argument("--cyclegan-steps", type=int, default=1200)
    parser.add_argument(
        "--translate-steps",
        type=int,
        default=20,
        help="DDIM steps of the whole schedule for evaluate (strength and guidance: the defaults)",
    )
    parser.add_argument("--latent-base", help="a local Stable Diffusion folder, to add Phen-LDiff (LoRA)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--train-only", action="store_true", help="train the models, evaluate nothing")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="run `phendiff calibrate` on the PhenDiff model (seed-2 fields) before evaluating it",
    )
    parser.add_argument("--n-calibrate", type=int, default=16, help="fields per condition for calibrate")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--guidances", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--keep-strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--keep-guidances", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    parser.add_argument(
        "--evaluated",
        nargs="+",
        default=list(EVALUATED),
        choices=list(EVALUATED),
        help="which rows to evaluate (default: all)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds: each further seed trains both methods again and evaluates the DNA-kept "
        "pair (folders suffixed _seed<k>); with more than one, the method_comparison_seeds "
        "section gives their mean",
    )
    parser.add_argument("--collect", action="store_true", help="only gather finished results into the docs")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["method_comparison", "method_comparison_seeds"],
        choices=["method_comparison", "method_comparison_seeds"],
        help="which tables to gather (and write into docs/benchmarks.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.collect:
        for phenotype in args.phenotypes:
            run_phenotype(args.work, phenotype, args)
    sections = {}
    if "method_comparison" in args.sections:
        sections["method_comparison"] = collect(args.work, args)
    if "method_comparison_seeds" in args.sections and len(set(args.seeds)) > 1:
        sections["method_comparison_seeds"] = collect_seeds(args.work, args)
    for name, markdown in sections.items():
        print(markdown)
        if not args.no_write:
            print(f"written to {write_section(name, markdown)}")


if __name__ == "__main__":
    main()
