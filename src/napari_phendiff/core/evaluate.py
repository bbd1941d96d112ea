"""`phendiff evaluate`: is a translation trustworthy? Numbers on held-out images, written as a report.

Held-out source images are translated to the target condition (and back, for the cycle loss) and compared with
real target images: distribution distances on features (FID, KID, precision/recall), a condition classifier's
verdict, CellProfiler-style per-cell measurements, and, for simulated data with ground truth, whether each cell's
phenotype moved to the target while the cells stayed where they were. Every score is also given for the
copy-the-source baseline (the untranslated originals scored as if they were the translations), beside two more
trivial outputs (core/baselines.py: the real target image with the closest cell count, and the model's own sample
from noise), and the report warns when the cells did not stay the same or the translation does no better than
copying the source. With the simulator's ground truth, truth.py adds whether the phenotype truly moved.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics
from .cellstats import MAX_P, MIN_EFFECT, cell_summary, cell_table, cells_moved, overshot
from .baselines import trivial_baselines
from .checkpoint import atomic_folder, claim_new_folder, output_lock
from .models import load_checkpoint
from .dataset import load_folder
from .errors import DataError
from .evaluation_warnings import translation_warnings
from .features import InceptionFeatures, train_classifier
from .option_words import describe
from .options import TranslateOptions, check_count, check_given
from .translate import TranslateEvent, is_direct, translate, translation_options
from .truth import check_truth, truth_metrics
from .witnesses import channel_change, kept_score, left_out_channels

METRIC_KEYS = (
    "fid",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "cycle_l2",
    "classifier_target_rate",
    "cells_moved",
    "identity_iou_segmented",
)


@dataclass
class EvaluationSet:
    """The images of one evaluation: originals (real source), their translations and round trips, real targets."""

    paths: list[Path]
    originals: list[np.ndarray]
    translated: list[np.ndarray]
    round_trips: list[np.ndarray]
    targets: list[np.ndarray]
    target_paths: list[Path]


def evaluate(
    checkpoint,
    data: str | Path,
    source: str,
    target: str,
    out: str | Path,
    *,
    features: str = "classifier",
    truth: str | Path | None = None,
    n: int | None = None,
    device: str = "auto",
    classifier_steps: int = 400,
    progress: Callable[[str], Callable[[TranslateEvent], None]] | None = None,
    **options,
) -> dict:
    """Translate held-out `source` images of `data` to `target`, score them, write the report folder `out`.

    checkpoint: a folder, "demo", or a loaded model. data: a labelled folder the model did not train on.
    features: "classifier" (offline) or "inception:PATH" (local Inception-v3 weights). truth: the simulator's
    ground-truth folder for `data` (e.g. cells_truth). n: translate only the first n source images.
    options: translation options (core/options.py); unset ones take the checkpoint's calibrated setting for each
    direction (the round trip back uses the reverse direction's), else the defaults.
    `progress(description)`, if given, returns the per-event callback for each translation pass.
    Returns the metrics (also written to out/metrics.json).
    """
    out = claim_new_folder(out, "the report")
    check_given(options)
    n = check_count("n (source images to translate)", n, allow_none=True)
    check_count("classifier_steps", classifier_steps)
    with output_lock(out, "an evaluation"):  # one writer per report folder
        model = load_checkpoint(checkpoint, device=device) if isinstance(checkpoint, (str, Path)) else checkpoint
        images = load_folder(data)
        source_idx, target_idx = _held_out(model, images, data, source, target, n, truth)
        evaluation, forward, forward_from = _translate_held_out(
            model, images, source_idx, target_idx, source, target, options, progress
        )
        seed = forward.seed
        classifier = train_classifier(
            images.images, images.labels, images.conditions, steps=classifier_steps, seed=seed
        )
        extractor = classifier if features == "classifier" else _inception(features, classifier.normalization)
        results = _scores(model, evaluation, classifier, extractor, source, target)
        table, summary = _cell_measurements(model, evaluation)
        results["overshot_measurements"] = overshot(summary)
        # what `phendiff calibrate` chooses by, with the channels it leaves out by default
        results["cells_moved"] = cells_moved(
            table, summary, left_out_channels(model.channel_names, forward.keep_channels)
        )
        results.update(_truth_and_baselines(model, evaluation, classifier, extractor, target, forward, truth))
        results.update(
            {
                "features": extractor.name,
                **_provenance(model, checkpoint, data, source, target, evaluation, forward, forward_from),
            }
        )
        results["warnings"] = translation_warnings(results)
        _write_report(out, results, evaluation, table, summary, model.channel_names)
        return results


def _held_out(
    model, images, data: str | Path, source: str, target: str, n: int | None, truth: str | Path | None
) -> tuple[list[int], list[int]]:
    """The indices of the held-out source images (the first n) and of the real target images in `images`, after
    checking the conditions and, if given, the truth folder (an unreadable truth fails before the translations)."""
    _check_conditions(model, images, source, target)
    source_idx = [i for i, label in enumerate(images.labels) if images.conditions[label] == source][:n]
    target_idx = [i for i, label in enumerate(images.labels) if images.conditions[label] == target]
    if truth is not None:
        check_truth(
            truth,
            data,
            model.channel_names,
            [images.paths[i] for i in source_idx + target_idx],
            [images.images[i] for i in source_idx + target_idx],
        )
    return source_idx, target_idx


def _scores(model, evaluation: EvaluationSet, classifier, extractor, source: str, target: str) -> dict:
    """The image-level scores: distribution distances, the classifier's verdict, the cycle loss and identity."""
    return {
        **_distribution_metrics(extractor, evaluation),
        **_classifier_metrics(classifier, evaluation, source, target),
        **_cycle_metrics(model, evaluation),
        **identity_metrics(model, evaluation),
    }


def _truth_and_baselines(
    model, evaluation: EvaluationSet, classifier, extractor, target: str, forward: TranslateOptions, truth
) -> dict:
    """With the simulator's ground truth, whether the phenotype truly moved (truth.py); and the scores of the two
    trivial outputs (core/baselines.py)."""
    results = truth_metrics(evaluation, Path(truth), model.channel_names) if truth is not None else {}
    results.update(
        trivial_baselines(
            model,
            evaluation,
            classifier,
            extractor,
            target,
            steps=forward.steps,
            seed=forward.seed,
            truth=Path(truth) if truth is not None else None,
            truth_metrics=truth_metrics,
        )
    )
    return results


def _cell_measurements(model, evaluation: EvaluationSet) -> tuple[list[dict], list[dict]]:
    """Per-cell measurements of the originals, their translations and the real targets (cells.csv), and their
    summary per measurement."""
    table = cell_table(
        evaluation.paths,
        evaluation.originals,
        evaluation.translated,
        evaluation.target_paths,
        evaluation.targets,
        model.channel_names,
    )
    return table, cell_summary(table)


def _write_report(
    out: Path,
    results: dict,
    evaluation: EvaluationSet,
    table: list[dict],
    summary: list[dict],
    channel_names: list[str],
) -> None:
    """The report folder at once: metrics.json, cells.csv and the report with its figures (core/report.py)."""
    from .report import write_report

    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text(json.dumps(results, indent=2))
        _write_cells(folder / "cells.csv", table)
        write_report(folder, results, evaluation, table, summary, channel_names)


def _translate_held_out(
    model, images, source_idx: list[int], target_idx: list[int], source: str, target: str, options: dict, progress
) -> tuple[EvaluationSet, TranslateOptions, dict]:
    """The held-out source images translated to the target and back (the cycle), beside the real target images;
    with the forward direction's options and where each came from."""
    originals = [images.images[i] for i in source_idx]
    forward, forward_from = translation_options(model, source, target, **options)
    backward, _ = translation_options(model, target, source, **options)
    translated = _translate_all(model, originals, source, target, forward, progress, f"{source} -> {target}")
    round_trips = _translate_all(model, translated, target, source, backward, progress, f"{target} -> {source} (cycle)")
    evaluation = EvaluationSet(
        [images.paths[i] for i in source_idx],
        originals,
        translated,
        round_trips,
        [images.images[i] for i in target_idx],
        [images.paths[i] for i in target_idx],
    )
    return evaluation, forward, forward_from


def _provenance(
    model,
    checkpoint,
    data,
    source: str,
    target: str,
    evaluation: EvaluationSet,
    forward: TranslateOptions,
    forward_from: dict,
) -> dict:
    """What was evaluated, on what, and with which settings (metrics.json and the report's header)."""
    return {
        "checkpoint": str(getattr(model, "path", "") or checkpoint),
        "model_kind": model.kind,
        "data": str(Path(data).resolve()),
        "source": source,
        "target": target,
        "n_translated": len(evaluation.originals),
        "n_real_target": len(evaluation.targets),
        "differs_if": {"min_abs_effect": MIN_EFFECT, "max_p": MAX_P},  # where cell_summary gives `moved`
        **(
            {}
            if is_direct(model)
            else {
                "translation": forward.record(),
                "translation_from": forward_from,
                "settings": describe(forward, forward_from),
            }
        ),
    }


def _check_conditions(model, images, source: str, target: str) -> None:
    for name in (source, target):
        model.condition_index(name)  # raises with the checkpoint's conditions
        if name not in images.conditions:
            raise DataError(
                f"{images.root}: has no subfolder {name!r} (it has {', '.join(images.conditions)}); "
                "the evaluation needs real images of both the source and the target condition."
            )
    if source == target:
        raise DataError("Source and target are the same condition; give two different conditions.")
    if images.channels != model.channels:
        raise DataError(
            f"{images.root}: images have {images.channels} channel(s), the checkpoint was trained on "
            f"{model.channels} ({', '.join(model.channel_names)})."
        )


def _translate_all(model, stack: list[np.ndarray], source: str, target: str, options, progress, label: str):
    """Translate images of possibly different sizes: one call per size, results in input order."""
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(stack):
        by_shape.setdefault(image.shape, []).append(i)
    results: list[np.ndarray | None] = [None] * len(stack)
    for shape, members in by_shape.items():
        callback = progress(f"{label} {shape[-2]}x{shape[-1]}" if len(by_shape) > 1 else label) if progress else None
        out = translate(model, np.stack([stack[i] for i in members]), source, target, options, progress=callback)
        for i, image in zip(members, out):
            results[i] = image
    return results


def _inception(spec: str, normalization):
    if not spec.startswith("inception:"):
        raise DataError(f"Unknown features {spec!r}: use 'classifier' or 'inception:PATH_TO_WEIGHTS'.")
    return InceptionFeatures(spec.split(":", 1)[1], normalization)


def _distribution_metrics(extractor, evaluation: EvaluationSet) -> dict:
    """FID, KID, precision and recall of the translations against the real targets, and (baseline_ keys) of the
    untranslated originals: what copying the source would score."""
    real = extractor.features(evaluation.targets)
    scores = {}
    for prefix, stack in (("", evaluation.translated), ("baseline_", evaluation.originals)):
        fake = extractor.features(stack)
        kid_mean, kid_std = metrics.kid(real, fake)
        precision, recall = metrics.precision_recall(real, fake, k=min(3, len(real) - 1, len(fake) - 1))
        scores.update(
            {
                f"{prefix}fid": metrics.fid(real, fake),
                f"{prefix}kid_mean": kid_mean,
                f"{prefix}kid_std": kid_std,
                f"{prefix}precision": precision,
                f"{prefix}recall": recall,
            }
        )
    return scores


def _classifier_metrics(classifier, evaluation: EvaluationSet, source: str, target: str) -> dict:
    target_index = classifier.conditions.index(target)
    rate = lambda stack: float(np.mean(classifier.predict(stack) == target_index))  # noqa: E731
    real_source = rate(evaluation.originals)
    return {
        "classifier_target_rate": rate(evaluation.translated),
        "classifier_target_rate_real_source": real_source,
        "baseline_classifier_target_rate": real_source,
        "classifier_target_rate_real_target": rate(evaluation.targets),
        "classifier_accuracy": classifier.accuracy,
        "classifier_held_out_images": classifier.n_held_out,
    }


def _cycle_metrics(model, evaluation: EvaluationSet) -> dict:
    """Cycle loss in the model's normalised units (robust 0.5-99.5 percentile range -> [-1, 1] per channel)."""
    per_image, per_pixel = [], []
    for original, back in zip(evaluation.originals, evaluation.round_trips):
        l2, mse = metrics.cycle_distance(
            model.normalization.forward(original)[None], model.normalization.forward(back)[None]
        )
        per_image.append(l2)
        per_pixel.append(mse)
    return {"cycle_l2": float(np.mean(per_image)), "cycle_l2_per_pixel": float(np.mean(per_pixel))}


def identity_metrics(model, evaluation: EvaluationSet) -> dict:
    """Did the cells stay the same? Needs no ground truth.

    identity_iou_segmented: mean overlap of the nuclei segmented on each original with those segmented on its
    translation (1 = the nuclei stayed where they were). channel_change: per channel, the root mean square change
    from original to translation in the model's normalised units (about [-1, 1]; mean over images), so a channel the
    condition should not touch can be checked; also flat, as channel_change_<name>.
    """
    pairs = list(zip(evaluation.originals, evaluation.translated))
    per_image = [channel_change(model, [original], [translated]) for original, translated in pairs]
    change = {name: float(np.mean([c[name] for c in per_image])) for name in model.channel_names}
    return {
        "identity_iou_segmented": kept_score(evaluation.originals, evaluation.translated, model.channel_names),
        "channel_change": change,
        **{f"channel_change_{_key(name)}": value for name, value in change.items()},
    }


def _key(name: str) -> str:
    """A channel name as part of a metric key: letters, digits and underscores only."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") or "channel"


def _write_cells(path: Path, rows: list[dict]) -> None:
    fields = list(rows[0]) if rows else ["group", "file", "cell"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
