"""`phendiff calibrate`: choose strength and guidance for a checkpoint from what real data allows, no ground truth.

Real images have no simulator truth, so each setting of a sweep (strength x guidance x negative) is scored with
what a biologist can check on held-out source images (witnesses.py):
- reached: how far the translations went towards the real target condition (1 = all the way): the share of
  translated cells that moved to the target, counted on the per-cell measurements that differ between the two real
  conditions (a cell moved when most of its measurements, weighted by how well each tells the real conditions apart,
  lie nearer the real target cells' median than the real source cells'; the share is put on the scale from the real
  source cells, 0, to the real target cells, 1). Where the cells cannot be counted (cellstats.cells_moved), a condition
  classifier trained on the real images of DATA witnesses instead (its mean P(target) on the translations over its
  mean P(target) on real target images), and only if its accuracy on real images held out from its training is at
  least CLASSIFIER_MIN_ACCURACY. Both witnesses, and how far the measurements' medians moved, are reported beside;
  benchmarks/calibration_rule.py measured why the cells decide (docs/benchmarks.md, calibration_rule);
- kept: the overlap (IoU) of nuclei segmented on each translation with those segmented on its original, beside
  the same for the source -> source control at the same setting (what the model changes anyway, condition or not);
- unaffected: the change (RMSE, normalised units) of channels the user marks as untouched by the condition (DNA).

The rule that picks a setting from these scores (`choose`, with its bars) is calibration_rule.py's. The chosen
setting is stored in the checkpoint's manifest and from then on is that direction's default everywhere (CLI, API,
docks). benchmarks/calibration_rule.py checks the choice against the simulator's ground truth.

One inversion per image serves the whole sweep and its controls (sweep.py).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Generator, NamedTuple, Sequence

import numpy as np

from . import cells as cellmeasure
from .calibration_bars import check_bars
from .calibration_rule import bars, choose, uncalibrated_setting, with_default
from .calibration_store import calibration_locks, calibration_record, check_storable, store_choice
from .calibration_rule import (  # noqa: F401  (read from here by the tests and benchmarks, with the rest of a calibration)
    KEPT_FLOOR,
    KEPT_TOLERANCE,
    REACHED_MIN,
    UNAFFECTED_MAX,
    keeps_cells,
    setting_of,
)
from .cellstats import RealCells
from .checkpoint import (
    claim_new_folder,
    resolve_checkpoint,
)
from .models import load_checkpoint
from .models.base import ConditionedModel
from .dataset import load_folder, scan_folder
from .errors import ConfigError, DataError
from .features import save_classifier, train_classifier
from .frontier import frontier_figure  # noqa: F401  (read from here by the tests and benchmarks)
from .frontier import write_frontier
from .options import (
    CALIBRATION_IMAGES,
    DEFAULT_STEPS,
    TranslateOptions,
    check_count,
    model_defaults,
)
from .sweep import Setting, control_of, follow, iter_sweep_pairs, relabelled, sweep_calls, with_controls
from .sweep import sweep, sweep_pairs  # noqa: F401  (read from here by the benchmarks, with the rest of a calibration)
from .translate import is_direct, kept_channels
from .witnesses import Witnesses, left_out_channels, target_probability
from .witnesses import channel_change, kept_score, reached  # noqa: F401  (read from here by core/baselines.py and benchmarks/)

STRENGTHS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
GUIDANCES = (1.0, 2.0, 3.0, 4.0, 6.0)
NEGATIVES = ("source",)
CLASSIFIER_MIN_ACCURACY = 0.8  # held-out accuracy on real images below which the classifier is not trusted
# What runs after each of the progress's first steps, named: their pace is not the translations'. These count network
# calls (sweep.sweep_calls), so that the pace holds from the deep settings to the shallow ones; the settings are then
# scored, named too (on a GPU the network is fast and the scoring, on the CPU, is not: no pace holds for both), each
# counting SCORING_CALLS: on a 2-core CPU a setting scored took 0.27 s, a network call 0.19 s (16 images of 48 px).
PREPARATION = ("reading the folder", "training the condition classifier", "measuring the real cells", "translating")
SCORING = "scoring the settings"
SCORING_CALLS = 1


class Step(NamedTuple):
    """A step of a calibration's progress: done and total (network calls, the preparation's steps and the settings
    scored counted as one each), and what runs until the next step where its pace is not the translations'."""

    done: int
    total: int
    stage: str = ""


