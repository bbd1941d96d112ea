"""The arguments of each `phendiff` command. Translation and training flags are made from core/options.py (light:
no torch), so a new option there needs no code here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.calibration_bars import BAR_HELP
from ..core.options import CALIBRATION_IMAGES, DEMO_FIELDS, DEVICES, MORPH_PATHS, condition_name
from .commands import (
    calibrate_command,
    demo_command,
    evaluate_command,
    generalization_command,
    rejudge_command,
    sign_command,
    simulate_command,
    train_command,
    translate_command,
)


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
    "rejudge": "phendiff rejudge calibration --out calibration-0.34 --reached-min 0.34   # accept a partial move",
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


def build_parser() -> argparse.ArgumentParser:
    """The `phendiff` parser: one subcommand each, its arguments, and the function it runs (args.run)."""
    parser = argparse.ArgumentParser(
        prog="phendiff",
        description="Reveal cell phenotypes by translating microscopy images between conditions (PhenDiff).",
    )
    sub = parser.add_subparsers(title="commands")
    for add in (
        _add_simulate,
        _add_train,
        _add_translate,
        _add_evaluate,
        _add_calibrate,
        _add_rejudge,
        _add_sign,
        _add_generalization,
        _add_demo,
    ):
        add(sub)
    return parser


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its EXAMPLES."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_simulate(sub) -> None:
    p = _command(sub, "simulate", "Write a simulated two-condition image set with ground truth beside it.")
    p.add_argument("out", type=Path, help="folder to create (one subfolder per condition)")
    p.add_argument("--phenotype", default="translocation", choices=["translocation", "golgi", "actin"])
    p.add_argument("--n-per-class", type=count, default=100, help="images per condition (default 100)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument(
        "--cell-diameter",
        type=float,
        default=28.0,
        help="cell diameter in pixels (default 28; the demo model was trained on 20)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=simulate_command)


def _add_train(sub) -> None:
    p = _command(sub, "train", "Train a PhenDiff model on a folder with one subfolder of images per condition.")
    p.add_argument("data", type=Path, help="labelled folder: DATA/<condition>/*.tif")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    _model_options(p)
    _model_options(p, ("checkpoint_every", "resume", "minutes"))
    p.set_defaults(run=train_command)


def _add_translate(sub) -> None:
    p = _command(sub, "translate", "Translate images from a source condition to one or more target conditions.")
    p.add_argument("checkpoint", help="checkpoint folder, or 'demo'")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        help="image files (TIFF, PNG, JPEG) or folders of them (searched recursively; layout kept)",
    )
    p.add_argument("--source", required=True, type=condition_name, help="condition of the input images")
    p.add_argument(
        "--target", required=True, type=condition_name, action="append", help="condition to translate to (repeatable)"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for <input>_to_<target>.tif")
    p.add_argument("--overwrite", action="store_true", help="translate again inputs whose outputs already exist")
    p.add_argument(
        "--morph",
        type=int,
        default=0,
        metavar="K",
        help="also write <name>_morph.tif: the original and K frames going deeper to the translation",
    )
    p.add_argument(
        "--morph-path",
        choices=MORPH_PATHS,
        default="strength",
        help="the morph's frames: deeper by strength (default), or at the translation's strength with the "
        "target's embedding blended from the source's (pixel checkpoints)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also write <name>_std.tif: the per-pixel standard deviation over N regenerations from one "
        "inversion that differ in the noise added along the way (where the model is unsure; needs "
        "at least 2 regeneration steps: strength x steps >= 1.5)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="also write <name>_cells.csv: every cell measured on the original and the translation",
    )
    p.add_argument(
        "--reveal",
        action="store_true",
        help="also write <name>_reveal.tif (each cell's smallest region carrying most of its change, as "
        "the cell's label) and <name>_reveal.csv (cells ranked by reveal_score: change per share of "
        "the cell's area)",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="only say how long the translation would take on this computer (the first file's tiles "
        "are timed: a few network calls) and translate nothing",
    )
    _translation_options(p)
    p.set_defaults(run=translate_command)


def _add_evaluate(sub) -> None:
    p = _command(
        sub,
        "evaluate",
        "Score translations of held-out images: FID/KID, precision/recall, cycle loss, "
        "classifier rate, per-cell measurements; writes a report.",
    )
    _held_out_arguments(p, "report folder to create")
    p.add_argument(
        "--features",
        default="classifier",
        help="feature extractor for FID/KID/precision/recall: 'classifier' (default, offline: trained on "
        "DATA's real images) or 'inception:PATH' (local Inception-v3 weights, needs torch-fidelity)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="ground-truth folder of simulated DATA (DATA_truth): adds phenotype_transfer and identity_iou",
    )
    p.add_argument("--n", type=count, help="translate only the first N source images (default: all)")
    p.add_argument("--classifier-steps", type=count, default=400, help="training steps of the condition classifier")
    _translation_options(p)
    p.set_defaults(run=evaluate_command)


def _add_calibrate(sub) -> None:
    p = _command(
        sub,
        "calibrate",
        "Choose strength and guidance for a checkpoint on held-out images (no ground truth "
        "needed) and store them as its default for this direction.",
    )
    _held_out_arguments(p, "folder for the frontier (table, plot, choice)")
    p.add_argument(
        "--unaffected",
        nargs="+",
        help="channels the condition should not change (default: the nuclear channel, e.g. DNA)",
    )
    p.add_argument("--strengths", type=float, nargs="+", help="strengths to try (default 0.2 0.3 0.4 0.5 0.6 0.8 1)")
    p.add_argument(
        "--guidances", type=float, nargs="+", help="guidance scales to try, source as the negative (default 1 2 3 4 6)"
    )
    p.add_argument(
        "--n",
        type=count,
        default=CALIBRATION_IMAGES,
        help=f"held-out source images to translate (default {CALIBRATION_IMAGES})",
    )
    p.add_argument(
        "--steps",
        type=count,
        help="DDIM steps of the whole schedule (default: the checkpoint's own, a fine-tune of the shipped base 50, else 20)",
    )
    p.add_argument("--classifier-steps", type=count, default=400, help="training steps of the condition classifier")
    p.add_argument("--batch-size", type=count, help="fields per network call (default: by device memory)")
    p.add_argument(
        "--keep-channels",
        nargs="+",
        metavar="CHANNEL",
        help="channels every setting keeps as the original's (e.g. DNA; 'none' for none); stored with the choice "
        "(default: those the checkpoint keeps by default, a fine-tune of the shipped base its DNA channel)",
    )
    _bar_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=list(DEVICES))
    p.set_defaults(run=calibrate_command)


def _add_rejudge(sub) -> None:
    p = _command(
        sub,
        "rejudge",
        "Judge an earlier calibration's sweep again by other bars, without translating again, and store what they "
        "choose in the checkpoint it was made with.",
    )
    p.add_argument("calibration", type=Path, help="a folder phendiff calibrate wrote (its calibration.json)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the frontier (table, plot, choice)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="where the checkpoint the sweep was made with is now (default: where the calibration recorded it); it "
        "must hold the same weights",
    )
    _bar_arguments(p)
    p.set_defaults(run=rejudge_command)


def _bar_arguments(p) -> None:
    """The two bars of calibrate's rule a user may set, and whether the choice is stored."""
    p.add_argument("--reached-min", type=float, metavar="SHARE", help=BAR_HELP["reached_min"])
    p.add_argument("--kept-tolerance", type=float, metavar="IOU", help=BAR_HELP["kept_tolerance"])
    p.add_argument("--no-store", action="store_true", help="write the frontier only, do not change the checkpoint")


