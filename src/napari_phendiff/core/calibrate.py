"""`phendiff calibrate`: choose strength and guidance for a checkpoint from what real data allows, no ground truth.

Real images have no simulator truth, so each setting of a sweep (strength x guidance x negative) is scored with
what a biologist can check on held-out source images (witnesses.py):
- reached: how far the translations went towards the real target condition (1 = all the way), from two witnesses:
  a condition classifier trained on the real images of DATA (its mean P(target) on the translations over its mean
  P(target) on real target images) and the per-cell measurements that differ between the two real conditions (the
  median share of the way their translated medians moved); the classifier counts only if its accuracy on real
  images held out from its training is at least CLASSIFIER_MIN_ACCURACY;
- kept: the overlap (IoU) of nuclei segmented on each translation with those segmented on its original, beside
  the same for the source -> source control at the same setting (what the model changes anyway, condition or not);
- unaffected: the change (RMSE, normalised units) of channels the user marks as untouched by the condition (DNA).

The rule (`choose`) moves the phenotype first and keeps the cells second: among the settings that keep the nuclei
(kept within KEPT_TOLERANCE of the control and above KEPT_FLOOR, unaffected channels within UNAFFECTED_MAX), the
one that reached furthest (reached is capped at 1: going past the real target is no better); within REACHED_TIE of
it, the one that keeps most, then the gentlest. If no setting that keeps the nuclei reached REACHED_MIN of the way,
or none keeps them, the sweep is reported as such and nothing is stored. The chosen setting is stored in the
checkpoint's manifest and from then on is that direction's default everywhere (CLI, API, docks).
benchmarks/calibration_rule.py checks the choice against the simulator's ground truth.

One inversion per image serves the whole sweep and its controls (sweep.py).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import cells as cellmeasure
from .cellstats import RealCells, overshot
from .checkpoint import (
    MANIFEST,
    NAMED_CHECKPOINTS,
    atomic_folder,
    check_writable,
    claim_new_folder,
    output_lock,
    resolve_checkpoint,
)
from .models import load_checkpoint
from .dataset import load_folder
from .errors import CheckpointError, ConfigError, DataError
from .features import train_classifier
from .options import CALIBRATED_FIELDS, TranslateOptions, check_count, direction_key
from .sweep import Setting, sweep_pairs
from .sweep import sweep  # noqa: F401  (read from here by the benchmarks, with the rest of a calibration)
from .translate import is_direct, kept_channels
from .witnesses import Witnesses, target_probability
from .witnesses import channel_change, kept_score  # noqa: F401  (read from here by core/baselines.py and benchmarks/)

STRENGTHS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
GUIDANCES = (1.0, 2.0, 3.0, 4.0, 6.0)
NEGATIVES = ("source",)
# The rule's bars (see the module docstring), measured in benchmarks/calibration_rule.py (docs/benchmarks.md,
# calibration_rule): identity is judged against the source -> source control at the same setting, not against a fixed
# IoU, because what a segmentation can keep differs between data sets and models. Translations whose true identity
# was 0.9 of the segmentation's ceiling (the bar the simulator's truth sets) lost 0.09-0.17 IoU beyond their control
# (median 0.14 over 10 simulator directions, 0.13-0.15 on real nuclei); of the bars tried (tolerance 0.05-0.25 x
# reached 0.25/0.5/0.75), 0.16 and 0.5 met the target in most simulator directions (5 of 10), and the real-nuclei
# directions, not used to choose, agreed (4 of 4).
KEPT_TOLERANCE = 0.16  # nuclei IoU a translation may lose beyond its control
KEPT_FLOOR = 0.5  # below this the nuclei are lost, whatever the control did
UNAFFECTED_MAX = 0.2  # RMSE (normalised units) of a channel the condition does not touch
REACHED_MIN = 0.5  # "moved the phenotype": at least half the way to the real target (untranslated: 0)
REACHED_TIE = 0.05  # settings within this of the furthest count as tied; the one keeping more wins
CLASSIFIER_MIN_ACCURACY = 0.8  # held-out accuracy on real images below which the classifier is not trusted


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


def control_of(setting: Setting) -> Setting:
    """The source -> source translation that shows what `setting` changes anyway. Guidance against the source
    condition has no effect when the target is the source, so those controls are one per strength and inversion."""
    if setting.negative == "source":
        return Setting(setting.strength, 1.0, "source", setting.inversion)
    return setting


@dataclass
class Choice:
    """The rule's verdict on a sweep: the chosen row (None when nothing may be stored), why, and the status:
    'calibrated', 'not moved' (the cells were kept but the phenotype did not move) or 'not kept' (no setting kept
    the nuclei). `best` is the row the rule would have taken, shown even when nothing is stored."""

    row: dict | None
    status: str
    reason: str
    best: dict


def keeps_cells(row: dict, unaffected: Sequence[str] = (), tolerance: float | None = None) -> bool:
    """Whether a sweep row kept the nuclei: within KEPT_TOLERANCE of its control, above KEPT_FLOOR, and each
    unaffected channel changed at most UNAFFECTED_MAX."""
    tolerance = KEPT_TOLERANCE if tolerance is None else tolerance
    return row["kept"] >= max(row.get("kept_control", 1.0) - tolerance, KEPT_FLOOR) and all(
        row[f"change_{c}"] <= UNAFFECTED_MAX for c in unaffected
    )


def choose(
    rows: list[dict], unaffected: Sequence[str] = (), tolerance: float | None = None, reached_min: float | None = None
) -> Choice:
    """Move the phenotype first, keep the cells second (the module docstring has the rule and its bars;
    `tolerance` and `reached_min` replace KEPT_TOLERANCE and REACHED_MIN, for benchmarks/calibration_rule.py,
    which measured them)."""
    tolerance = KEPT_TOLERANCE if tolerance is None else tolerance
    reached_min = REACHED_MIN if reached_min is None else reached_min

    def label(row):
        return Setting(row["strength"], row["guidance"], row.get("negative", "source")).label()

    def reached(row):
        return min(row["reached"], 1.0) if np.isfinite(row["reached"]) else -np.inf

    feasible = [r for r in rows if keeps_cells(r, unaffected, tolerance)]
    if not feasible:
        best = max(rows, key=lambda r: r["kept"] - r.get("kept_control", 1.0))
        return Choice(
            None,
            "not kept",
            f"No setting kept the nuclei: the closest, {label(best)}, lost "
            f"{best.get('kept_control', 1.0) - best['kept']:.2f} of nuclei overlap beyond its source -> "
            f"source control (allowed {tolerance:g}), kept {best['kept']:.2f}.",
            best,
        )
    furthest = max(reached(r) for r in feasible)
    tied = [r for r in feasible if reached(r) >= furthest - REACHED_TIE]
    best = max(tied, key=lambda r: (r["kept"] - r.get("kept_control", 1.0), -r["strength"], -r["guidance"]))
    if furthest < reached_min:
        return Choice(
            None,
            "not moved",
            f"No setting that kept the nuclei moved the phenotype: the furthest, "
            f"{label(best)}, went {reached(best):.2f} of the way to the real target (at least "
            f"{reached_min:g} needed).",
            best,
        )
    within = f"within {tolerance:g} of the source -> source control"
    kept = f"it kept {best['kept']:.2f}, the control {best.get('kept_control', 1.0):.2f}"
    if len(feasible) == 1:
        why = (
            f"{label(best)} was the only setting that kept the nuclei {within} ({kept}); it went "
            f"{reached(best):.2f} of the way to the real target."
        )
    elif reached(best) >= furthest:
        why = (
            f"{label(best)} went {reached(best):.2f} of the way to the real target, the furthest of the "
            f"{len(feasible)} settings that kept the nuclei {within} ({kept})"
            + ("; of those as far, it kept the nuclei best." if len(tied) > 1 else ".")
        )
    else:
        why = (
            f"{label(best)} went {reached(best):.2f} of the way to the real target, within {REACHED_TIE:g} of the "
            f"furthest ({furthest:.2f}) of the {len(feasible)} settings that kept the nuclei {within}, and kept "
            f"them best of those ({kept})."
        )
    return Choice(best, "calibrated", why, best)


def calibrate(
    checkpoint,
    data: str | Path,
    source: str,
    target: str,
    out: str | Path,
    *,
    settings: Sequence[Setting] | None = None,
    unaffected: Sequence[str] | None = None,
    n: int | None = 16,
    steps: int = 20,
    classifier_steps: int = 400,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    store: bool = True,
    keep_channels: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Sweep settings on held-out `source` images of `data`, write the frontier into `out` and (store=True, and
    only when the rule found a setting that moves the phenotype and keeps the cells) the chosen setting into the
    checkpoint's manifest as the default for source -> target. Returns the record of the choice, with `status`.

    unaffected: channel names the condition should not change (default: the nuclear channel).
    keep_channels: channels every setting keeps as the original's (TranslateOptions.keep_channels); stored with the
    choice.
    """
    settings = list(settings or grid())
    if not settings:
        raise ConfigError("Give at least one setting to calibrate.")
    n = check_count("n (held-out source images)", n, allow_none=True)
    for name, value in (("steps", steps), ("classifier_steps", classifier_steps)):
        check_count(name, value)
    out = claim_new_folder(out, "the calibration")
    path = resolve_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint.path
    if store:  # before the sweep, not after it
        _check_storable(checkpoint, path)
    model = load_checkpoint(path, device=device) if isinstance(checkpoint, (str, Path)) else checkpoint
    _check_direction(model, path, source, target)
    unaffected = _unaffected_channels(model, unaffected)
    with contextlib.ExitStack() as locks:  # one writer per output: the calibration folder, the checkpoint
        locks.enter_context(output_lock(out, "a calibration"))
        if store:
            locks.enter_context(output_lock(path, "a calibration that will store its choice"))
        images = load_folder(data)
        stack, target_images = _held_out(images, source, target, n)
        base = TranslateOptions(
            steps=steps, seed=seed, batch_size=batch_size, keep_channels=tuple(keep_channels)
        ).validate()
        kept_channels(model, base.keep_channels)
        classifier = train_classifier(
            images.images, images.labels, images.conditions, steps=classifier_steps, seed=seed
        )
        witnesses = Witnesses(
            classifier,
            target_probability(classifier, target_images, target),
            classifier.accuracy >= CLASSIFIER_MIN_ACCURACY,
            RealCells(stack, target_images, model.channel_names),
            tuple(dict.fromkeys([*base.keep_channels, *unaffected])),
        )
        pairs = [(target, s) for s in settings] + [(source, control_of(s)) for s in settings]
        translated = sweep_pairs(model, stack, source, pairs, base, progress=progress)
        rows = [
            {
                **asdict(s),
                **witnesses.score(model, stack, translated[(target, s)], translated[(source, control_of(s))], target),
            }
            for s in settings
        ]
        choice = choose(rows, [c for c in unaffected if c not in base.keep_channels])
        record = _record(
            choice, witnesses, translated[(target, _setting_of(choice.best))], base, steps, unaffected, data, len(stack)
        )
        baseline = {
            "reached": witnesses.score(model, stack, stack, stack, target)["reached"],
            "kept": 1.0,
            "kept_control": 1.0,
            "moved": target_probability(classifier, stack, target),
        }
        _write_frontier(out, rows, choice, record, baseline, source, target)
        if store and choice.status == "calibrated":
            store_calibration(path, source, target, record)
        return record


