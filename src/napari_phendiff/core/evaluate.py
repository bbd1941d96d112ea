"""`phendiff evaluate`: is a translation trustworthy? Numbers on held-out images, written as a report.

Held-out source images are translated to the target condition (and back, for the cycle loss) and compared with
real target images: distribution distances on features (FID, KID, precision/recall), a condition classifier's
verdict, CellProfiler-style per-cell measurements, and, for simulated data with ground truth, whether each cell's
phenotype moved to the target while the cells stayed where they were.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile

from . import cells as cellmeasure
from . import metrics
from .checkpoint import atomic_folder, load_checkpoint
from .dataset import load_folder
from .errors import DataError
from .features import InceptionFeatures, train_classifier
from .measure import transfer_rate
from .translate import DEFAULT_STEPS, TranslateEvent, translate

METRIC_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "cycle_l2", "classifier_target_rate")


@dataclass
class EvaluationSet:
    """The images of one evaluation: originals (real source), their translations and round trips, real targets."""

    paths: list[Path]
    originals: list[np.ndarray]
    translated: list[np.ndarray]
    round_trips: list[np.ndarray]
    targets: list[np.ndarray]
    target_paths: list[Path]


def evaluate(checkpoint, data: str | Path, source: str, target: str, out: str | Path, *,
             features: str = "classifier", truth: str | Path | None = None, n: int | None = None,
             steps: int = DEFAULT_STEPS, seed: int = 0, guidance: float | None = None, batch_size: int | None = None,
             device: str = "auto", classifier_steps: int = 400, precision: str = "fp32",
             progress: Callable[[str], Callable[[TranslateEvent], None]] | None = None) -> dict:
    """Translate held-out `source` images of `data` to `target`, score them, write the report folder `out`.

    checkpoint: a folder, "demo", or a loaded model. data: a labelled folder the model did not train on.
    features: "classifier" (offline) or "inception:PATH" (local Inception-v3 weights). truth: the simulator's
    ground-truth folder for `data` (e.g. cells_truth). n: translate only the first n source images.
    `progress(description)`, if given, returns the per-event callback for each translation pass.
    Returns the metrics (also written to out/metrics.json).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new report folder or delete this one.")
    model = load_checkpoint(checkpoint, device=device) if isinstance(checkpoint, (str, Path)) else checkpoint
    images = load_folder(data)
    _check_conditions(model, images, source, target)
    source_idx = [i for i, label in enumerate(images.labels) if images.conditions[label] == source][:n]
    target_idx = [i for i, label in enumerate(images.labels) if images.conditions[label] == target]
    originals = [images.images[i] for i in source_idx]
    options = dict(steps=steps, seed=seed, guidance=guidance, batch_size=batch_size, precision=precision)
    translated = _translate_all(model, originals, source, target, options, progress, f"{source} -> {target}")
    round_trips = _translate_all(model, translated, target, source, options, progress, f"{target} -> {source} (cycle)")
    evaluation = EvaluationSet([images.paths[i] for i in source_idx], originals, translated, round_trips,
                               [images.images[i] for i in target_idx], [images.paths[i] for i in target_idx])

    classifier = train_classifier(images.images, images.labels, images.conditions, steps=classifier_steps, seed=seed)
    extractor = classifier if features == "classifier" else _inception(features, classifier.normalization)
    results = {**_distribution_metrics(extractor, evaluation),
               **_classifier_metrics(classifier, evaluation, source, target),
               **_cycle_metrics(model, evaluation)}
    table = _cell_table(evaluation, model.channel_names)
    if truth is not None:
        results.update(truth_metrics(evaluation, Path(truth), model.channel_names))
    results.update({
        "features": extractor.name, "checkpoint": str(getattr(model, "path", "") or checkpoint),
        "model_kind": model.kind, "data": str(Path(data).resolve()), "source": source, "target": target,
        "n_translated": len(originals), "n_real_target": len(target_idx),
        **({} if model.kind == "cyclegan" else {"steps": steps, "seed": seed, "guidance": guidance}),
    })

    from .report import write_report

    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text(json.dumps(results, indent=2))
        _write_cells(folder / "cells.csv", table)
        write_report(folder, results, evaluation, table, cell_summary(table), model.channel_names)
    return results


