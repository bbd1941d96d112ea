"""Trivial outputs scored beside every translation, so that no score of `phendiff evaluate` can be won by one.

Distribution scores (FID, KID, a classifier's verdict) reward images that look like the target condition, whatever
became of the cells: copying the source (evaluate's `baseline_` keys), a sample the model draws from noise, or a real
target image with about as many cells all score well on some of them. Here, each with its own key prefix:

- `cell_count_baseline_`: each source image replaced by the real target image whose count of segmented nuclei is the
  closest (of the same shape): real target cells, the source's density, none of its cells. It is drawn from the very
  images the distribution scores compare with (repeats allowed); identity shows what it lost.
- `unconditional_baseline_`: images the model generates from noise for the target condition (diffusion models):
  the target's look without any input. It has no identity to score.

And `conversion_rate`: the share of source images the classifier calls the target once only each cell's revealed
region (core/reveal.py) of the translation is pasted into the original, after QuAC's conversion rate: how much of
the classifier's verdict the minimal change carries.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from . import cells as cellmeasure
from . import metrics
from .calibrate import kept_score
from .models.base import is_direct
from .reveal import reveal
from .walk import sample


def conversion_rate(
    classifier, originals: list[np.ndarray], translated: list[np.ndarray], target: str, channel_names: list[str]
) -> float:
    """The share of originals the classifier calls `target` with each cell's revealed region of the translation
    pasted in (an image without cells stays the original)."""
    pasted = [reveal(original, image, channel_names).pasted for original, image in zip(originals, translated)]
    return float(np.mean(classifier.predict(pasted) == classifier.conditions.index(target)))


def cell_count_matches(
    originals: list[np.ndarray], targets: list[np.ndarray], channel_names: list[str]
) -> list[int | None]:
    """For each original, the index of the real target of its shape with the closest count of segmented nuclei
    (None when no target has its shape)."""
    nuclear = cellmeasure.nuclear_channel(channel_names)
    count = lambda image: int(cellmeasure.segment_nuclei(image[nuclear]).max())  # noqa: E731
    target_counts = [count(image) for image in targets]
    matches = []
    for original in originals:
        n = count(original)
        same = [i for i, image in enumerate(targets) if image.shape == original.shape]
        matches.append(min(same, key=lambda i: (abs(target_counts[i] - n), i)) if same else None)
    return matches


def scores(prefix: str, extractor, classifier, images: list[np.ndarray], real: np.ndarray, target: str) -> dict:
    """Distribution and classifier scores of `images` against the real targets' features `real`, under `prefix`."""
    fake = extractor.features(images)
    kid_mean, kid_std = metrics.kid(real, fake)
    return {
        f"{prefix}fid": metrics.fid(real, fake),
        f"{prefix}kid_mean": kid_mean,
        f"{prefix}kid_std": kid_std,
        f"{prefix}classifier_target_rate": float(
            np.mean(classifier.predict(images) == classifier.conditions.index(target))
        ),
    }


def trivial_baselines(
    model,
    evaluation,
    classifier,
    extractor,
    target: str,
    *,
    steps: int,
    seed: int,
    truth: Path | None = None,
    truth_metrics=None,
) -> dict:
    """The cell-count and unconditional baselines and the conversion rate of one evaluation (see the module)."""
    names = list(model.channel_names)
    results = {
        "conversion_rate": conversion_rate(classifier, evaluation.originals, evaluation.translated, target, names)
    }
    real = extractor.features(evaluation.targets)  # once for both baselines
    matches = cell_count_matches(evaluation.originals, evaluation.targets, names)
    if all(m is not None for m in matches):
        chosen = [evaluation.targets[m] for m in matches]
        prefix = "cell_count_baseline_"
        results.update(scores(prefix, extractor, classifier, chosen, real, target))
        results[f"{prefix}identity_iou_segmented"] = kept_score(evaluation.originals, chosen, names)
        if truth is not None and truth_metrics is not None:
            truth_scores = truth_metrics(replace(evaluation, translated=chosen), truth, names)
            results.update({f"{prefix}{key}": truth_scores[key] for key in ("phenotype_transfer", "identity_iou")})
    if not is_direct(model):
        generated = sample(model, target, len(evaluation.originals), steps=steps, seed=seed)
        results.update(scores("unconditional_baseline_", extractor, classifier, list(generated), real, target))
    return results
