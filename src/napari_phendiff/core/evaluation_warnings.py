"""When the scores of an evaluation cannot be trusted: plain sentences for the top of the report (core/evaluate.py
scores, this module reads the scores and says where they mislead)."""

from __future__ import annotations

# When the report warns. Nuclei found on a translation should mostly cover the nuclei found on its original: below
# MIN_IDENTITY_IOU the cells were moved, removed or invented (the same segmentation on a real image and itself gives
# 1). With ground truth, the true-nuclei overlap should keep MIN_IDENTITY_SHARE of the originals' own score.
# Classifier rate or precision at or above HIGH_REALISM look like success, which is misleading when identity is low.
# Below MIN_CLASSIFIER_ACCURACY on real held-out images the classifier cannot tell the conditions apart.
# With ground truth, a true transfer and a classifier rate TRUTH_DISAGREES apart mean that one of them is misled
# (benchmarks: a Golgi dispersion measure lowered by merely dimmed fragments, a classifier won by flooded actin).
MIN_IDENTITY_IOU = 0.7
MIN_IDENTITY_SHARE = 0.8
HIGH_REALISM = 0.8
MIN_CLASSIFIER_ACCURACY = 0.8
TRUTH_DISAGREES = 0.5


def translation_warnings(results: dict) -> list[str]:
    """Plain sentences for the top of the report: where the scores cannot be trusted, and what to look at.

    Warns when the cells did not stay the same (identity_iou_segmented, or identity_iou against its reference with
    ground truth), when realism scores are high although identity is low, when the translation does not beat the
    copy-the-source baseline, when the ground truth and the classifier disagree, when per-cell measurements went far
    past the real target (overshot_measurements), and when the condition classifier cannot tell the real conditions
    apart.
    """
    get = lambda key: results.get(key, float("nan"))  # noqa: E731 (NaN compares False: no warning)
    source, target = results.get("source", "source"), results.get("target", "target")
    warnings, low_identity = _identity_warnings(get, target)
    warnings += _baseline_warnings(get, source, target)
    if (
        not low_identity
        and get("classifier_accuracy") >= MIN_CLASSIFIER_ACCURACY
        and abs(get("phenotype_transfer") - get("classifier_target_rate")) >= TRUTH_DISAGREES
    ):
        warnings.append(
            f"The ground truth and the condition classifier disagree: the true phenotype moved in "
            f"{get('phenotype_transfer'):.0%} of the cells, the classifier calls "
            f"{get('classifier_target_rate'):.0%} of the translated images {target}. One of them is "
            "misled by what the other ignores (a per-cell measure by structure that was only dimmed or "
            "flooded, a classifier by brightness alone): look at examples.png before reading either."
        )
    overshoots = results.get("overshot_measurements") or []
    if overshoots:
        listed = ", ".join(f"{m['measurement']} ({m['moved']:.1f}x)" for m in overshoots[:5])
        more = f" and {len(overshoots) - 5} more" if len(overshoots) > 5 else ""
        warnings.append(
            f"The translation went past the real {target} cells in {len(overshoots)} measurement(s): "
            f"{listed}{more} of the way from real {source} to real {target} (1x = all the way). It "
            "exaggerates these instead of reproducing the target condition; look at distributions.png, "
            "and at a gentler strength or guidance."
        )
    if get("classifier_accuracy") < MIN_CLASSIFIER_ACCURACY:
        warnings.append(
            f"The condition classifier was right on only {get('classifier_accuracy'):.0%} of held-out "
            "real images: it cannot reliably tell the real conditions apart, so its translation rate "
            "means little."
        )
    return warnings


def _identity_warnings(get, target: str) -> tuple[list[str], bool]:
    """Warnings that the cells did not stay the same (and that realism scores then mislead); whether they did not."""
    warnings = []
    low_identity = False
    if get("identity_iou_segmented") < MIN_IDENTITY_IOU:
        low_identity = True
        warnings.append(
            f"The nuclei found on the translated images overlap little with those found on their "
            f"originals (identity IoU {get('identity_iou_segmented'):.2f}, 1 = the same nuclei): the model "
            "moved, removed or invented cells, so look at examples.png before trusting any other score."
        )
    if get("identity_iou") < MIN_IDENTITY_SHARE * get("identity_iou_reference"):
        low_identity = True
        warnings.append(
            f"The true nuclei overlap with those found on the translated images by only "
            f"{get('identity_iou'):.2f} where the originals reach {get('identity_iou_reference'):.2f}: the "
            "cells did not stay where they were, so the translated cells are not the original cells."
        )
    if low_identity and (get("classifier_target_rate") >= HIGH_REALISM or get("precision") >= HIGH_REALISM):
        warnings.append(
            f"The translations look like real {target} images (classifier rate "
            f"{get('classifier_target_rate'):.0%}, precision {get('precision'):.0%}) although the cells "
            "changed: the model drew new target-like cells instead of translating these ones, so these "
            "scores do not show a working translation."
        )
    return warnings, low_identity


def _baseline_warnings(get, source: str, target: str) -> list[str]:
    """Warnings that the translation did no better than copying the source, score by score."""
    warnings = []
    if get("fid") >= get("baseline_fid"):
        warnings.append(
            f"The translated images are no closer to real {target} images (FID {get('fid'):.3g}) than "
            f"the untranslated {source} images are (FID {get('baseline_fid'):.3g}): compare every score "
            "with its copy-the-source baseline."
        )
    if get("classifier_target_rate") <= get("baseline_classifier_target_rate"):
        warnings.append(
            f"The condition classifier calls no more translated images {target} "
            f"({get('classifier_target_rate'):.0%}) than untranslated {source} images "
            f"({get('baseline_classifier_target_rate'):.0%}): the translation did not move the images "
            "towards the target."
        )
    if get("phenotype_transfer") <= get("baseline_phenotype_transfer"):
        warnings.append(
            f"The true phenotype moved in no more translated cells ({get('phenotype_transfer'):.0%}) than "
            f"in untranslated ones ({get('baseline_phenotype_transfer'):.0%}): the translation did not "
            "transfer the phenotype."
        )
    return warnings