def grid(
    strengths: Sequence[float] = STRENGTHS,
    guidances: Sequence[float] = GUIDANCES,
    negatives: Sequence[str] = NEGATIVES,
    inversions: Sequence[str] = ("ddim",),
    intervals: Sequence[tuple[float, float]] = ((0.0, 1.0),),
) -> list[Setting]:
    """Every combination; without guidance (w 1) once per strength, whatever the negative and interval."""
    settings = []
    for inversion in inversions:
        for s in strengths:
            for w in guidances:
                for negative in negatives[:1] if w == 1.0 else negatives:
                    for interval in intervals[:1] if w == 1.0 else intervals:
                        settings.append(
                            Setting(float(s), float(w), negative, inversion, (float(interval[0]), float(interval[1])))
                        )
    return settings


def calibrate(
    checkpoint,
    data: str | Path,
    source: str,
    target: str,
    out: str | Path,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    **options,
) -> dict:
    """`iter_calibrate` to its end (its keyword options), `progress(done, total, stage)` after each of its Steps."""
    return follow(iter_calibrate(checkpoint, data, source, target, out, **options), progress)


def iter_calibrate(
    checkpoint,
    data: str | Path,
    source: str,
    target: str,
    out: str | Path,
    *,
    settings: Sequence[Setting] | None = None,
    unaffected: Sequence[str] | None = None,
    n: int | None = CALIBRATION_IMAGES,
    steps: int | None = None,
    classifier_steps: int = 400,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    store: bool = True,
    keep_channels: Sequence[str] | None = None,
    reached_min: float | None = None,
    kept_tolerance: float | None = None,
) -> Generator[Step, None, dict]:
    """Sweep settings on held-out `source` images of `data`, write the frontier into `out` and (store=True, and
    only when the rule found a setting that moves the phenotype and keeps the cells) the chosen setting into the
    checkpoint's manifest as the default for source -> target. Yields Steps as it goes: the folder read,
    the classifier trained and the real cells measured (PREPARATION), each translation (its network calls), each
    setting scored; returns the record of the choice, with `status`. Closed early (a cancel), it writes and stores
    nothing. The checkpoint's setting without calibration is swept too: the rule weighs by it.

    unaffected: channel names the condition should not change (default: the nuclear channel).
    keep_channels: channels every setting keeps as the original's, stored with the choice; None: those the checkpoint
    keeps by default (translation_defaults: a fine-tune of the shipped base keeps its DNA channel), else none.
    steps: the DDIM grid every setting walks; None: the checkpoint's own (translation_defaults: a fine-tune of the
    shipped base, 50), else the project's (20), so the choice is made at the steps it will be used at.
    reached_min, kept_tolerance: the rule's bars set by the user (calibration_bars.BAR_HELP); None: the rule's own.
    """
    settings, n = _checked_sweep(settings, n, steps, classifier_steps, reached_min, kept_tolerance)
    out = claim_new_folder(out, "the calibration")
    path, model = _opened(checkpoint, store, device)
    _check_direction(model, path, source, target)
    default = uncalibrated_setting(model.manifest, source, target)
    settings = with_default(settings, default)
    unaffected = _unaffected_channels(model, unaffected)
    base = _base_options(model, steps, seed, batch_size, keep_channels)
    check_calibration_folder(data, source, target)
    with calibration_locks(out, path, store):
        total = _progress_total(settings, source, target, base)
        stack, witnesses = yield from _prepared(
            model, data, source, target, n, base, unaffected, classifier_steps, seed, total
        )
        rows = yield from _sweep_rows(model, stack, source, target, settings, base, witnesses, total)
        kept = [c for c in unaffected if c not in base.keep_channels]
        choice = choose(rows, kept, tolerance=kept_tolerance, reached_min=reached_min, default=default)
        record = calibration_record(choice, witnesses, base, unaffected, data, len(stack), path, model.manifest)
        baseline = _untranslated(model, witnesses, stack, target)
        rules = {**bars(choice), "classifier_min_accuracy": CLASSIFIER_MIN_ACCURACY}
        # the trusted classifier beside the frontier (for a choice judged again: core/rejudge.py) and the choice
        classifier = (lambda folder: save_classifier(witnesses.classifier, folder)) if witnesses.trusted else None
        write_frontier(out, rows, choice, record, baseline, source, target, rules, default, classifier)
        if store and choice.status == "calibrated":
            store_choice(path, source, target, record, classifier)
        return record


