"""The `phendiff` command: parse arguments, call the core, show a progress bar. No science here, no Qt."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .core.options import DEMO_FIELDS, DEVICES, MORPH_PATHS, condition_name  # light: no torch

EXAMPLES = {
    "simulate": "phendiff simulate cells --phenotype translocation --n-per-class 100 --size 128 --seed 0",
    "train": "phendiff train cells --out my-model --preset tiny --steps 2000\n"
             "  phendiff train cells --out my-model --steps 4000 --resume      # continue a run\n"
             "  accelerate launch --multi_gpu -m napari_phendiff.cli train cells --out my-model --preset paper  # GPUs\n"
             "  torchrun --nproc_per_node 2 -m napari_phendiff.cli train cells --out my-model   # CPU processes\n"
             "  phendiff train cells --out my-ldm --model latent --base ./stable-diffusion-2-1-base --adapter lora\n"
             "  phendiff train cells --out my-cyclegan --model cyclegan --batch-size 1",
    "translate": "phendiff translate my-model cells/untreated/*.tif --source untreated --target TNFa --out translated\n"
                 "  phendiff translate my-model plate/ --source untreated --target TNFa --out translated   # a folder\n"
                 "  torchrun --nproc_per_node 4 -m napari_phendiff.cli translate my-model plate/ --source untreated "
                 "--target TNFa --out translated   # 4 processes (GPUs)\n"
                 "  phendiff translate demo image.tif --source untreated --target TNFa --target untreated --out out",
    "demo": "phendiff demo --out phendiff-demo",
    "evaluate": "phendiff evaluate my-model held-out --source untreated --target TNFa --out report\n"
                "  phendiff evaluate my-model held-out --source untreated --target TNFa --out report "
                "--truth held-out_truth   # simulated data",
    "generalization": "phendiff generalization cells --out gen --n-per-class 50 --steps 4000",
    "sign": "phendiff sign my-model   # after editing my-model/phendiff.json on purpose",
    "calibrate": "phendiff calibrate my-model held-out --source untreated --target TNFa --out calibration\n"
                 "  phendiff calibrate my-model held-out --source TNFa --target untreated --out calibration-back "
                 "--unaffected DNA",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill` and cluster schedulers send before pre-emption), handled like Ctrl-C: training saves a
    resumable checkpoint, translation stops between two files (each written atomically)."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from .core.errors import PhenDiffError

        args.run(args)
    except PhenDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # out of memory: one line with what to change, as the docks say it
        from .core.device import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        advice = MEMORY_ADVICE.get(args.run.__name__, MEMORY_ADVICE[""])
        print(f"error: out of memory on {getattr(args, 'device', 'auto')}. {advice}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return 0


MEMORY_ADVICE = {
    "_train": "Lower --batch-size or --image-size, or use --device cpu; for a fine-tuned model add "
              "--gradient-checkpointing or use --adapter lora.",
    "_generalization": "Lower --batch-size or --image-size, or use --device cpu.",
    "": "Lower --batch-size (fields per network call), or use --device cpu.",
}


def count(text: str) -> int:
    """An argparse type for how many of something: a whole number of at least 1 (a Python slice would take -1 as
    "all but the last" and 0 as "none")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phendiff",
        description="Reveal cell phenotypes by translating microscopy images between conditions (PhenDiff).",
    )
    sub = parser.add_subparsers(title="commands")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {EXAMPLES[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("simulate", "Write a simulated two-condition image set with ground truth beside it.")
    p.add_argument("out", type=Path, help="folder to create (one subfolder per condition)")
    p.add_argument("--phenotype", default="translocation", choices=["translocation", "golgi", "actin"])
    p.add_argument("--n-per-class", type=count, default=100, help="images per condition (default 100)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--cell-diameter", type=float, default=28.0,
                   help="cell diameter in pixels (default 28; the demo model was trained on 20)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_simulate)

    p = command("train", "Train a PhenDiff model on a folder with one subfolder of images per condition.")
    p.add_argument("data", type=Path, help="labelled folder: DATA/<condition>/*.tif")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    _model_options(p)
    _model_options(p, ("checkpoint_every", "resume", "minutes"))
    p.set_defaults(run=_train)

    p = command("translate", "Translate images from a source condition to one or more target conditions.")
    p.add_argument("checkpoint", help="checkpoint folder, or 'demo'")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="image files (TIFF, PNG, JPEG) or folders of them (searched recursively; layout kept)")
    p.add_argument("--source", required=True, type=condition_name, help="condition of the input images")
    p.add_argument("--target", required=True, type=condition_name, action="append",
                   help="condition to translate to (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="folder for <input>_to_<target>.tif")
    p.add_argument("--overwrite", action="store_true", help="translate again inputs whose outputs already exist")
    p.add_argument("--morph", type=int, default=0, metavar="K",
                   help="also write <name>_morph.tif: the original and K frames going deeper to the translation")
    p.add_argument("--morph-path", choices=MORPH_PATHS, default="strength",
                   help="the morph's frames: deeper by strength (default), or at the translation's strength with the "
                        "target's embedding blended from the source's (pixel checkpoints)")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="also write <name>_std.tif: the per-pixel standard deviation over N regenerations from one "
                        "inversion that differ in the noise added along the way (where the model is unsure; needs "
                        "at least 2 regeneration steps: strength x steps >= 1.5)")
    p.add_argument("--measure", action="store_true",
                   help="also write <name>_cells.csv: every cell measured on the original and the translation")
    p.add_argument("--reveal", action="store_true",
                   help="also write <name>_reveal.tif (each cell's smallest region carrying most of its change, as "
                        "the cell's label) and <name>_reveal.csv (cells ranked by reveal_score: change per share of "
                        "the cell's area)")
    p.add_argument("--estimate", action="store_true",
                   help="only say how long the translation would take on this computer (the first file's tiles "
                        "are timed: a few network calls) and translate nothing")
    _translation_options(p)
    p.set_defaults(run=_translate)

    p = command("evaluate", "Score translations of held-out images: FID/KID, precision/recall, cycle loss, "
                            "classifier rate, per-cell measurements; writes a report.")
    _held_out_arguments(p, "report folder to create")
    p.add_argument("--features", default="classifier",
                   help="feature extractor for FID/KID/precision/recall: 'classifier' (default, offline: trained on "
                        "DATA's real images) or 'inception:PATH' (local Inception-v3 weights, needs torch-fidelity)")
    p.add_argument("--truth", type=Path, help="ground-truth folder of simulated DATA (DATA_truth): adds "
                                               "phenotype_transfer and identity_iou")
    p.add_argument("--n", type=count, help="translate only the first N source images (default: all)")
    p.add_argument("--classifier-steps", type=count, default=400, help="training steps of the condition classifier")
    _translation_options(p)
    p.set_defaults(run=_evaluate)

    p = command("calibrate", "Choose strength and guidance for a checkpoint on held-out images (no ground truth "
                             "needed) and store them as its default for this direction.")
    _held_out_arguments(p, "folder for the frontier (table, plot, choice)")
    p.add_argument("--unaffected", nargs="+", help="channels the condition should not change (default: the "
                                                   "nuclear channel, e.g. DNA)")
    p.add_argument("--strengths", type=float, nargs="+", help="strengths to try (default 0.2 0.3 0.4 0.5 0.6 0.8 1)")
    p.add_argument("--guidances", type=float, nargs="+", help="guidance scales to try, source as the negative "
                                                              "(default 1 2 3 4 6)")
    p.add_argument("--n", type=count, default=16, help="held-out source images to translate (default 16)")
    p.add_argument("--steps", type=count, default=20, help="DDIM steps of the whole schedule (default 20)")
    p.add_argument("--classifier-steps", type=count, default=400, help="training steps of the condition classifier")
    p.add_argument("--batch-size", type=count, help="fields per network call (default: by device memory)")
    p.add_argument("--keep-channels", nargs="+", default=[], metavar="CHANNEL",
                   help="channels every setting keeps as the original's (e.g. DNA); stored with the choice")
    p.add_argument("--no-store", action="store_true", help="write the frontier only, do not change the checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=list(DEVICES))
    p.set_defaults(run=_calibrate)

    p = command("sign", "Record the digest of a checkpoint's weights in its manifest, so that it loads: for a "
                        "checkpoint an older napari-phendiff wrote, or one you edited on purpose and trust.")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder")
    p.set_defaults(run=_sign)

    p = command("generalization", "Memorisation vs generalisation: train two models on disjoint subsets and "
                                  "compare what they generate from the same seeds.")
    p.add_argument("data", type=Path, help="labelled folder with at least 2 x N images per condition")
    p.add_argument("--out", type=Path, required=True, help="report folder to create (the two models go inside)")
    p.add_argument("--n-per-class", type=count, required=True, help="training images per condition for each model")
    p.add_argument("--n-samples", type=count, default=16, help="images generated per condition (default 16)")
    p.add_argument("--sample-steps", type=count, default=50, help="DDIM steps for generating (default 50)")
    _model_options(p)
    p.set_defaults(run=_generalization)

    p = command("demo", "Translate simulated cells with the shipped demo model (offline, CPU, a few minutes).")
    p.add_argument("--out", type=Path, default=Path("phendiff-demo"), help="output folder (default phendiff-demo)")
    p.add_argument("--n", type=count, default=DEMO_FIELDS, help=f"images per condition (default {DEMO_FIELDS})")
    _translation_options(p)
    p.set_defaults(run=_demo)
    return parser


def _held_out_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    """A checkpoint, a labelled folder of held-out images, a direction and an output folder (evaluate, calibrate)."""
    p.add_argument("checkpoint", help="checkpoint folder, or 'demo'")
    p.add_argument("data", type=Path, help="labelled folder of held-out images (DATA/<condition>/*.tif)")
    p.add_argument("--source", required=True, type=condition_name, help="condition of the images to translate")
    p.add_argument("--target", required=True, type=condition_name, help="condition to translate them to")
    p.add_argument("--out", type=Path, required=True, help=out_help)


# The TrainConfig fields `train` and `generalization` offer, in this order; types, choices, defaults and help come
# from core/options.py.
MODEL_FIELDS = ("model", "preset", "start_from", "base", "adapter", "rank", "gradient_checkpointing", "image_size", "steps",
                "batch_size", "lr", "condition_dropout", "snr_gamma", "resize", "channel_names", "mixed_precision",
                "num_workers", "seed", "device")


def _model_options(p: argparse.ArgumentParser, names=MODEL_FIELDS) -> None:
    """What model to train and how: shared by `train` and `generalization`, built from TrainConfig's fields."""
    from dataclasses import fields

    from .core.options import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_HELP, TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    for name in names:
        flag, default, help = f"--{name.replace('_', '-')}", TRAIN_DEFAULTS[name], TRAIN_HELP[name]
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=help)
            continue
        kind = {"int": int, "float": float}.get(str(types[name]).split(" ")[0], str)
        kwargs = {"nargs": "+"} if "list" in str(types[name]) else {"type": kind}
        shown = f" (default {default:g})" if isinstance(default, (int, float)) else (
            f" (default {default})" if default is not None else "")
        p.add_argument(flag, default=default, choices=TRAIN_CHOICES.get(name), help=help + shown, **kwargs)


def _train_config(args, data: Path, out: Path, **extra):
    from dataclasses import fields

    from .core.options import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, "data": data, "out": out, **extra})


