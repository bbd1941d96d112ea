"""Evaluation: metrics on known inputs, ground-truth scores, the report, the generalization analysis, the CLI."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_phendiff.cli import main
from napari_phendiff.core import metrics
from napari_phendiff.core.cells import mask_iou, measure_cells, segment_nuclei
from napari_phendiff.core.checkpoint import PhenDiffModel, load_checkpoint
from napari_phendiff.core.errors import CheckpointError, DataError
from napari_phendiff.core.evaluate import METRIC_KEYS, EvaluationSet, evaluate, truth_metrics
from napari_phendiff.core.generalization import _nearest_training, generalization
from napari_phendiff.core.simulate import simulate_field
from napari_phendiff.core.train import TrainConfig

RNG = np.random.default_rng(0)
A = RNG.normal(size=(120, 16))
B = RNG.normal(size=(120, 16))              # same distribution, other samples
FAR = RNG.normal(loc=4.0, size=(120, 16))   # a disjoint distribution


def test_identical_sets_score_perfectly():
    assert abs(metrics.fid(A, A)) < 1e-6
    assert metrics.precision_recall(A, A) == (1.0, 1.0)


def test_distances_grow_with_the_gap_between_distributions():
    assert metrics.fid(A, B) < 10 < 100 < metrics.fid(A, FAR)
    assert abs(metrics.kid(A, B)[0]) < 0.05 < 1 < metrics.kid(A, FAR)[0]
    assert metrics.precision_recall(A, FAR) == (0.0, 0.0)
    precision, recall = metrics.precision_recall(A, B)
    assert 0.4 < precision < 1 and 0.4 < recall < 1


def test_precision_and_recall_tell_realism_from_coverage():
    collapsed = A[0] + 0.01 * RNG.normal(size=(30, 16))  # realistic images, all alike (mode collapse)
    precision, recall = metrics.precision_recall(A, collapsed)
    assert precision == 1.0 and recall < 0.05


def test_cycle_distance():
    images = RNG.normal(size=(3, 2, 8, 8))
    assert metrics.cycle_distance(images, images) == (0.0, 0.0)
    per_image, per_pixel = metrics.cycle_distance(images, images + 0.5)
    assert per_image == pytest.approx(0.5 * np.sqrt(2 * 8 * 8)) and per_pixel == pytest.approx(0.25)


def test_too_few_images_is_a_clear_error():
    with pytest.raises(DataError, match="Too few generated images"):
        metrics.fid(A, A[:1])


class IdentityModel(PhenDiffModel):
    """A direct mapping that changes nothing: its translations are the inputs."""

    kind = "cyclegan"

    def map(self, x, source, target):
        return x


def as_identity(model: PhenDiffModel) -> IdentityModel:
    return IdentityModel(**{f.name: getattr(model, f.name) for f in fields(model)})


def test_identity_model_has_no_cycle_loss_and_writes_a_full_report(tiny_checkpoint, sim_data, tmp_path):
    model = as_identity(load_checkpoint(tiny_checkpoint, device="cpu"))
    truth = sim_data.with_name(sim_data.name + "_truth")
    out = tmp_path / "report"
    results = evaluate(model, sim_data, "untreated", "TNFa", out, truth=truth, classifier_steps=5)
    assert results["cycle_l2"] == 0.0 and results["cycle_l2_per_pixel"] == 0.0
    # untouched source images: nothing moved, every cell where it was
    assert results["phenotype_transfer"] < 0.2
    assert results["identity_iou"] == results["identity_iou_reference"] > 0.5
    written = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) | {"phenotype_transfer", "identity_iou"} <= set(written)
    for name in ("cells.csv", "cell_summary.csv", "examples.png", "distributions.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert "condition classifier" in html and "Phenotype transfer" in html
    header = (out / "cells.csv").read_text().splitlines()[0].split(",")
    assert {"group", "file", "cell", "nucleus_area", "reporter_nc_ratio", "DNA_texture"} <= set(header)


def paired_fields(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    """Untreated and TNFa fields with the same cells (same seed), in the layout `phendiff simulate` writes."""
    data, truth = tmp_path / "cells", tmp_path / "cells_truth"
    for condition in ("untreated", "TNFa"):
        for i in range(n):
            field = simulate_field("translocation", condition, 64, seed=100 + i, cell_diameter=20.0)
            for folder, name, array in ((data, f"f{i}.tif", field.image), (truth, f"f{i}_nuclei.tif", field.nuclei),
                                        (truth, f"f{i}_cells.tif", field.cells)):
                (folder / condition).mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(folder / condition / name, array)
    (truth / "truth.json").write_text(json.dumps({"phenotype": "translocation", "measure": "N/C ratio"}))
    return data, truth


def test_phenotype_transfer_is_one_for_real_targets_and_zero_for_untouched_sources(tmp_path):
    data, truth = paired_fields(tmp_path)
    load = lambda c: [tifffile.imread(p) for p in sorted((data / c).glob("*.tif"))]  # noqa: E731
    sources, targets = load("untreated"), load("TNFa")
    paths = sorted((data / "untreated").glob("*.tif"))
    target_paths = sorted((data / "TNFa").glob("*.tif"))
    assert np.array_equal(tifffile.imread(truth / "untreated" / "f0_cells.tif"),
                          tifffile.imread(truth / "TNFa" / "f0_cells.tif"))  # the fields really are paired
    as_if_translated = EvaluationSet(paths, sources, targets, sources, targets, target_paths)
    untouched = EvaluationSet(paths, sources, sources, sources, targets, target_paths)
    assert truth_metrics(as_if_translated, truth, ["DNA", "reporter"])["phenotype_transfer"] > 0.85
    assert truth_metrics(untouched, truth, ["DNA", "reporter"])["phenotype_transfer"] < 0.15
    blank = np.stack([sources[0][0], np.zeros_like(sources[0][1])])  # reporter gone: its cells are unmeasurable
    scores = truth_metrics(EvaluationSet(paths, sources, [blank, *targets[1:]], sources, targets, target_paths),
                           truth, ["DNA", "reporter"])
    assert 0.1 < scores["phenotype_unmeasured"] < 0.6 and scores["phenotype_transfer"] > 0.85


def test_cells_are_segmented_where_they_are():
    field = simulate_field("translocation", "TNFa", 96, seed=5, cell_diameter=20.0)
    nuclei = segment_nuclei(field.image[0])
    assert abs(int(nuclei.max()) - int(field.nuclei.max())) <= 2
    assert mask_iou(nuclei, field.nuclei) > 0.6
    assert mask_iou(nuclei, np.roll(field.nuclei, 10, axis=1)) < 0.3
    table = measure_cells(field.image, ["DNA", "reporter"])
    assert np.nanmedian(table["reporter_nc_ratio"]) > 1.3  # TNFa: the reporter is nuclear


def test_evaluate_cli_with_a_trained_model(tiny_checkpoint, sim_data, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", str(tiny_checkpoint), str(sim_data), "--source", "TNFa", "--target", "untreated",
                 "--out", str(out), "--steps", "2", "--n", "2", "--classifier-steps", "5", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fid:" in printed and "classifier_target_rate:" in printed
    results = json.loads((out / "metrics.json").read_text())
    assert results["n_translated"] == 2 and results["model_kind"] == "pixel"
    assert np.isfinite(results["fid"]) and results["cycle_l2"] > 0


def test_evaluate_refuses_bad_input(tiny_checkpoint, sim_data, tmp_path):
    with pytest.raises(CheckpointError, match="'nocodazole' is not in checkpoint"):
        evaluate(tiny_checkpoint, sim_data, "untreated", "nocodazole", tmp_path / "r")
    with pytest.raises(DataError, match="truth.json"):
        evaluate(as_identity(load_checkpoint(tiny_checkpoint, device="cpu")), sim_data, "untreated", "TNFa",
                 tmp_path / "r2", truth=tmp_path, classifier_steps=2)
    assert not (tmp_path / "r2").exists()  # nothing half-written
    with pytest.raises(DataError, match="Unknown features"):
        evaluate(as_identity(load_checkpoint(tiny_checkpoint, device="cpu")), sim_data, "untreated", "TNFa",
                 tmp_path / "r3", features="resnet", classifier_steps=2)


def test_memorised_images_are_recognised():
    training = [RNG.normal(size=(2, 40, 40))]
    copy = training[0][:, 8:24, 16:32][None]                     # a crop of a training image
    other = RNG.normal(size=(1, 2, 16, 16))
    assert _nearest_training(copy, training)[0] == pytest.approx(1.0)
    assert _nearest_training(np.rot90(copy, 1, axes=(2, 3)), training)[0] == pytest.approx(1.0)
    assert _nearest_training(other, training)[0] < 0.6


def test_generalization_trains_two_models_and_writes_histograms(sim_data, tmp_path):
    config = TrainConfig(data=sim_data, out=tmp_path / "unused", preset="tiny", image_size=32, steps=2,
                         batch_size=2, device="cpu")
    out = tmp_path / "gen"
    results = generalization(sim_data, out, 2, config, n_samples=2, steps=2)
    assert -1 <= results["same_seed_similarity_median"] <= 1
    assert -1 <= results["nearest_training_similarity_median"] <= 1
    saved = json.loads((out / "generalization.json").read_text())
    assert saved["verdict"] == results["verdict"] and set(saved["conditions"]) == {"untreated", "TNFa"}
    assert (out / "generalization.png").stat().st_size > 0
    a = {p.name for p in (out / "data_a").rglob("*.tif")}
    b = {p.name for p in (out / "data_b").rglob("*.tif")}
    assert len(a) == len(b) == 4 and not a & b  # disjoint training sets
    assert (out / "model_a" / "phendiff.json").is_file() and (out / "model_b" / "phendiff.json").is_file()
    with pytest.raises(DataError, match="Lower --n-per-class"):
        generalization(sim_data, tmp_path / "gen2", 3, config)
