"""`phendiff rejudge`: an earlier calibration's sweep judged again by other bars, no translation run again; the
verdict stored only in the checkpoint that still holds the weights the sweep was made with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from napari_phendiff.cli import main
from napari_phendiff.core import calibrate as cal
from napari_phendiff.core import calibration_store
from napari_phendiff.core import walk
from napari_phendiff.core.checkpoint import sign_checkpoint
from napari_phendiff.core.errors import CheckpointError, ConfigError, DataError
from napari_phendiff.core.features import CLASSIFIER_FOLDER
from napari_phendiff.core.rejudge import rejudge


@pytest.fixture
def calibrated(tiny_checkpoint, sim_data, tmp_path, monkeypatch):
    """A copy of the tiny checkpoint and a calibration of it (nothing stored) whose furthest setting that kept the
    nuclei went 0.31 of the way: the tiny model moves nothing, so that setting's share is written in, as a model that
    moved a third of the cells would have scored it."""
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    monkeypatch.setattr(cal, "CLASSIFIER_MIN_ACCURACY", 0.0)  # its classifier trusted: kept beside the frontier
    out = tmp_path / "calibration"
    small = ["--strengths", "0.25", "--guidances", "1", "3", "--n", "4", "--steps", "4", "--classifier-steps", "5"]
    asked = ["calibrate", str(model), str(sim_data), "--source", "untreated", "--target", "TNFa", "--out", str(out)]
    assert main([*asked, *small, "--kept-tolerance", "0.5"]) == 0
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["chosen"]["status"] == "not moved" and "calibration" not in json.loads(
        (model / "phendiff.json").read_text()
    )
    row = min(saved["rows"], key=lambda r: r["strength"] + r["guidance"])  # s 0.25, no guidance: kept them
    row["reached"] = row["cells_moved"] = 0.31
    (out / "calibration.json").write_text(json.dumps(saved))
    return model, out, row


def test_a_sweep_judged_again_at_a_lower_bar_stores_its_partial_move(calibrated, tmp_path, capsys, monkeypatch):
    model, out, row = calibrated
    capsys.readouterr()

    def no_network(*args, **kwargs):
        raise AssertionError("rejudge ran the network")

    monkeypatch.setattr(walk, "predict", no_network)
    # judged without storing: the verdict, and nothing in the checkpoint, which need not even be where it was
    moved = tmp_path / "elsewhere"
    model.rename(moved)
    assert rejudge(out, tmp_path / "look", reached_min=0.31, kept_tolerance=0.5, store=False)["status"] == "calibrated"
    with pytest.raises(CheckpointError, match=r"give where that checkpoint is now \(--checkpoint\)"):
        rejudge(out, tmp_path / "a", reached_min=0.31, kept_tolerance=0.5)
    moved.rename(model)
    assert "calibration" not in json.loads((model / "phendiff.json").read_text())
    # the table is calibrate's, columns and all (the guidance interval written as calibrate writes it)
    tables = [(f / "frontier.csv").read_text().splitlines() for f in (out, tmp_path / "look")]
    assert tables[0][0] == tables[1][0] and len(tables[0]) == len(tables[1]) and '"(0.0, 1.0)"' in tables[1][1]
    again = tmp_path / "calibration-0.31"
    assert main(["rejudge", str(out), "--out", str(again), "--reached-min", "0.31", "--kept-tolerance", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert f"chosen: strength {row['strength']:g}, guidance {row['guidance']:g}" in printed
    assert "judged by bars other than the rule's own: moved ≥ 0.31 of the way" in printed and "stored in" in printed
    new, old = (json.loads((f / "calibration.json").read_text()) for f in (again, out))
    assert new["rows"] == old["rows"] and new["baseline_untranslated"] == old["baseline_untranslated"]
    chosen = new["chosen"]
    assert (chosen["status"], chosen["reached_min"], chosen["kept_tolerance"]) == ("calibrated", 0.31, 0.5)
    assert chosen["judged_again_from"] == str(out.resolve()) and chosen["data"] == old["chosen"]["data"]
    assert (new["rules"]["reached_min"], new["rules"]["default"]) == (0.31, old["rules"]["default"])
    assert (again / "frontier.png").stat().st_size > 0 and (again / "frontier.csv").is_file()
    entry = json.loads((model / "phendiff.json").read_text())["calibration"]["untreated->TNFa"]
    assert (entry["strength"], entry["guidance"], entry["reached_min"]) == (row["strength"], row["guidance"], 0.31)
    assert entry["swept"] == old["chosen"]["date"]  # when the sweep ran; "date": when it was judged
    # the classifier the calibration trusted goes with the stored choice, and beside the new frontier
    for folder in (model, again):
        assert (folder / CLASSIFIER_FOLDER / "classifier.safetensors").is_file()
    # the rule's own bars on the same sweep: nothing moved half way, nothing more is stored
    assert rejudge(out, tmp_path / "own", kept_tolerance=0.5, store=False)["status"] == "not moved"


def test_what_cannot_be_judged_again_is_refused_before_anything_is_written(calibrated, tmp_path, capsys):
    model, out, _ = calibrated
    with pytest.raises(ConfigError, match=r"reached_min \(--reached-min, the dock's 'moved ≥'\) is 0.1"):
        rejudge(out, tmp_path / "a", reached_min=0.1)
    with pytest.raises(DataError, match="has no calibration.json"):
        rejudge(tmp_path, tmp_path / "a", reached_min=0.31)
    manifest = (model / "phendiff.json").read_text()
    (model / "phendiff.json").write_text(manifest.replace('"weights_sha256": "', '"weights_sha256": "0'))
    with pytest.raises(CheckpointError, match="which cannot be read"):  # edited: refused as loading refuses it
        rejudge(out, tmp_path / "a", reached_min=0.31)
    (model / "phendiff.json").write_text(manifest)
    weights = next((model / "unet").glob("*.safetensors"))
    original = weights.read_bytes()
    tensors = load_file(weights)
    tensors = {k: v + 0.01 if i == 0 else v for i, (k, v) in enumerate(tensors.items())}
    save_file(tensors, weights)
    sign_checkpoint(model)  # trained again, say: valid, other weights
    with pytest.raises(CheckpointError, match="made with other weights than"):
        rejudge(out, tmp_path / "a", reached_min=0.31)
    (model / "phendiff.json").write_text(manifest)
    weights.write_bytes(original)
    saved = json.loads((out / "calibration.json").read_text())
    del saved["chosen"]["weights_sha256"]  # as an older napari-phendiff wrote it
    (out / "calibration.json").write_text(json.dumps(saved))
    assert main(["rejudge", str(out), "--out", str(tmp_path / "a"), "--reached-min", "0.31"]) == 2
    assert "lacks weights_sha256" in capsys.readouterr().err
    saved["chosen"]["weights_sha256"] = json.loads((model / "phendiff.json").read_text())["weights_sha256"]
    (out / "calibration.json").write_text(json.dumps(saved))
    shutil.rmtree(out / CLASSIFIER_FOLDER)  # the trusted classifier lost: a stored choice would lack it
    with pytest.raises(DataError, match="trusted .condition_classifier. is missing"):
        rejudge(out, tmp_path / "a", reached_min=0.31)
    assert not (tmp_path / "a").exists() and "calibration" not in json.loads((model / "phendiff.json").read_text())


def test_judging_again_gives_what_a_new_calibration_at_those_bars_gives(tiny_checkpoint, sim_data, tmp_path):
    """The same verdict, reason and frontier table as calibrate at the same bars, without its sweep."""
    small = ["--strengths", "0.25", "0.5", "--guidances", "1", "3", "--n", "4", "--steps", "4", "--classifier-steps"]
    asked = ["calibrate", str(tiny_checkpoint), str(sim_data), "--source", "untreated", "--target", "TNFa"]
    for name, tolerance in (("loose", "0.5"), ("strict", "0")):
        out = tmp_path / name
        assert main([*asked, "--out", str(out), *small, "5", "--kept-tolerance", tolerance, "--no-store"]) == 0
    judged = json.loads(json.dumps(rejudge(tmp_path / "loose", tmp_path / "again", kept_tolerance=0.0, store=False)))
    swept = json.loads((tmp_path / "strict" / "calibration.json").read_text())["chosen"]
    differ = {"date", "swept", "judged_again_from"}  # when, and from which folder, it was judged
    assert {k: v for k, v in judged.items() if k not in differ} == {k: v for k, v in swept.items() if k not in differ}
    assert judged["kept_tolerance"] == 0 and judged["reason"] == swept["reason"]
    tables = [(tmp_path / f / "frontier.csv").read_text() for f in ("strict", "again")]
    assert tables[0] == tables[1]
    loose = json.loads((tmp_path / "loose" / "calibration.json").read_text())["chosen"]
    assert (loose["status"], swept["status"]) == ("not moved", "not kept")  # the bars changed the verdict


def test_a_shipped_checkpoints_sweep_is_stored_in_a_copy_given_with_checkpoint(calibrated, tmp_path, monkeypatch):
    model, out, row = calibrated
    monkeypatch.setattr(
        calibration_store, "is_shipped", lambda path: Path(path).resolve() == model.resolve()
    )  # as if the sweep were demo's
    with pytest.raises(CheckpointError, match=r"shipped checkpoint .* give the copy \(--checkpoint\)"):
        rejudge(out, tmp_path / "a", reached_min=0.31, kept_tolerance=0.5)
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert rejudge(out, tmp_path / "b", checkpoint=copy, reached_min=0.31, kept_tolerance=0.5)["status"] == "calibrated"
    entry = json.loads((copy / "phendiff.json").read_text())["calibration"]["untreated->TNFa"]
    assert (entry["strength"], entry["guidance"]) == (row["strength"], row["guidance"])
    assert "calibration" not in json.loads((model / "phendiff.json").read_text())