def _check_conditions(model, images, source: str, target: str) -> None:
    for name in (source, target):
        model.condition_index(name)  # raises with the checkpoint's conditions
        if name not in images.conditions:
            raise DataError(f"{images.root}: has no subfolder {name!r} (it has {', '.join(images.conditions)}); "
                            "the evaluation needs real images of both the source and the target condition.")
    if source == target:
        raise DataError("Source and target are the same condition; give two different conditions.")
    if images.channels != model.channels:
        raise DataError(f"{images.root}: images have {images.channels} channel(s), the checkpoint was trained on "
                        f"{model.channels} ({', '.join(model.channel_names)}).")


def _translate_all(model, stack: list[np.ndarray], source: str, target: str, options: dict, progress, label: str):
    """Translate images of possibly different sizes: one call per size, results in input order."""
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(stack):
        by_shape.setdefault(image.shape, []).append(i)
    results: list[np.ndarray | None] = [None] * len(stack)
    for shape, members in by_shape.items():
        callback = progress(f"{label} {shape[-2]}x{shape[-1]}" if len(by_shape) > 1 else label) if progress else None
        out = translate(model, np.stack([stack[i] for i in members]), source, target, progress=callback, **options)
        for i, image in zip(members, out):
            results[i] = image
    return results


def _inception(spec: str, normalization):
    if not spec.startswith("inception:"):
        raise DataError(f"Unknown features {spec!r}: use 'classifier' or 'inception:PATH_TO_WEIGHTS'.")
    return InceptionFeatures(spec.split(":", 1)[1], normalization)


def _distribution_metrics(extractor, evaluation: EvaluationSet) -> dict:
    real = extractor.features(evaluation.targets)
    fake = extractor.features(evaluation.translated)
    kid_mean, kid_std = metrics.kid(real, fake)
    precision, recall = metrics.precision_recall(real, fake, k=min(3, len(real) - 1, len(fake) - 1))
    return {"fid": metrics.fid(real, fake), "kid_mean": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall}


def _classifier_metrics(classifier, evaluation: EvaluationSet, source: str, target: str) -> dict:
    target_index = classifier.conditions.index(target)
    rate = lambda stack: float(np.mean(classifier.predict(stack) == target_index))  # noqa: E731
    return {"classifier_target_rate": rate(evaluation.translated),
            "classifier_target_rate_real_source": rate(evaluation.originals),
            "classifier_target_rate_real_target": rate(evaluation.targets),
            "classifier_accuracy": classifier.accuracy, "classifier_held_out_images": classifier.n_held_out}


def _cycle_metrics(model, evaluation: EvaluationSet) -> dict:
    """Cycle loss in the model's normalised units (robust 0.5-99.5 percentile range -> [-1, 1] per channel)."""
    per_image, per_pixel = [], []
    for original, back in zip(evaluation.originals, evaluation.round_trips):
        l2, mse = metrics.cycle_distance(model.normalization.forward(original)[None],
                                         model.normalization.forward(back)[None])
        per_image.append(l2)
        per_pixel.append(mse)
    return {"cycle_l2": float(np.mean(per_image)), "cycle_l2_per_pixel": float(np.mean(per_pixel))}


def _cell_table(evaluation: EvaluationSet, channel_names: list[str]) -> list[dict]:
    """Per-cell rows for the real source images, their translations and the real target images.

    Translated images are measured with the masks segmented on their originals, so each translated cell is the
    same cell as its original (the identity score checks that the cells did stay in place).
    """
    rows = []
    for path, original, translated in zip(evaluation.paths, evaluation.originals, evaluation.translated):
        nuclei = cellmeasure.segment_nuclei(original[cellmeasure.nuclear_channel(channel_names)])
        cells = cellmeasure.segment_cells(nuclei)
        for group, image in (("real source", original), ("translated", translated)):
            rows += _rows(group, path, cellmeasure.measure_cells(image, channel_names, nuclei, cells))
    for path, image in zip(evaluation.target_paths, evaluation.targets):
        rows += _rows("real target", path, cellmeasure.measure_cells(image, channel_names))
    return rows


def _rows(group: str, path: Path, columns: dict[str, np.ndarray]) -> list[dict]:
    names = list(columns)
    return [{"group": group, "file": path.name, **{k: columns[k][i] for k in names}}
            for i in range(len(columns["cell"]))]


