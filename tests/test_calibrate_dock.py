"""The Translate dock's Calibrate section: core.calibrate from the dock, its choice stored and preselected."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_phendiff.core import calibrate as cal  # noqa: E402
from napari_phendiff.core.calibration_rule import Choice  # noqa: E402
from napari_phendiff.widgets import _shared  # noqa: E402

from conftest import random_image, wait_for, write_tif  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_recent_checkpoints")
WAIT_MS = 300_000
SMALL_GRID = [cal.Setting(0.3, 1.0), cal.Setting(0.3, 3.0), cal.Setting(0.5, 3.0)]


@pytest.fixture
def dock(make_napari_viewer, tiny_checkpoint, tmp_path, monkeypatch):
    """The Translate dock on a copy of the tiny checkpoint (a calibration writes into it), untreated -> TNFa, 2
    steps on the CPU, sweeping a small grid."""
    monkeypatch.setattr(cal, "grid", lambda *a, **k: list(SMALL_GRID))
    copy = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, copy)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    widget.select_checkpoint(copy)
    widget.steps.setValue(2)
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.source.setCurrentText("untreated")
    widget.target.setCurrentText("TNFa")
    return widget


def stored(checkpoint) -> dict:
    return json.loads((checkpoint / "phendiff.json").read_text()).get("calibration", {})


def test_a_calibration_from_the_dock_says_why_and_stores_only_a_choice(qtbot, dock, sim_data, tmp_path, monkeypatch):
    monkeypatch.setattr(_shared, "PROGRESS_INTERVAL", 0.0)  # the bar follows every step: what it says of each
    steps, shown = [], []
    worker = dock.calibrate_on(sim_data, tmp_path / "frontier")
    worker.yielded.connect(lambda message: steps.append((dock.progress_bar.value(), dock.progress_bar.maximum())))
    worker.yielded.connect(
        lambda message: shown.append((message.step, dock.progress_bar.format())) if hasattr(message, "step") else None
    )
    wait_for(qtbot, worker, WAIT_MS)
    record = json.loads((tmp_path / "frontier" / "calibration.json").read_text())["chosen"]
    text = dock.status.text()
    assert record["reason"][:40] in text and str(tmp_path / "frontier") in text
    assert record["steps"] == 2 and record["images"] == 4  # the dock's steps; every source image of the folder
    # counted to the end (tests/test_calibrate.py counts the steps)
    assert steps[-1][0] == steps[-1][1]
    # the preparation named, not timed (its pace is not the sweep's); timed from the first translation on
    stages = ["reading the folder", "training the condition classifier", "measuring the real cells", "translating"]
    assert shown[:4] == [(step, f"{stage}…") for step, stage in enumerate(stages)]
    # after the last translation the 4 settings are scored, named until the last, where the bar is full; the
    # translations between timed
    assert [text for _, text in shown[-5:-1]] == ["scoring the settings…"] * 4 and shown[-1][1].startswith("100%")
    assert len(shown) > 9 and all("left" in text for _, text in shown[4:-5])
    if record["status"] == "calibrated":
        assert "untreated->TNFa" in stored(tmp_path / "model") and "Calibrated untreated → TNFa" in text
    else:
        assert stored(tmp_path / "model") == {} and "Not calibrated" in text
    assert dock.calibrate_button.isEnabled() and dock.translate_button.isEnabled()
    # the frontier plot shown under the section's controls, no wider than the plot itself
    from qtpy.QtGui import QPixmap

    frontier = dock.calibrate_frontier
    assert not frontier.isHidden() and not frontier.pixmap().isNull()
    plot = tmp_path / "frontier" / "frontier.png"
    assert 0 < frontier.pixmap().width() <= QPixmap(str(plot)).width() and str(plot) in frontier.toolTip()
    worker = dock.calibrate_on(sim_data, tmp_path / "frontier-2")
    assert frontier.isHidden()  # the last one's plot is not shown beside a new run
    wait_for(qtbot, worker, WAIT_MS)


@pytest.fixture
def calibrates(monkeypatch):
    """The rule takes s 0.5, w 3 (it has its own tests: here, one that calibrates)."""

    def take_it(rows, unaffected=(), tolerance=None, reached_min=None, **named):
        row = next(r for r in rows if r["guidance"] == 3.0 and r["strength"] == 0.5)
        return Choice(
            row, "calibrated", "it moved most.", row, tolerance or cal.KEPT_TOLERANCE, reached_min or cal.REACHED_MIN
        )

    monkeypatch.setattr(cal, "choose", take_it)


def test_a_stored_choice_becomes_the_dock_setting(qtbot, dock, sim_data, tmp_path, calibrates):
    dock.strength.setValue(0.7)
    wait_for(qtbot, dock.calibrate_on(sim_data, tmp_path / "frontier"), WAIT_MS)
    entry = stored(tmp_path / "model")["untreated->TNFa"]
    assert (entry["strength"], entry["guidance"]) == (0.5, 3.0)
    assert (dock.strength.value(), dock.guidance.value()) == (0.5, 3.0)  # preselected from the manifest
    assert "calibrated for this checkpoint (" in dock.settings_info.text()  # by the rule's own bars: not said
    text = dock.status.text()
    assert "Calibrated untreated → TNFa: strength 0.5, guidance 3" in text and "it moved most." in text
    held, _ = dock.cached_model_key(tmp_path / "model", "cpu")  # the weights did not change: still held
    assert held is dock.model and held.manifest["calibration"]["untreated->TNFa"]["strength"] == 0.5


def test_a_choice_stored_after_a_late_cancel_is_shown(qtbot, dock, sim_data, tmp_path, calibrates, monkeypatch):
    import time

    from qtpy.QtCore import QObject, Signal

    class Bell(QObject):
        rung = Signal()

    bell = Bell()  # lives in the test's (main) thread: rung from the worker, it presses Cancel there
    bell.rung.connect(dock.cancel)
    writing = cal.write_frontier

    def meanwhile(*args, **kwargs):  # Cancel arrives while the last step writes and stores, past the worker's check
        bell.rung.emit()
        deadline = time.monotonic() + 10
        while not worker.abort_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        return writing(*args, **kwargs)

    monkeypatch.setattr(cal, "write_frontier", meanwhile)
    worker = dock.calibrate_on(sim_data, tmp_path / "frontier")
    wait_for(qtbot, worker, WAIT_MS)
    assert worker.abort_requested  # Cancel was pressed
    assert "untreated->TNFa" in stored(tmp_path / "model")
    assert "Calibrated untreated → TNFa" in dock.status.text() and "Cancelled" not in dock.status.text()


def test_a_choice_for_a_direction_the_dock_left_is_not_preselected(qtbot, dock, sim_data, tmp_path, calibrates):
    worker = dock.calibrate_on(sim_data, tmp_path / "frontier")
    dock.source.setCurrentText("TNFa")  # while it runs
    dock.target.setCurrentText("untreated")
    wait_for(qtbot, worker, WAIT_MS)
    assert "untreated->TNFa" in stored(tmp_path / "model")
    assert "Calibrated untreated → TNFa" in dock.status.text() and dock.strength.value() != 0.5


def test_a_cancelled_calibration_writes_and_stores_nothing(qtbot, dock, sim_data, tmp_path):
    worker = dock.calibrate_on(sim_data, tmp_path / "frontier")
    worker.yielded.connect(lambda message: dock.cancel() if type(message).__name__ == "Progress" else None)
    wait_for(qtbot, worker, WAIT_MS)
    assert "Cancelled: nothing was added or stored" in dock.status.text()
    assert not (tmp_path / "frontier").exists() and stored(tmp_path / "model") == {}
    wait_for(qtbot, dock.calibrate_on(sim_data, tmp_path / "frontier"), WAIT_MS)  # nothing left locked
    assert (tmp_path / "frontier" / "calibration.json").is_file()


def test_calibration_refuses_a_folder_without_both_conditions_before_any_work(dock, sim_data, tmp_path):
    write_tif(tmp_path / "plate" / "untreated" / "a.tif", random_image((2, 48, 48)))
    write_tif(tmp_path / "plate" / "latB" / "b.tif", random_image((2, 48, 48)))
    assert dock.calibrate_on(tmp_path / "plate", tmp_path / "frontier") is None
    assert "has no subfolder 'TNFa'" in dock.status.text() and dock.calibrate_button.isEnabled()
    dock.target.setCurrentText("untreated")
    assert dock.calibrate_on(sim_data, tmp_path / "frontier") is None
    assert "different target" in dock.status.text() and not (tmp_path / "frontier").exists()
    dock.target.setCurrentText("TNFa")
    dock.select_checkpoint("demo")
    assert dock.calibrate_on(sim_data, tmp_path / "frontier") is None
    assert "shipped checkpoint cannot be changed" in dock.status.text()


def test_a_loaded_shipped_checkpoint_is_refused_as_its_name_is(sim_data, tmp_path):
    from napari_phendiff.core.errors import CheckpointError
    from napari_phendiff.core.models import load_checkpoint

    with pytest.raises(CheckpointError, match="shipped checkpoint"):
        cal.calibrate(load_checkpoint("demo", device="cpu"), sim_data, "untreated", "TNFa", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_without_an_output_folder_the_frontier_goes_to_a_new_per_user_folder(
    qtbot, dock, sim_data, tmp_path, monkeypatch
):
    from napari_phendiff.widgets import _calibrate_panel

    monkeypatch.setattr(_calibrate_panel, "default_calibration_folder", lambda: tmp_path / "user" / "calibrations")
    wait_for(qtbot, dock.calibrate_on(sim_data), WAIT_MS)
    (made,) = (tmp_path / "user" / "calibrations").iterdir()
    assert made.name.startswith("model-untreated-to-TNFa-") and (made / "frontier.png").is_file()
    assert str(made) in dock.status.text()


def test_the_bars_set_in_the_dock_judge_the_calibration(qtbot, dock, sim_data, tmp_path):
    from napari_phendiff.core.calibration_bars import BAR_RANGES
    from napari_phendiff.widgets._calibrate_panel import _bars_said

    dock.calibrate_reached.setValue(0.95)
    dock.calibrate_tolerance.setValue(0.3)
    wait_for(qtbot, dock.calibrate_on(sim_data, tmp_path / "frontier"), WAIT_MS)
    saved = json.loads((tmp_path / "frontier" / "calibration.json").read_text())
    assert (saved["rules"]["reached_min"], saved["rules"]["kept_tolerance"]) == (0.95, 0.3)
    assert "Judged by the bars set here: moved ≥ 0.95 of the way, nuclei IoU lost ≤ 0.3 beyond the control." in (
        dock.status.text()
    )
    # a setting that exaggerates the target is said to, in the dock as on the command line
    from napari_phendiff.widgets._translate_worker import Calibrated

    over = {**saved["chosen"], "overshot_measurements": [{"measurement": "reporter_nucleus_mean", "moved": 3.2}]}
    dock._show_calibration(Calibrated(over, tmp_path / "frontier", tmp_path / "model", "untreated", "TNFa"))
    assert "went far past the real TNFa cells (reporter_nucleus_mean 3.2x of the way" in dock.status.text()
    assert "before trusting this setting." in dock.status.text()  # nothing was stored: not a choice
    # the rule's own bars are not announced; a partial move says which bar would store it
    own = {**saved["chosen"], "reached_min": cal.REACHED_MIN, "kept_tolerance": cal.KEPT_TOLERANCE}
    assert _bars_said({**own, "status": "calibrated"}) == ""
    assert _bars_said({**own, "status": "not moved", "reached": 0.414}).startswith(
        " To store a partial move like the furthest, set 'moved ≥' to 0.41 and press Judge again (no translation"
    )
    # the dock's controls allow what the command line allows
    ranges = {
        name: box
        for name, box in (("reached_min", dock.calibrate_reached), ("kept_tolerance", dock.calibrate_tolerance))
    }
    assert {name: (box.minimum(), box.maximum()) for name, box in ranges.items()} == BAR_RANGES


def test_a_choice_stored_by_bars_set_by_hand_says_so_where_it_is_preselected(
    qtbot, dock, sim_data, tmp_path, calibrates
):
    dock.calibrate_reached.setValue(0.3)
    wait_for(qtbot, dock.calibrate_on(sim_data, tmp_path / "frontier"), WAIT_MS)
    entry = stored(tmp_path / "model")["untreated->TNFa"]
    assert (entry["reached_min"], entry["kept_tolerance"]) == (0.3, cal.KEPT_TOLERANCE)
    assert (
        "calibrated for this checkpoint by bars set by hand (moved ≥ 0.3 of the way, nuclei IoU lost ≤ 0.14 beyond the control)"
        in (dock.settings_info.text())
    )


def test_judge_again_takes_the_bars_without_translating_and_stores_what_they_choose(
    qtbot, dock, sim_data, tmp_path, monkeypatch
):
    from napari_phendiff.core import walk

    assert not dock.judge_again_button.isEnabled()  # nothing to judge yet
    wait_for(qtbot, dock.calibrate_on(sim_data, tmp_path / "frontier"), WAIT_MS)
    assert dock.judge_again_button.isEnabled() and stored(tmp_path / "model") == {}
    # the tiny model moves nothing: its gentlest setting scored as one that moved a third of the cells would be
    saved = json.loads((tmp_path / "frontier" / "calibration.json").read_text())
    row = next(r for r in saved["rows"] if (r["strength"], r["guidance"]) == (0.3, 1.0))
    row.update(reached=0.31, cells_moved=0.31, kept=row["kept_control"], change_DNA=0.0)
    (tmp_path / "frontier" / "calibration.json").write_text(json.dumps(saved))
    monkeypatch.setattr(walk, "predict", lambda *a, **k: pytest.fail("judging again ran the network"))
    dock.calibrate_reached.setValue(0.31)
    dock.judge_again(tmp_path / "again")
    entry = stored(tmp_path / "model")["untreated->TNFa"]
    assert (entry["strength"], entry["guidance"], entry["reached_min"]) == (0.3, 1.0, 0.31)
    assert "Calibrated untreated → TNFa: strength 0.3, guidance 1" in dock.status.text()
    assert (dock.strength.value(), dock.guidance.value()) == (0.3, 1.0)  # preselected
    assert str(tmp_path / "again" / "frontier.png") in dock.calibrate_frontier.toolTip()
    # the dock moved on to another direction: Judge again does not store the last one's verdict unseen
    dock.source.setCurrentText("TNFa")
    dock.target.setCurrentText("untreated")
    dock.judge_again(tmp_path / "again-2")
    assert "Judge again judges the last calibration, of" in dock.status.text() and not (tmp_path / "again-2").exists()
    # back on its direction, the checkpoint made read-only since: refused in the dock's words, nothing written
    from napari_phendiff.core import calibration_store
    from napari_phendiff.core.errors import CheckpointError

    def read_only(path):
        raise CheckpointError(f"{path}: read-only")

    monkeypatch.setattr(calibration_store, "check_writable", read_only)
    dock.source.setCurrentText("untreated")
    dock.target.setCurrentText("TNFa")
    dock.judge_again(tmp_path / "again-3")
    said = dock.status.text()
    assert "the checkpoint cannot be written" in said and "calibrate the copy." in said and "--" not in said
    assert not (tmp_path / "again-3").exists()
