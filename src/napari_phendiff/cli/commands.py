"""What each `phendiff` command runs: its call into the core and what it prints. The core returns; only these print."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from .progress import CountingBar, TranslationBar, progress_bar


def train_config(args, data: Path, out: Path, **extra):
    """The TrainConfig of what `train` or `generalization` was given (checked when made: ConfigError)."""
    from dataclasses import fields

    from ..core.options import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, "data": data, "out": out, **extra})


def given_options(args) -> dict:
    """The translation options the user set on the command line (None: not set)."""
    from ..core.options import flags

    return {name: flag.value(getattr(args, name, None)) for name, flag in flags().items()}


def simulate_command(args) -> None:
    from ..core.simulate import simulate_dataset

    bar = CountingBar("simulating")
    out = simulate_dataset(
        args.out,
        args.phenotype,
        args.n_per_class,
        args.size,
        seed=args.seed,
        cell_diameter=args.cell_diameter,
        progress=bar,
    )
    bar.close()
    print(f"images: {out}\nground truth: {out.parent / (out.name + '_truth')}")


def train_command(args) -> None:
    from ..core.training.run import iter_train

    config = train_config(args, args.data, args.out)
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
                bar = progress_bar(event.total, "training")
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
            print(
                f"\nstopped; resumable checkpoint of {saved} steps in {config.out} (add --resume to continue)",
                file=sys.stderr,
            )
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


def translate_command(args) -> None:
    from ..core.batch import SUMMARY, translate_files
    from ..core.files import inputs_named_otherwise
    from ..core.models import read_manifest

    conditions = read_manifest(args.checkpoint)["conditions"]
    for path, condition, where in inputs_named_otherwise(args.inputs, args.source, conditions):
        named = "is named" if where == "name" else "sits in a folder named"
        print(
            f"warning: {path} {named} '{condition}' but {'its images are' if path.is_dir() else 'is'} translated "
            f"as --source {args.source}",
            file=sys.stderr,
        )
    if args.estimate:
        _estimate(args)
        return
    result = translate_files(
        args.checkpoint,
        args.inputs,
        args.source,
        args.target,
        args.out,
        device=args.device,
        overwrite=args.overwrite,
        morph=args.morph,
        morph_path=args.morph_path,
        samples=args.samples,
        measure=args.measure,
        reveal=args.reveal,
        progress=TranslationBar,
        report=print,
        **given_options(args),
    )
    if result.settings:
        print(f"settings: {result.settings}")
    if result.skipped:
        print(f"{len(result.skipped)} input(s) already translated in {args.out}, skipped (--overwrite redoes them)")
    if (args.out / SUMMARY).is_file():
        print(f"summary: {args.out / SUMMARY}")


def _estimate(args) -> None:
    from ..core.batch import estimate_files
    from ..core.pace import duration

    estimate, files = estimate_files(
        args.checkpoint, args.inputs, args.source, args.target, args.out, device=args.device, **given_options(args)
    )
    copied = f", {estimate.copied} copied as background" if estimate.copied else ""
    print(
        f"about {duration(estimate.seconds)} on this computer for {files} file(s) x {len(args.target)} target(s): "
        f"{estimate.tiles} tile(s) to translate{copied} (timed on the first file's tiles; nothing translated)"
    )


def evaluate_command(args) -> None:
    from ..core.evaluate import METRIC_KEYS, evaluate

    results = evaluate(
        args.checkpoint,
        args.data,
        args.source,
        args.target,
        args.out,
        features=args.features,
        truth=args.truth,
        n=args.n,
        device=args.device,
        classifier_steps=args.classifier_steps,
        progress=TranslationBar,
        **given_options(args),
    )
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


def calibrate_command(args) -> None:
    from ..core.calibrate import GUIDANCES, STRENGTHS, calibrate, grid

    bar = CountingBar("calibrating", percent=True)  # counted in network calls
    settings = grid(args.strengths or STRENGTHS, args.guidances or GUIDANCES)
    try:
        chosen = calibrate(
            args.checkpoint,
            args.data,
            args.source,
            args.target,
            args.out,
            settings=settings,
            unaffected=args.unaffected,
            n=args.n,
            steps=args.steps,
            classifier_steps=args.classifier_steps,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            store=not args.no_store,
            keep_channels=args.keep_channels,
            reached_min=args.reached_min,
            kept_tolerance=args.kept_tolerance,
            progress=bar,
        )
    finally:
        bar.close()  # the bar's line ended, an interrupt or an error printed below it
    print_calibration(args, chosen)


def print_calibration(args, chosen: dict) -> None:
    """What a calibration chose and why, its warnings, and where the frontier and the choice went."""
    from ..core.calibrate import CLASSIFIER_MIN_ACCURACY
    from ..core.calibration_bars import bars_by_hand
    from ..core.calibration_store import overshoot_warning

    counted = math.isfinite(chosen["cells_moved"])
    cells = f"{chosen['cells_moved']:.2f}" if counted else "not countable"
    reached = f"{chosen['reached']:.2f}" if math.isfinite(chosen["reached"]) else "unknown"
    if not counted:  # the classifier is the witness, if it is trusted
        untrusted = (
            f" and the condition classifier told real {args.source} and {args.target} images apart in only "
            f"{chosen['classifier_accuracy']:.0%} of held-out ones (< {CLASSIFIER_MIN_ACCURACY:.0%}): nothing could "
            "say how far the phenotype moved."
        )
        print(
            f"warning: the per-cell measurements could not count moved cells (too few cells, or too few real "
            f"{args.source} and {args.target} cells told apart by them)"
            + (untrusted if not chosen["classifier_trusted"] else "; the choice rests on the condition classifier."),
            file=sys.stderr,
        )
    verdict = "chosen" if chosen["status"] == "calibrated" else f"not calibrated ({chosen['status']}); closest"
    print(
        f"{verdict}: strength {chosen['strength']:g}, guidance {chosen['guidance']:g} ({chosen['negative']}): "
        f"reached {reached} of the way to real {args.target} (cells moved {cells}; "
        f"classifier P {chosen['moved']:.2f}, real {args.target} {chosen['real_target_moved']:.2f}), "
        f"kept {chosen['kept']:.2f} (nuclei IoU; the {args.source} -> {args.source} control "
        f"{chosen['kept_control']:.2f})"
    )
    print(f"why: {chosen['reason']}")
    by_hand = bars_by_hand(chosen)
    if by_hand:
        print(f"judged by bars other than the rule's own: {by_hand}")
    if chosen["keep_channels"]:
        print(f"kept as the original's: {', '.join(chosen['keep_channels'])}")
    if chosen["status"] != "calibrated":
        print(
            "warning: nothing was stored (the reason is above): translations keep their current settings. Check "
            "the model (train longer?) and the frontier before translating with it." + _partial_move(chosen, args),
            file=sys.stderr,
        )
    exaggerated = overshoot_warning(chosen, args.target)
    if exaggerated:
        print(f"warning: {exaggerated[0].lower()}{exaggerated[1:]}", file=sys.stderr)
    print(f"frontier: {args.out / 'frontier.png'}")
    if not args.no_store and chosen["status"] == "calibrated":
        print(
            f"stored in {args.checkpoint}: translate, evaluate and the docks now default to it for "
            f"{args.source} -> {args.target}"
        )


def _partial_move(chosen: dict, args) -> str:
    """Where the cells were kept but the phenotype moved less than the bar: how to store that partial move anyway (the
    command, at the tolerance the calibration was judged by)."""
    from ..core.calibration_bars import KEPT_TOLERANCE, partial_move

    share = partial_move(chosen)
    if share is None:
        return ""
    again = ["phendiff", "rejudge", str(args.out), "--out", f"{args.out}-{share:.2f}", "--reached-min", f"{share:.2f}"]
    if chosen.get("kept_tolerance", KEPT_TOLERANCE) != KEPT_TOLERANCE:
        again += ["--kept-tolerance", f"{chosen['kept_tolerance']:g}"]
    if args.no_store:
        again.append("--no-store")
    return (
        " To store a partial move like the furthest that kept the cells, judge this sweep again at that bar, after "
        "looking at its translations (a partial move may be the model's noise rather than the phenotype); no "
        f"translation runs again: {shlex.join(again)}"
    )


def rejudge_command(args) -> None:
    from ..core.options import direction_of
    from ..core.rejudge import read_calibration, rejudge

    saved = read_calibration(args.calibration)
    chosen = rejudge(
        args.calibration,
        args.out,
        checkpoint=args.checkpoint,
        reached_min=args.reached_min,
        kept_tolerance=args.kept_tolerance,
        store=not args.no_store,
        saved=saved,
    )
    source, target = direction_of(saved["direction"])
    shown = argparse.Namespace(
        source=source, target=target, out=args.out, no_store=args.no_store, checkpoint=chosen["checkpoint"]
    )
    print_calibration(shown, chosen)


def sign_command(args) -> None:
    from ..core.checkpoint import sign_checkpoint

    path = sign_checkpoint(args.checkpoint)
    print(f"signed {path}: its weights as they are now are the ones it loads (any later change is refused)")


def generalization_command(args) -> None:
    from ..core.generalization import generalization

    bars = {}

    def show(name: str, event) -> None:
        if event.kind == "start":
            bars[name] = progress_bar(event.total, f"training model {name}")
            bars[name].update(event.step)
        elif event.kind == "step":
            bars[name].update(1)
        elif event.kind == "done":
            bars[name].close()

    config = train_config(args, args.data, args.out)
    results = generalization(
        args.data,
        args.out,
        args.n_per_class,
        config,
        n_samples=args.n_samples,
        steps=args.sample_steps,
        seed=args.seed,
        on_train_event=show,
    )
    print(f"same-seed similarity (generalisation -> 1): {results['same_seed_similarity_median']:.3f}")
    print(f"nearest-training similarity (memorisation -> 1): {results['nearest_training_similarity_median']:.3f}")
    print(f"{results['verdict']}\nreport: {args.out}")


def demo_command(args) -> None:
    from ..core.demo import run_demo

    written = run_demo(args.out, n=args.n, device=args.device, progress=TranslationBar, **given_options(args))
    summary = next(p for p in written if p.name == "summary.txt")
    print(summary.read_text(), end="")  # the core writes the summary; the command line shows it
    print("\n".join(str(p) for p in written))
