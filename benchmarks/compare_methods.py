"""The papers' comparison on the simulator: CycleGAN vs PhenDiff (pixel) [vs Phen-LDiff], every evaluation metric.

    python benchmarks/compare_methods.py --work /tmp/compare [--phenotypes translocation golgi actin]
        [--n-per-class 100] [--pixel-steps 1200] [--cyclegan-steps 1200] [--latent-base SD_FOLDER]

For each phenotype: simulate a training set (seed 0), a held-out set with ground truth (seed 1) and a calibration
set (seed 2), train each method on the training set with the stated budget, calibrate the PhenDiff model on the
calibration set (`--calibrate`: `phendiff calibrate`, no ground truth), and run `phendiff evaluate` in both
directions on the held-out set: CycleGAN, PhenDiff at its calibrated setting, PhenDiff's original full inversion. Stages already done in --work are reused, so an interrupted run continues and several phenotypes can
run as separate processes (--no-write), with one final `--collect` writing the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
EVALUATED = {"cyclegan": {}, "pixel": {}, "pixel-full": {"strength": 1.0, "guidance": 1.0}, "latent": {},
             "cyclegan-keep": {"keep_channels": ("DNA",)}, "pixel-keep": None}
NAMES = {"cyclegan": "CycleGAN", "pixel": "PhenDiff (pixel), calibrated",
         "pixel-full": "PhenDiff (pixel), full inversion", "latent": "Phen-LDiff (LoRA)",
         "cyclegan-keep": "CycleGAN, DNA kept", "pixel-keep": "PhenDiff (pixel), DNA kept, calibrated"}
COLUMNS = ("phenotype_transfer", "identity_iou", "classifier_target_rate", "fid", "kid_mean", "precision", "recall",
           "cycle_l2_per_pixel")


def run_phenotype(work: Path, phenotype: str, args) -> None:
    folder = work / phenotype
    train_data, held_out = folder / "train", folder / "held_out"
    if not train_data.exists():
        simulate_dataset(train_data, phenotype, args.n_per_class, args.size, seed=0, cell_diameter=args.cell_diameter)
    if not held_out.exists():
        simulate_dataset(held_out, phenotype, args.n_held_out, args.size, seed=1, cell_diameter=args.cell_diameter)
    if not (folder / "calib").exists():
        simulate_dataset(folder / "calib", phenotype, args.n_calibrate, args.size, seed=2,
                         cell_diameter=args.cell_diameter)
    source, target = PHENOTYPES[phenotype].conditions
    channels = list(PHENOTYPES[phenotype].channels)
    methods = {
        "CycleGAN": dict(model="cyclegan", steps=args.cyclegan_steps, batch_size=1),
        "PhenDiff (pixel)": dict(model="pixel", steps=args.pixel_steps, batch_size=args.pixel_batch),
    }
    if args.latent_base:
        methods["Phen-LDiff (LoRA)"] = dict(model="latent", base=args.latent_base, adapter="lora", resize=True,
                                            image_size=512, steps=args.pixel_steps, batch_size=args.pixel_batch)
    for name, options in methods.items():
        slug = options["model"]
        checkpoint, report = folder / f"model_{slug}", folder / f"report_{slug}"
        if not (checkpoint / "phendiff.json").is_file() or _trained(checkpoint) < options["steps"]:
            start = time.perf_counter()
            config = TrainConfig(**{"image_size": args.crop, **options}, data=train_data, out=checkpoint, seed=0,
                                 checkpoint_every=max(options["steps"] // 4, 1), channel_names=channels,
                                 resume=checkpoint.exists())
            train(config)
            _note(checkpoint, "train_seconds", time.perf_counter() - start)
        print(f"{phenotype} {name}: trained", flush=True)
    if args.train_only:
        return
    for direction in ((source, target), (target, source)):
        tag = f"{direction[0]}-to-{direction[1]}"
        for slug, overrides in EVALUATED.items():
            checkpoint = folder / f"model_{slug.split('-')[0]}"
            if not (checkpoint / "phendiff.json").is_file():
                continue
            if slug == "pixel" and args.calibrate and not (folder / f"calibration_{tag}").is_dir():
                start = time.perf_counter()
                calibrate(checkpoint, folder / "calib", *direction, folder / f"calibration_{tag}",
                          settings=grid(args.strengths, args.guidances), n=args.n_calibrate,
                          steps=args.translate_steps, seed=0)
                _note(checkpoint, f"calibrate_seconds_{tag}", time.perf_counter() - start)
            if overrides is None:  # calibrated with the DNA kept, on the calibration set
                calibration = folder / f"calibration_keep_{tag}"
                if not (calibration / "calibration.json").is_file():
                    start = time.perf_counter()
                    calibrate(checkpoint, folder / "calib", *direction, calibration,
                              settings=grid(args.keep_strengths, args.keep_guidances), n=args.n_calibrate,
                              steps=args.translate_steps, seed=0, store=False, keep_channels=["DNA"])
                    _note(checkpoint, f"calibrate_keep_seconds_{tag}", time.perf_counter() - start)
                chosen = json.loads((calibration / "calibration.json").read_text())["chosen"]
                overrides = {k: chosen[k] for k in ("strength", "guidance", "negative")}
                overrides["keep_channels"] = tuple(chosen["keep_channels"])
            report = folder / f"report_{slug}_{tag}"
            if not (report / "metrics.json").is_file():
                start = time.perf_counter()
                evaluate(checkpoint, held_out, *direction, report, truth=held_out.with_name("held_out_truth"),
                         steps=args.translate_steps, seed=0, **overrides)
                _note(checkpoint, f"evaluate_seconds_{slug}_{tag}", time.perf_counter() - start)
            print(f"{phenotype} {slug} {tag}: evaluated", flush=True)


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
                setting = (f"s {translation['strength']:g}, w {translation['guidance']:g}"
                           if translation else "direct")
                rows.append([phenotype, f"{direction[0]} → {direction[1]}", name, setting, f"{steps}", minutes]
                            + [metrics[c] for c in COLUMNS]
                            + [f"{metrics['identity_iou_reference']:.2f}", f"{metrics['classifier_accuracy']:.2f}"])
    header = ["phenotype", "direction", "method", "translation", "train steps", "train min", *COLUMNS, "IoU ref.",
              "clf acc."]
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
    parser.add_argument("--translate-steps", type=int, default=20,
                        help="DDIM steps of the whole schedule for evaluate (strength and guidance: the defaults)")
    parser.add_argument("--latent-base", help="a local Stable Diffusion folder, to add Phen-LDiff (LoRA)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--train-only", action="store_true", help="train the models, evaluate nothing")
    parser.add_argument("--calibrate", action="store_true",
                        help="run `phendiff calibrate` on the PhenDiff model (seed-2 fields) before evaluating it")
    parser.add_argument("--n-calibrate", type=int, default=16, help="fields per condition for calibrate")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--guidances", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--keep-strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--keep-guidances", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--collect", action="store_true", help="only gather finished results into the docs")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.collect:
        for phenotype in args.phenotypes:
            run_phenotype(args.work, phenotype, args)
    markdown = collect(args.work, args)
    print(markdown)
    if not args.no_write:
        print(f"written to {write_section('method_comparison', markdown)}")


if __name__ == "__main__":
    main()