def _translation_options(p: argparse.ArgumentParser) -> None:
    """A flag per translation option, made from its field in core/options.py (light: no torch). Unset ones take the
    checkpoint's calibrated setting for the direction, else the model's default, else the project default."""
    from dataclasses import fields

    from .core import options as o

    group = p.add_argument_group("translation (unset: the checkpoint's calibrated setting, else its model's "
                                 "default, else the project's)")
    for f in fields(o.TranslateOptions):
        flag = f.metadata["flag"]
        kwargs = flag.argument(f.name, f.default)
        if flag.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    group.add_argument("--device", default="auto", choices=list(DEVICES))


def _given(args) -> dict:
    """The translation options the user set on the command line (None: not set)."""
    from .core.options import flags

    return {name: flag.value(getattr(args, name, None)) for name, flag in flags().items()}


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


class _TranslationBar:
    """A progress bar fed by TranslateEvents."""

    def __init__(self, desc: str):
        self.desc, self.bar, self.estimated = desc, None, False

    def __call__(self, event) -> None:
        if self.bar is None:
            self.bar = _progress(event.total, self.desc)
        self.bar.update(event.step - self.bar.n)
        if event.seconds_left is not None and not self.estimated:
            from .core.pace import duration

            self.estimated = True
            if event.seconds_left >= 20:  # a shorter run is over before the line is read
                self.bar.write(f"{self.desc}: about {duration(event.seconds_left)} more on this computer (timed "
                               "on its first steps)", file=sys.stderr)
        if event.phase == "done":
            self.bar.close()
            if event.copied[0]:
                print(f"{self.desc}: {event.copied[0]} of {event.copied[1]} tiles held no cell: copied, not "
                      "translated (--skip-background).")