def _add_sign(sub) -> None:
    p = _command(
        sub,
        "sign",
        "Record the digest of a checkpoint's weights in its manifest, so that it loads: for a "
        "checkpoint an older napari-phendiff wrote, or one you edited on purpose and trust.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint folder")
    p.set_defaults(run=sign_command)


def _add_generalization(sub) -> None:
    p = _command(
        sub,
        "generalization",
        "Memorisation vs generalisation: train two models on disjoint subsets and "
        "compare what they generate from the same seeds.",
    )
    p.add_argument("data", type=Path, help="labelled folder with at least 2 x N images per condition")
    p.add_argument("--out", type=Path, required=True, help="report folder to create (the two models go inside)")
    p.add_argument("--n-per-class", type=count, required=True, help="training images per condition for each model")
    p.add_argument("--n-samples", type=count, default=16, help="images generated per condition (default 16)")
    p.add_argument("--sample-steps", type=count, default=50, help="DDIM steps for generating (default 50)")
    _model_options(p)
    p.set_defaults(run=generalization_command)


def _add_demo(sub) -> None:
    p = _command(sub, "demo", "Translate simulated cells with the shipped demo model (offline, CPU, a few minutes).")
    p.add_argument("--out", type=Path, default=Path("phendiff-demo"), help="output folder (default phendiff-demo)")
    p.add_argument("--n", type=count, default=DEMO_FIELDS, help=f"images per condition (default {DEMO_FIELDS})")
    _translation_options(p)
    p.set_defaults(run=demo_command)


