"""Scores against the simulator's ground truth, for `phendiff evaluate --truth` on simulated data: the truth folder
`phendiff simulate OUT` writes beside OUT (OUT_truth: truth.json, and per image its true nuclei and cells), checked
to belong to the images before any translation, then whether each translated cell's phenotype moved to the target
and whether the cells stayed where they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from . import cells as cellmeasure
from .errors import DataError
from .measure import transfer_rate


def check_truth(truth: str | Path, data, channel_names: list[str], paths: list[Path], images: list[np.ndarray]) -> None:
    """Before any translation: `truth` is a readable truth folder, of a simulation with the checkpoint's channels,
    that holds the true masks of every image (`paths`, `images`) of `data`."""
    info = _truth_info(Path(truth))
    from .simulate import PHENOTYPES

    channels = list(PHENOTYPES[info["phenotype"]].channels)
    if len(channels) != len(channel_names):
        raise DataError(
            f"{truth}: the ground truth of a {info['phenotype']} simulation ({len(channels)} "
            f"channels: {', '.join(channels)}), but the checkpoint has {len(channel_names)} "
            f"({', '.join(channel_names)}): is it the truth folder of {data}?"
        )
    _check_truth_fits(Path(truth), paths, images, channel_names, data)


def truth_metrics(evaluation, truth: Path, channel_names: list[str]) -> dict:
    """Ground-truth scores for simulated data (the simulator's masks, written by `phendiff simulate`) of an
    evaluate.EvaluationSet.

    phenotype_transfer: share of translated cells (measured with their original's true masks) whose simulator
    phenotype value is closer to the real target cells' median than to the real source cells';
    baseline_phenotype_transfer: the same share for the untranslated originals (copying the source).
    identity_iou: overlap of the true nuclei with the nuclei segmented on the translated image (the same cells,
    in the same places); identity_iou_reference is the same for the originals, the segmentation's own ceiling.
    """
    from .simulate import measure_phenotype

    info = _truth_info(truth)
    phenotype = info["phenotype"]
    masks = [_truth_masks(truth, path) for path in evaluation.paths]
    source_values = np.concatenate(
        [measure_phenotype(im, nu, ce, phenotype) for im, (nu, ce) in zip(evaluation.originals, masks)]
    )
    target_values = np.concatenate(
        [
            measure_phenotype(im, *_truth_masks(truth, path), phenotype)
            for im, path in zip(evaluation.targets, evaluation.target_paths)
        ]
    )
    translated_values = np.concatenate(
        [measure_phenotype(im, nu, ce, phenotype) for im, (nu, ce) in zip(evaluation.translated, masks)]
    )
    nuclear = cellmeasure.nuclear_channel(channel_names)
    iou = [
        cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu)
        for im, (nu, _) in zip(evaluation.translated, masks)
    ]
    reference = [
        cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu)
        for im, (nu, _) in zip(evaluation.originals, masks)
    ]
    # The simulator's measure is NaN for a cell it cannot measure (e.g. no signal left above background in the
    # cytoplasm); such cells are left out of the transfer rate and counted instead.
    unmeasured = float(np.mean(np.isnan(translated_values))) if len(translated_values) else 0.0
    source_values, target_values, translated_values = (
        v[~np.isnan(v)] for v in (source_values, target_values, translated_values)
    )
    return {
        "phenotype_transfer": transfer_rate(translated_values, source_values, target_values),
        "baseline_phenotype_transfer": transfer_rate(source_values, source_values, target_values),
        "phenotype_unmeasured": unmeasured,
        "identity_iou": float(np.mean(iou)),
        "identity_iou_reference": float(np.mean(reference)),
        "truth_phenotype": phenotype,
        "truth_measure": info.get("measure", ""),
        "truth_median_real_source": float(np.median(source_values)),
        "truth_median_translated": float(np.median(translated_values)),
        "truth_median_real_target": float(np.median(target_values)),
    }


def _truth_info(truth: Path) -> dict:
    from .simulate import PHENOTYPES

    info_path = truth / "truth.json"
    if not info_path.is_file():
        raise DataError(
            f"{truth}: not a ground-truth folder ({info_path.name} is missing). Give the folder "
            "`phendiff simulate OUT` wrote next to OUT, named OUT_truth."
        )
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{info_path}: cannot be read ({exc}); `phendiff simulate` writes it, write the data set "
            "again or restore the file."
        ) from exc
    if not isinstance(info, dict) or info.get("phenotype") not in PHENOTYPES:
        raise DataError(
            f"{info_path}: names no simulated phenotype (one of {', '.join(PHENOTYPES)}); is this the "
            "truth folder `phendiff simulate` wrote?"
        )
    return info


def _truth_mask_paths(truth: Path, image_path: Path) -> list[Path]:
    """TRUTH/<condition>/<stem>_nuclei.tif and _cells.tif for DATA/<condition>/<stem>.tif, which must exist."""
    paths = [truth / image_path.parent.name / f"{image_path.stem}_{kind}.tif" for kind in ("nuclei", "cells")]
    for path in paths:
        if not path.is_file():
            raise DataError(
                f"{path}: ground-truth mask missing for {image_path}. Is {truth} the truth folder of "
                "this data set (simulated together with it)?"
            )
    return paths


# A folder's own true nuclei follow its nuclear channel (pixel correlation 0.82-0.92 on the simulator's three
# phenotypes), another simulation's do not (-0.05 to 0.32 with another seed): below this median it is another's.
TRUTH_MIN_CORRELATION = 0.5


def _check_truth_fits(truth: Path, paths: list[Path], images: list[np.ndarray], channel_names: list[str], data) -> None:
    """Before any translation: every image has its true masks, of its size, and the true nuclei lie on the image's
    nuclei (a truth folder of another simulation of the same size and count would score wrong cells silently)."""
    channel = cellmeasure.nuclear_channel(list(channel_names))
    correlations = []
    for path, image in zip(paths, images):
        nuclei, cells = _truth_masks(truth, path)
        if nuclei.shape != image.shape[-2:] or cells.shape != image.shape[-2:]:
            raise DataError(
                f"{_truth_mask_paths(truth, path)[0]}: a mask of {nuclei.shape[0]} x {nuclei.shape[1]} px "
                f"for {path} of {image.shape[-2]} x {image.shape[-1]} px: is {truth} the truth folder of "
                f"{data} (simulated together with it)?"
            )
        inside = nuclei > 0
        if inside.any() and not inside.all() and np.ptp(image[channel]) > 0:
            correlations.append(np.corrcoef(image[channel].astype(np.float64).ravel(), inside.ravel())[0, 1])
    if correlations and np.median(correlations) < TRUTH_MIN_CORRELATION:
        raise DataError(
            f"{truth}: its true nuclei do not lie on the nuclei of {data} (median correlation with the "
            f"{channel_names[channel]} channel {np.median(correlations):.2f}; a folder's own truth gives "
            f"0.8 or more): it is the truth of another simulation (another seed?). Give the folder "
            "`phendiff simulate` wrote next to these images."
        )


def _truth_masks(truth: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The true nuclei and cells of DATA/<condition>/<stem>.tif: TRUTH/<condition>/<stem>_nuclei.tif, _cells.tif."""
    nuclei, cells = (tifffile.imread(path).astype(np.int32) for path in _truth_mask_paths(truth, image_path))
    return nuclei, cells