class _CountingBar:
    """A progress bar moved by progress(done, total) callbacks; it appears with the first one, so an error raised
    before any work is the only output."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = _progress(total, self.desc)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _simulate(args) -> None:
    from .core.simulate import simulate_dataset

    bar = _CountingBar("simulating")
    out = simulate_dataset(args.out, args.phenotype, args.n_per_class, args.size, seed=args.seed,
                           cell_diameter=args.cell_diameter, progress=bar)
    bar.close()
    print(f"images: {out}\nground truth: {out.parent / (out.name + '_truth')}")


def _train(args) -> None:
    from .core.training.run import iter_train

    config = _train_config(args, args.data, args.out)
    bar = None
    events = iter_train(config)
    if int(os.environ.get("RANK", "0") or 0) != 0:  # torchrun / accelerate: the first process speaks for all
        for _ in events:
            pass
        return
    try:
        for event in events:
            if event.kind == "probe" and event.step == 1:
                print(f"timing {event.total} training steps on this computer for the time budget…")
            elif event.kind == "start":
                print(event.message)
                bar = _progress(event.total, "training")
                bar.update(event.step)
            elif event.kind == "step":
                bar.update(1)
                bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
            elif event.kind == "done":
                bar.close()
                print(f"checkpoint: {event.path}")
    except KeyboardInterrupt:
        events.close()
        saved = _trained_steps(config.out)
        if saved:
            print(f"\nstopped; resumable checkpoint of {saved} steps in {config.out} (add --resume to continue)",
                  file=sys.stderr)
        else:
            print("\nstopped before the first step was trained; nothing was saved", file=sys.stderr)
        raise


def _trained_steps(out: Path) -> int:
    """Steps of the checkpoint in `out` (0 when there is none)."""
    import json

    try:
        return int(json.loads((out / "phendiff.json").read_text()).get("trained_steps", 0))
    except (OSError, ValueError):
        return 0


def _translate(args) -> None:
    from .core.batch import SUMMARY, inputs_named_otherwise, translate_files
    from .core.models import read_manifest

    conditions = read_manifest(args.checkpoint)["conditions"]
    for path, condition, where in inputs_named_otherwise(args.inputs, args.source, conditions):
        named = "is named" if where == "name" else "sits in a folder named"
        print(f"warning: {path} {named} '{condition}' but {'its images are' if path.is_dir() else 'is'} translated "
              f"as --source {args.source}", file=sys.stderr)
    if args.estimate:
        _estimate(args)
        return
    result = translate_files(args.checkpoint, args.inputs, args.source, args.target, args.out, device=args.device,
                             overwrite=args.overwrite, morph=args.morph, morph_path=args.morph_path,
                             samples=args.samples,
                             measure=args.measure, reveal=args.reveal, progress=_TranslationBar, report=print,
                             **_given(args))
    if result.settings:
        print(f"settings: {result.settings}")
    if result.skipped:
        print(f"{len(result.skipped)} input(s) already translated in {args.out}, skipped (--overwrite redoes them)")
    if (args.out / SUMMARY).is_file():
        print(f"summary: {args.out / SUMMARY}")


def _estimate(args) -> None:
    from .core.batch import estimate_files
    from .core.pace import duration

    estimate, files = estimate_files(args.checkpoint, args.inputs, args.source, args.target, args.out,
                                     device=args.device, **_given(args))
    copied = f", {estimate.copied} copied as background" if estimate.copied else ""
    print(f"about {duration(estimate.seconds)} on this computer for {files} file(s) x {len(args.target)} target(s): "
          f"{estimate.tiles} tile(s) to translate{copied} (timed on the first file's tiles; nothing translated)")


def _evaluate(args) -> None:
    from .core.evaluate import METRIC_KEYS, evaluate

    results = evaluate(args.checkpoint, args.data, args.source, args.target, args.out, features=args.features,
                       truth=args.truth, n=args.n, device=args.device, classifier_steps=args.classifier_steps,
                       progress=_TranslationBar, **_given(args))
    keys = [*METRIC_KEYS, "phenotype_transfer", "identity_iou"]
    if results.get("settings"):
        print(f"settings: {results['settings']}")
    print(f"features: {results['features']}")
    for key in keys:
        if key in results:
            baseline = results.get(f"baseline_{key}")
            print(f"{key}: {results[key]:.4g}" + (f"  (untranslated: {baseline:.4g})" if baseline is not None else ""))
    for warning in results.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report: {args.out / 'report.html'}")


def _calibrate(args) -> None:
    from .core.calibrate import CLASSIFIER_MIN_ACCURACY, GUIDANCES, STRENGTHS, calibrate, grid

    bar = _CountingBar("calibrating")
    settings = grid(args.strengths or STRENGTHS, args.guidances or GUIDANCES)
    chosen = calibrate(args.checkpoint, args.data, args.source, args.target, args.out, settings=settings,
                       unaffected=args.unaffected, n=args.n, steps=args.steps, classifier_steps=args.classifier_steps,
                       seed=args.seed, batch_size=args.batch_size, device=args.device, store=not args.no_store,
                       keep_channels=args.keep_channels, progress=bar)
    bar.close()
    if not chosen["classifier_trusted"]:
        print(f"warning: the condition classifier told real {args.source} and {args.target} images apart in only "
              f"{chosen['classifier_accuracy']:.0%} of held-out ones (< {CLASSIFIER_MIN_ACCURACY:.0%}); the choice "
              "rests on the per-cell measurements alone.", file=sys.stderr)
    verdict = "chosen" if chosen["status"] == "calibrated" else f"not calibrated ({chosen['status']}); closest"
    print(f"{verdict}: strength {chosen['strength']:g}, guidance {chosen['guidance']:g} ({chosen['negative']}): "
          f"reached {chosen['reached']:.2f} of the way to real {args.target} (classifier P {chosen['moved']:.2f}, "
          f"real {args.target} {chosen['real_target_moved']:.2f}; cell measurements {chosen['cells_moved']:.2f}), "
          f"kept {chosen['kept']:.2f} (nuclei IoU; the {args.source} -> {args.source} control "
          f"{chosen['kept_control']:.2f})")
    print(f"why: {chosen['reason']}")
    if chosen["keep_channels"]:
        print(f"kept as the original's: {', '.join(chosen['keep_channels'])}")
    if chosen["status"] != "calibrated":
        print("warning: nothing was stored (the reason is above): translations keep their current settings. Check "
              "the model (train longer?) and the frontier before translating with it.", file=sys.stderr)
    if chosen["overshot_measurements"]:
        listed = ", ".join(f"{m['measurement']} {m['moved']:.1f}x" for m in chosen["overshot_measurements"][:5])
        print(f"warning: at this setting the translations went far past the real {args.target} cells ({listed} "
              f"of the way; 1x = all the way): the model exaggerates these, and the classifier's 'moved' may "
              "overrate the translation. Look at the translations before trusting this choice.", file=sys.stderr)
    print(f"frontier: {args.out / 'frontier.png'}")
    if not args.no_store and chosen["status"] == "calibrated":
        print(f"stored in {args.checkpoint}: translate, evaluate and the docks now default to it for "
              f"{args.source} -> {args.target}")


def _sign(args) -> None:
    from .core.checkpoint import sign_checkpoint

    path = sign_checkpoint(args.checkpoint)
    print(f"signed {path}: its weights as they are now are the ones it loads (any later change is refused)")


def _generalization(args) -> None:
    from .core.generalization import generalization

    bars = {}

    def show(name: str, event) -> None:
        if event.kind == "start":
            bars[name] = _progress(event.total, f"training model {name}")
            bars[name].update(event.step)
        elif event.kind == "step":
            bars[name].update(1)
        elif event.kind == "done":
            bars[name].close()

    config = _train_config(args, args.data, args.out)
    results = generalization(args.data, args.out, args.n_per_class, config, n_samples=args.n_samples,
                             steps=args.sample_steps, seed=args.seed, on_train_event=show)
    print(f"same-seed similarity (generalisation -> 1): {results['same_seed_similarity_median']:.3f}")
    print(f"nearest-training similarity (memorisation -> 1): {results['nearest_training_similarity_median']:.3f}")
    print(f"{results['verdict']}\nreport: {args.out}")


def _demo(args) -> None:
    from .core.demo import run_demo

    written = run_demo(args.out, n=args.n, device=args.device, progress=_TranslationBar, **_given(args))
    summary = next(p for p in written if p.name == "summary.txt")
    print(summary.read_text(), end="")  # the core writes the summary; the command line shows it
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    sys.exit(main())