def _held_out_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    """A checkpoint, a labelled folder of held-out images, a direction and an output folder (evaluate, calibrate)."""
    p.add_argument("checkpoint", help="checkpoint folder, or 'demo'")
    p.add_argument("data", type=Path, help="labelled folder of held-out images (DATA/<condition>/*.tif)")
    p.add_argument("--source", required=True, type=condition_name, help="condition of the images to translate")
    p.add_argument("--target", required=True, type=condition_name, help="condition to translate them to")
    p.add_argument("--out", type=Path, required=True, help=out_help)


# The TrainConfig fields `train` and `generalization` offer, in this order; types, choices, defaults and help come
# from core/options.py.
MODEL_FIELDS = (
    "model",
    "preset",
    "start_from",
    "base",
    "adapter",
    "rank",
    "gradient_checkpointing",
    "image_size",
    "steps",
    "batch_size",
    "lr",
    "condition_dropout",
    "snr_gamma",
    "noise_offset",
    "optimizer",
    "resize",
    "channel_names",
    "mixed_precision",
    "num_workers",
    "seed",
    "device",
)


def _model_options(p: argparse.ArgumentParser, names=MODEL_FIELDS) -> None:
    """What model to train and how: shared by `train` and `generalization`, built from TrainConfig's fields."""
    from dataclasses import fields

    from ..core.options import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_HELP, TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    for name in names:
        flag, default, help = f"--{name.replace('_', '-')}", TRAIN_DEFAULTS[name], TRAIN_HELP[name]
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=help)
            continue
        kind = {"int": int, "float": float}.get(str(types[name]).split(" ")[0], str)
        kwargs = {"nargs": "+"} if "list" in str(types[name]) else {"type": kind}
        shown = (
            f" (default {default:g})"
            if isinstance(default, (int, float))
            else (f" (default {default})" if default is not None else "")
        )
        p.add_argument(flag, default=default, choices=TRAIN_CHOICES.get(name), help=help + shown, **kwargs)


def _translation_options(p: argparse.ArgumentParser) -> None:
    """A flag per translation option, made from its field in core/options.py (light: no torch). Unset ones take the
    checkpoint's calibrated setting for the direction, else the model's default, else the project default."""
    from dataclasses import fields

    from ..core import options as o

    group = p.add_argument_group(
        "translation (unset: the checkpoint's calibrated setting, else its model's default, else the project's)"
    )
    for f in fields(o.TranslateOptions):
        flag = f.metadata["flag"]
        kwargs = flag.argument(f.name, f.default)
        if flag.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    group.add_argument("--device", default="auto", choices=list(DEVICES))