def _check_storable(checkpoint, path: Path) -> None:
    """Refuse, before any work, to store a choice in a shipped checkpoint or in one that cannot be written."""
    if str(checkpoint) in NAMED_CHECKPOINTS:
        raise CheckpointError(
            f"{checkpoint!r} is a shipped checkpoint and cannot be changed; copy its folder "
            f"({path}) and calibrate the copy, or calibrate with store=False (--no-store)."
        )
    try:
        check_writable(path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint cannot be written, so the choice could not be stored in "
            "it; make it writable, calibrate a copy, or calibrate with store=False "
            "(--no-store)."
        ) from exc


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


def _held_out(images, source: str, target: str, n: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `n` source images of the labelled folder as one stack (they must share a size), and every real
    target image."""
    for name in (source, target):
        if name not in images.conditions:
            raise DataError(
                f"{images.root}: has no subfolder {name!r} (it has "
                f"{', '.join(images.conditions)}); calibration needs real images of both "
                "conditions."
            )
    source_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == source][:n]
    shapes = {im.shape for im in source_images}
    if len(shapes) != 1:
        raise DataError(
            f"{images.root / source}: calibration needs images of one size, found "
            f"{', '.join(str(s) for s in sorted(shapes))}; crop them to one size."
        )
    target_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == target]
    return np.stack(source_images), target_images


def _record(
    choice: Choice,
    witnesses: Witnesses,
    best_translated: np.ndarray,
    base: TranslateOptions,
    steps: int,
    unaffected: list[str],
    data,
    images: int,
) -> dict:
    """What a calibration found: the setting the rule took (or the closest), why, its scores and where they came
    from (calibration.json's "chosen", and what store_calibration writes into the manifest)."""
    shown = choice.best
    # the best setting's translations exaggerating what differs: the sign its `moved` overrates them
    overshot_measurements = overshot(witnesses.cells.summary(best_translated))
    return {
        **{k: shown[k] for k in ("strength", "guidance", "negative", "inversion", "guidance_interval")},
        "status": choice.status,
        "reason": choice.reason,
        "keep_channels": list(base.keep_channels),
        "real_target_moved": witnesses.real_moved,
        "steps": steps,
        **{k: shown[k] for k in ("reached", "moved", "cells_moved", "kept", "kept_control")},
        "unaffected": unaffected,
        "keeps_cells": choice.status != "not kept",
        "overshot_measurements": overshot_measurements,
        "data": str(Path(data).resolve()),
        "images": images,
        "classifier_accuracy": witnesses.classifier.accuracy,
        "classifier_trusted": witnesses.trusted,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_frontier(
    out: Path, rows: list[dict], choice: Choice, record: dict, baseline: dict, source: str, target: str
) -> None:
    """frontier.csv, calibration.json and frontier.png, written together into `out` (all or nothing)."""
    with atomic_folder(out) as folder:
        _write_rows(folder / "frontier.csv", rows)
        (folder / "calibration.json").write_text(
            json.dumps(
                {
                    "direction": direction_key(source, target),
                    "chosen": record,
                    "baseline_untranslated": baseline,
                    "rules": {
                        "kept_tolerance": KEPT_TOLERANCE,
                        "kept_floor": KEPT_FLOOR,
                        "unaffected_max": UNAFFECTED_MAX,
                        "reached_min": REACHED_MIN,
                        "reached_tie": REACHED_TIE,
                        "classifier_min_accuracy": CLASSIFIER_MIN_ACCURACY,
                    },
                    "rows": rows,
                },
                indent=2,
                default=float,
            )
        )
        frontier_figure(folder / "frontier.png", rows, choice, baseline, f"{source} -> {target}")


def _setting_of(row: dict) -> Setting:
    return Setting(row["strength"], row["guidance"], row["negative"], row["inversion"], tuple(row["guidance_interval"]))


def store_calibration(checkpoint: str | Path, source: str, target: str, record: dict) -> None:
    """Write the chosen setting into the manifest (atomically: a new file renamed over the old one)."""
    manifest_path = resolve_checkpoint(checkpoint) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    entry = {k: record[k] for k in CALIBRATED_FIELDS if k in record}
    entry.update({k: v for k, v in record.items() if k not in entry})
    manifest.setdefault("calibration", {})[direction_key(source, target)] = entry
    tmp = manifest_path.with_name(f".{MANIFEST}.writing")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, manifest_path)


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def frontier_figure(path: Path, rows: list[dict], choice: Choice, baseline: dict, title: str) -> Path:
    """How far each setting reached against the nuclei overlap it lost beyond its control, one line per guidance
    scale through the strengths, the rule's bars drawn and the choice circled."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe inside napari

    fig = Figure(figsize=(6.2, 4.6))
    ax = fig.subplots()
    lost = lambda r: r["kept"] - r.get("kept_control", 1.0)  # noqa: E731
    groups: dict[Setting, list[dict]] = {}
    for row in rows:
        groups.setdefault(_setting_of({**row, "strength": 1.0}), []).append(row)
    for key, members in groups.items():
        members.sort(key=lambda r: r["strength"])
        ax.plot(
            [lost(r) for r in members], [r["reached"] for r in members], "o-", ms=3, label=key.label().split(", ", 1)[1]
        )
        for r in members:
            ax.annotate(
                f"{r['strength']:g}", (lost(r), r["reached"]), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
    ax.plot([0.0], [baseline["reached"]], "k*", ms=10, label="untranslated")
    ax.axvline(-KEPT_TOLERANCE, color="grey", lw=1, ls="--")
    ax.axhline(REACHED_MIN, color="grey", lw=1, ls=":")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.text(-KEPT_TOLERANCE, ax.get_ylim()[1], " keeps the nuclei ->", fontsize=7, va="top", color="grey")
    ax.text(ax.get_xlim()[0], REACHED_MIN, " moved the phenotype ^", fontsize=7, va="bottom", color="grey")
    ax.plot(
        [lost(choice.best)],
        [choice.best["reached"]],
        "o",
        ms=15,
        mfc="none",
        mec="red" if choice.row is not None else "orange",
        label="chosen" if choice.row is not None else f"best ({choice.status}: not stored)",
    )
    ax.set_xlabel("nuclei IoU minus the source -> source control's (0: kept as well as the control)")
    ax.set_ylabel("reached: share of the way to the real target")
    ax.set_title(f"{title} (numbers: strength)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