def _checked_sweep(
    settings: Sequence[Setting] | None,
    n: int | None,
    steps: int | None,
    classifier_steps: int,
    reached_min: float | None,
    kept_tolerance: float | None,
) -> tuple[list[Setting], int | None]:
    """The settings to sweep (default: the grid) and the number of held-out images, every count and the bars a user
    set checked."""
    check_bars(reached_min=reached_min, kept_tolerance=kept_tolerance)
    settings = list(settings or grid())
    if not settings:
        raise ConfigError("Give at least one setting to calibrate.")
    n = check_count("n (held-out source images)", n, allow_none=True)
    check_count("steps", steps, allow_none=True)
    check_count("classifier_steps", classifier_steps)
    return settings, n


def _base_options(
    model, steps: int | None, seed: int, batch_size: int | None, keep_channels: Sequence[str] | None
) -> TranslateOptions:
    """The translation options every setting of the sweep shares, its kept channels checked against the model."""
    own = model_defaults(model.manifest)
    if keep_channels is None:
        keep_channels = own.get("keep_channels", ())
    if steps is None:
        steps = own.get("steps", DEFAULT_STEPS)
    base = TranslateOptions(
        steps=steps, seed=seed, batch_size=batch_size, keep_channels=tuple(keep_channels)
    ).validate()
    kept_channels(model, base.keep_channels)
    return base


def _opened(checkpoint, store: bool, device: str) -> tuple[Path, ConditionedModel]:
    """The checkpoint's folder, checked to take a stored choice (store=True), and its model (loaded unless given)."""
    path = resolve_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint.path
    if store:  # before the sweep, not after it
        check_storable(checkpoint, path)
    return path, load_checkpoint(path, device=device) if isinstance(checkpoint, (str, Path)) else checkpoint


def _progress_total(settings: list[Setting], source: str, target: str, base: TranslateOptions) -> int:
    """What the progress counts to: PREPARATION's steps, the sweep's network calls, SCORING_CALLS per setting."""
    pairs = with_controls(settings, source, target)
    return len(PREPARATION) - 1 + sweep_calls(pairs, base) + SCORING_CALLS * len(settings)


def _prepared(
    model: ConditionedModel,
    data: str | Path,
    source: str,
    target: str,
    n: int | None,
    base: TranslateOptions,
    unaffected: list[str],
    classifier_steps: int,
    seed: int,
    total: int,
) -> Generator[Step, None, tuple[np.ndarray, Witnesses]]:
    """The held-out source stack and what scores the sweep: the condition classifier trained on the real images
    (trusted only when it tells the held-out ones apart well enough), the real cells' measurements and the channels
    that should not change; yields the steps of PREPARATION (of `total`)."""
    yield Step(0, total, PREPARATION[0])
    images = load_folder(data)
    stack, target_images = _held_out(images, source, target, n)
    yield Step(1, total, PREPARATION[1])
    classifier = train_classifier(images.images, images.labels, images.conditions, steps=classifier_steps, seed=seed)
    yield Step(2, total, PREPARATION[2])
    witnesses = Witnesses(
        classifier,
        target_probability(classifier, target_images, target),
        classifier.accuracy >= CLASSIFIER_MIN_ACCURACY,
        RealCells(stack, target_images, model.channel_names),
        left_out_channels(model.channel_names, base.keep_channels, unaffected),
    )
    yield Step(3, total, PREPARATION[3])
    return stack, witnesses