def _write_cells(path: Path, rows: list[dict]) -> None:
    fields = list(rows[0]) if rows else ["group", "file", "cell"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def cell_summary(rows: list[dict]) -> list[dict]:
    """Per measurement: medians of real source, translated and real target, effect sizes and a rank test.

    `moved` is how far the translated median went from the source median towards the target one (1 = all the
    way, 0 = not at all); the effect size target vs source says whether the measurement shows a phenotype.
    """
    measurements = [k for k in (rows[0] if rows else {}) if k not in ("group", "file", "cell")]
    summary = []
    for name in measurements:
        groups = {g: np.array([r[name] for r in rows if r["group"] == g], np.float64)
                  for g in ("real source", "translated", "real target")}
        groups = {g: v[np.isfinite(v)] for g, v in groups.items()}
        if any(len(v) < 2 for v in groups.values()):
            continue
        source, translated, target = (np.median(groups[g]) for g in ("real source", "translated", "real target"))
        span = target - source
        summary.append({
            "measurement": name, "median_real_source": source, "median_translated": translated,
            "median_real_target": target, "moved": (translated - source) / span if span else float("nan"),
            "effect_target_vs_source": metrics.effect_size(groups["real source"], groups["real target"]),
            "effect_translated_vs_source": metrics.effect_size(groups["real source"], groups["translated"]),
            "p_translated_vs_target": metrics.rank_test(groups["translated"], groups["real target"]),
        })
    return summary


def truth_metrics(evaluation: EvaluationSet, truth: Path, channel_names: list[str]) -> dict:
    """Ground-truth scores for simulated data (the simulator's masks, written by `phendiff simulate`).

    phenotype_transfer: share of translated cells (measured with their original's true masks) whose simulator
    phenotype value is closer to the real target cells' median than to the real source cells'.
    identity_iou: overlap of the true nuclei with the nuclei segmented on the translated image (the same cells,
    in the same places); identity_iou_reference is the same for the originals, the segmentation's own ceiling.
    """
    from .simulate import measure_phenotype

    info = _truth_info(truth)
    phenotype = info["phenotype"]
    masks = [_truth_masks(truth, path) for path in evaluation.paths]
    source_values = np.concatenate([measure_phenotype(im, nu, ce, phenotype)
                                    for im, (nu, ce) in zip(evaluation.originals, masks)])
    target_values = np.concatenate([measure_phenotype(im, *_truth_masks(truth, path), phenotype)
                                    for im, path in zip(evaluation.targets, evaluation.target_paths)])
    translated_values = np.concatenate([measure_phenotype(im, nu, ce, phenotype)
                                        for im, (nu, ce) in zip(evaluation.translated, masks)])
    nuclear = cellmeasure.nuclear_channel(channel_names)
    iou = [cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu)
           for im, (nu, _) in zip(evaluation.translated, masks)]
    reference = [cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu)
                 for im, (nu, _) in zip(evaluation.originals, masks)]
    # The simulator's measure is NaN for a cell it cannot measure (e.g. no signal left above background in the
    # cytoplasm); such cells are left out of the transfer rate and counted instead.
    unmeasured = float(np.mean(np.isnan(translated_values))) if len(translated_values) else 0.0
    source_values, target_values, translated_values = (v[~np.isnan(v)] for v in
                                                       (source_values, target_values, translated_values))
    return {
        "phenotype_transfer": transfer_rate(translated_values, source_values, target_values),
        "phenotype_unmeasured": unmeasured,
        "identity_iou": float(np.mean(iou)), "identity_iou_reference": float(np.mean(reference)),
        "truth_phenotype": phenotype, "truth_measure": info.get("measure", ""),
        "truth_median_real_source": float(np.median(source_values)),
        "truth_median_translated": float(np.median(translated_values)),
        "truth_median_real_target": float(np.median(target_values)),
    }


def _truth_info(truth: Path) -> dict:
    info_path = truth / "truth.json"
    if not info_path.is_file():
        raise DataError(f"{truth}: not a ground-truth folder ({info_path.name} is missing). Give the folder "
                        "`phendiff simulate OUT` wrote next to OUT, named OUT_truth.")
    return json.loads(info_path.read_text())


def _truth_masks(truth: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The true nuclei and cells of DATA/<condition>/<stem>.tif: TRUTH/<condition>/<stem>_nuclei.tif, _cells.tif."""
    found = []
    for kind in ("nuclei", "cells"):
        path = truth / image_path.parent.name / f"{image_path.stem}_{kind}.tif"
        if not path.is_file():
            raise DataError(f"{path}: ground-truth mask missing for {image_path}. Is {truth} the truth folder of "
                            "this data set (simulated together with it)?")
        found.append(tifffile.imread(path).astype(np.int32))
    return found[0], found[1]