def _sweep_rows(
    model,
    stack: np.ndarray,
    source: str,
    target: str,
    settings: list[Setting],
    base: TranslateOptions,
    witnesses: Witnesses,
    total: int,
) -> Generator[Step, None, list[dict]]:
    """Translate the stack at every setting and its source -> source control, then score each setting, yielding a
    Step of `total` after each, counted after PREPARATION's steps; returns one scored row per setting."""
    pairs = with_controls(settings, source, target)
    translations = iter_sweep_pairs(model, stack, source, pairs, base, of=total, after=len(PREPARATION) - 1)
    scored_from = total - SCORING_CALLS * len(settings)  # the last translation's step: the scoring runs after it
    translated = yield from relabelled(
        translations, lambda step: Step(step[0], step[1], SCORING if step[0] == scored_from else "")
    )
    rows = []
    for s in settings:
        control = translated[(source, control_of(s))]
        rows.append({**asdict(s), **witnesses.score(model, stack, translated[(target, s)], control, target)})
        done = total - SCORING_CALLS * (len(settings) - len(rows))
        yield Step(done, total, SCORING if done < total else "")  # the last: nothing left to name
    return rows


def _untranslated(model, witnesses: Witnesses, stack: np.ndarray, target: str) -> dict:
    """The scores of the held-out images as they are: where the frontier starts."""
    return {
        "reached": witnesses.score(model, stack, stack, stack, target)["reached"],
        "kept": 1.0,
        "kept_control": 1.0,
        "moved": target_probability(witnesses.classifier, stack, target),
    }


def _check_direction(model, path: Path, source: str, target: str) -> None:
    """A model with strength and guidance, and two different conditions it knows."""
    if is_direct(model):
        raise ConfigError(f"{path}: a CycleGAN maps images directly; it has no strength or guidance to calibrate.")
    if source == target:
        raise ConfigError("Source and target are the same condition; give two different conditions.")
    for name in (source, target):
        model.condition_index(name)


def _unaffected_channels(model, unaffected: Sequence[str] | None) -> list[str]:
    """The channels the condition should not change, checked against the checkpoint's (default: the nuclear one)."""
    unaffected = (
        list(unaffected) if unaffected else [model.channel_names[cellmeasure.nuclear_channel(model.channel_names)]]
    )
    missing = [c for c in unaffected if c not in model.channel_names]
    if missing:
        raise ConfigError(
            f"Unaffected channel(s) {', '.join(missing)} are not in the checkpoint's channels "
            f"({', '.join(model.channel_names)})."
        )
    return unaffected


def check_calibration_folder(data: str | Path, source: str, target: str) -> None:
    """Raise DataError, before any image is read, unless `data` has a subfolder of images for both conditions."""
    folder = scan_folder(data)
    for name in (source, target):
        if name not in folder.conditions:
            raise DataError(
                f"{folder.root}: has no subfolder {name!r} (it has {', '.join(folder.conditions)}); calibration "
                "needs real images of both conditions."
            )


def _held_out(images, source: str, target: str, n: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `n` source images of the labelled folder as one stack (they must share a size), and every real
    target image."""
    source_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == source][:n]
    shapes = {im.shape for im in source_images}
    if len(shapes) != 1:
        raise DataError(
            f"{images.root / source}: calibration needs images of one size, found "
            f"{', '.join(str(s) for s in sorted(shapes))}; crop them to one size."
        )
    target_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == target]
    return np.stack(source_images), target_images
