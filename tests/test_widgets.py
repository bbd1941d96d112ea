"""The Translate and Train docks, opened through the plugin manifest in a real viewer (Xvfb via pytest-xvfb)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_phendiff.core.device import explain_memory_errors  # noqa: E402
from napari_phendiff.core.errors import PhenDiffError  # noqa: E402
from napari_phendiff.widgets import _shared  # noqa: E402
from napari_phendiff.widgets._messages import Progress  # noqa: E402
from napari_phendiff.widgets.train_dock import TrainDock  # noqa: E402
from napari_phendiff.widgets.translate_dock import TranslateDock  # noqa: E402

from conftest import random_image, wait_for, write_tif  # noqa: E402

WAIT_MS = 120_000


# the docks' list of recent checkpoints is kept out of the user's own (conftest.py)
pytestmark = pytest.mark.usefixtures("isolated_recent_checkpoints")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def open_dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-phendiff", name)
    return widget


@pytest.fixture
def translate_dock(viewer, tiny_checkpoint):
    dock = open_dock(viewer, "Translate")
    dock.select_checkpoint(tiny_checkpoint)
    dock.steps.setValue(2)
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.source.setCurrentText("untreated")
    dock.target.setCurrentText("TNFa")
    return dock


def run(qtbot, worker):
    wait_for(qtbot, worker, WAIT_MS)


def test_docks_open_through_the_manifest(viewer):
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-phendiff")  # what `npe2 validate --imports` checks
    manifest.validate_imports()
    assert [w.display_name for w in manifest.contributions.widgets] == ["Translate", "Train"]
    assert isinstance(open_dock(viewer, "Translate"), TranslateDock)
    assert isinstance(open_dock(viewer, "Train"), TrainDock)


def test_estimate_time_says_how_long_translate_would_take_and_adds_no_layer(qtbot, viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    translate_dock.set_channel_layers(["cells"])
    layers = len(viewer.layers)
    run(qtbot, translate_dock.estimate())
    said = translate_dock.status.text()
    assert "Translate would take about" in said and "on this computer" in said and "nothing was translated" in said
    assert len(viewer.layers) == layers and translate_dock.model is not None  # loaded once, kept for Translate


def stacked(viewer, name: str, channels=("DNA", "reporter")) -> np.ndarray:
    """The channel layers of one result (`cells_{channel}_to_TNFa...`) as the multichannel image they split."""
    return np.stack([viewer.layers[name.format(channel)].data for channel in channels])


def test_translate_lays_out_each_channel_as_original_translated_difference(
    qtbot, viewer, translate_dock, tiny_checkpoint
):
    image = random_image((2, 48, 48), seed=1)
    viewer.add_image(image, name="cells", colormap="magma", contrast_limits=(500, 1100), translate=(5, 7))
    translate_dock.set_channel_layers(["cells"])
    run(qtbot, translate_dock.translate())

    step = 48 * 1.08  # an image's side and the gap between rows and columns
    for row, channel in enumerate(["DNA", "reporter"]):
        view = viewer.layers[f"cells_{channel} original"]
        translated = viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4"]
        difference = viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4_diff"]
        assert np.shares_memory(view.data, viewer.layers["cells"].data)  # a view of the user's layer, no copy
        np.testing.assert_array_equal(view.data, image[row])
        assert translated.data.shape == (48, 48) and translated.data.dtype == np.uint16
        np.testing.assert_allclose(difference.data, translated.data.astype(np.float32) - image[row])
        for column, layer in enumerate((view, translated, difference)):
            np.testing.assert_allclose(layer.translate, (5 + row * step, 7 + column * step))
        assert translated.colormap.name == view.colormap.name == "magma"  # the user's colours, both alike
        assert tuple(translated.contrast_limits) == tuple(view.contrast_limits)
        low, high = difference.contrast_limits
        assert low == -high > -np.inf and high > 0
        meta = translated.metadata["phendiff"]
        assert meta["checkpoint"] == str(tiny_checkpoint) and (meta["source"], meta["target"]) == ("untreated", "TNFa")
        assert meta["steps"] == 2 and meta["seed"] == 0 and meta["date"] and meta["channels"] == [channel]
    assert not viewer.layers["cells"].visible and list(viewer.layers["cells"].translate) == [0, 5, 7]
    assert not viewer.canvas.grid.enabled
    labels = viewer.layers["comparison labels"]  # each image named at its top-left corner
    assert list(labels.features["label"]) == [
        f"{c}: {k}" for c in ("DNA", "reporter") for k in ("original", "translated", "difference")
    ]
    np.testing.assert_allclose(labels.data[4], (5 + step - 0.5, 7 + step - 0.5))  # the reporter's translation
    picker = translate_dock.layers  # the views are not inputs to tick
    assert "cells_DNA original" not in [picker.item(i).text() for i in range(picker.count())]
    assert "One row per channel" in translate_dock.status.text()
    assert translate_dock.model is not None
    translate_dock.release_model()
    assert translate_dock.model is None


def test_kept_channels_come_last_and_marked(qtbot, viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    translate_dock.set_channel_layers(["cells"])
    translate_dock.keep_checks["DNA"].setChecked(True)
    run(qtbot, translate_dock.translate())
    kept, changed = viewer.layers["cells_DNA original (kept)"], viewer.layers["cells_reporter original"]
    assert changed.translate[0] < kept.translate[0]  # the reporter's row above the DNA's
    assert viewer.layers["cells_reporter_to_TNFa_s0.3_w4_keep_DNA_diff"].colorbar.visible
    assert not viewer.layers["cells_DNA_to_TNFa_s0.3_w4_keep_DNA_diff"].colorbar.visible
    assert "kept (last, as the original): DNA" in translate_dock.status.text()


def test_channel_layers_of_a_stack(qtbot, viewer, translate_dock):
    stack = random_image((3, 2, 40, 40), seed=2)
    viewer.add_image(stack, channel_axis=1, name=["DNA", "reporter"])
    translate_dock.set_channel_layers(["DNA", "reporter"])
    translate_dock.scope.setCurrentText("whole stack")
    run(qtbot, translate_dock.translate())

    for row, name in enumerate(("DNA", "reporter")):
        assert viewer.layers[f"{name}_to_TNFa_s0.3_w4"].data.shape == (3, 40, 40)
        assert viewer.layers[f"{name}_to_TNFa_s0.3_w4_diff"].data.shape == (3, 40, 40)
        assert viewer.layers[f"{name} original"].data is viewer.layers[name].data
        np.testing.assert_allclose(
            viewer.layers[f"{name}_to_TNFa_s0.3_w4_diff"].translate, (0, row * 40 * 1.08, 2 * 40 * 1.08)
        )


def test_wrong_channel_count_is_explained_before_running(viewer, translate_dock):
    viewer.add_image(random_image((40, 40)), name="one channel")
    translate_dock.set_channel_layers(["one channel"])
    assert translate_dock.translate() is None
    assert "needs 2 channel(s): DNA, reporter" in translate_dock.status.text()


def test_incomplete_checkpoint_is_explained(tmp_path, viewer, translate_dock, tiny_checkpoint):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "phendiff.json").write_text((tiny_checkpoint / "phendiff.json").read_text())
    translate_dock.select_checkpoint(broken)
    assert "missing" in translate_dock.checkpoint_info.text()
    viewer.add_image(random_image((2, 40, 40)), name="cells")
    assert translate_dock.translate() is None


def test_cancel_adds_no_layers(qtbot, viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48)), name="cells")
    translate_dock.steps.setValue(500)
    worker = translate_dock.translate()
    qtbot.waitUntil(lambda: translate_dock._pbar.n > 0, timeout=WAIT_MS)
    translate_dock.cancel()
    wait_for(qtbot, worker, WAIT_MS)
    assert [layer.name for layer in viewer.layers] == ["cells"]
    assert "Cancelled" in translate_dock.status.text()


@pytest.mark.slow
def test_viewer_stays_responsive_while_translating(qtbot, viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48)), name="cells")
    translate_dock.steps.setValue(40)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    worker = translate_dock.translate()
    start = time.monotonic()
    run(qtbot, worker)
    timer.stop()
    during = [t for t in ticks if t >= start]
    assert len(during) >= 10, f"the event loop ran {len(during)} times in {time.monotonic() - start:.1f} s"
    assert max(np.diff([start, *during])) < 2.0


def test_option_tooltips_are_the_core_options_help(viewer):
    """A setting's words live with its option (core/options.py): the docks' tooltips start with the CLI's help."""
    from napari_phendiff.core.options import HELP, TRAIN_HELP

    translate, train = open_dock(viewer, "Translate"), open_dock(viewer, "Train")
    shown = [
        (HELP, name, getattr(translate, control))
        for name, control in (
            ("strength", "strength"),
            ("guidance", "guidance"),
            ("negative", "negative"),
            ("keep_channels", "keep_box"),
            ("steps", "steps"),
            ("seed", "seed"),
            ("batch_size", "batch_size"),
            ("skip_background", "skip_background"),
            ("deep_cache", "deep_cache"),
        )
    ]
    shown += [
        (TRAIN_HELP, name, getattr(train, name))
        for name in (
            "start_from",
            "base",
            "preset",
            "rank",
            "image_size",
            "steps",
            "minutes",
            "batch_size",
            "lr",
            "checkpoint_every",
        )
    ]
    for helps, name, control in shown:
        assert control.toolTip().lower().startswith(helps[name].lower()), name
    assert train.resume.text() == TRAIN_HELP["resume"]


def test_out_of_memory_becomes_advice():
    torch = pytest.importorskip("torch")
    with pytest.raises(PhenDiffError, match="Lower 'Tiles per batch'"):
        with explain_memory_errors("cuda", "Lower 'Tiles per batch'."):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.slow
def test_train_writes_a_checkpoint_the_translate_dock_lists(qtbot, tmp_path, viewer, sim_data):
    translate = open_dock(viewer, "Translate")
    train = open_dock(viewer, "Train")
    train.what.setCurrentIndex(train.what.findData("scratch"))  # the pixel model (the default fine-tunes a base)
    train.set_data_folder(sim_data)
    assert "TNFa: 4 images" in train.folder_info.text() and "untreated: 4 images" in train.folder_info.text()
    assert train.channel_names.placeholderText() == "from the files: DNA, reporter"
    out = tmp_path / "model"
    train.out.setText(str(out))
    train.image_size.setValue(32)
    for box, value in ((train.steps, 3), (train.batch_size, 2), (train.checkpoint_every, 2), (train.previews, 1)):
        box.setValue(value)
    train.device.setCurrentIndex(train.device.findData("cpu"))
    worker, said = train.train(), []
    worker.yielded.connect(lambda message: said.append(getattr(getattr(message, "event", None), "message", "")))
    run(qtbot, worker)

    assert "Making previews of step 2: TNFa (1 of 2), 1 at 32 px…" in said  # the status says what takes the time
    assert json.loads((out / "phendiff.json").read_text())["trained_steps"] == 3
    assert translate.checkpoint.findData(str(out)) >= 0
    assert train.progress.value() == 3 and len(train.loss_plot.losses) == 3
    assert viewer.layers["preview: TNFa"].data.shape == (1, 2, 32, 32)
    assert "Finished 3 steps" in train.status.text()
    # both previews are on screen: the view was reset to hold them
    shown = viewer.camera.center[-1]
    lows, highs = zip(
        *[
            (layer.extent.world[0][-1], layer.extent.world[1][-1])
            for layer in viewer.layers
            if layer.name.startswith("preview: ")
        ]
    )
    assert min(lows) <= shown <= max(highs) and len(lows) == 2


@pytest.mark.slow
def test_stop_saves_a_resumable_checkpoint(qtbot, tmp_path, viewer, sim_data):
    train = open_dock(viewer, "Train")
    train.what.setCurrentIndex(train.what.findData("scratch"))  # the pixel model (the default fine-tunes a base)
    train.set_data_folder(sim_data)
    out = tmp_path / "stopped"
    train.out.setText(str(out))
    train.image_size.setValue(32)
    train.steps.setValue(10_000)
    train.batch_size.setValue(2)
    train.previews.setValue(0)
    worker = train.train()
    qtbot.waitUntil(lambda: train._last_step >= 2, timeout=WAIT_MS)
    train.stop()
    wait_for(qtbot, worker, WAIT_MS)
    assert (out / "training" / "state.json").is_file()
    assert "resumable checkpoint" in train.status.text()
    train.resume.setChecked(True)
    assert train.config().resume
    stopped_at, curve = train._last_step, list(train.loss_plot.losses)
    train.steps.setValue(stopped_at + 2)
    wait_for(qtbot, train.train(), WAIT_MS)
    # the curve goes on from the checkpoint's history instead of starting again
    assert train.loss_plot.steps == list(range(1, stopped_at + 3))
    np.testing.assert_allclose(train.loss_plot.losses[:stopped_at], curve[:stopped_at], rtol=1e-6)


def test_train_refuses_a_folder_without_conditions(tmp_path, viewer):
    (tmp_path / "only" / "untreated").mkdir(parents=True)
    train = open_dock(viewer, "Train")
    train.set_data_folder(tmp_path / "only")
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    assert train.train() is None
    assert "contain no images" in train.folder_info.text()
    assert len(notification_manager.records) == before  # said in the dock, not in a pop-up that stays


# --- exploring a translation ---------------------------------------------------------------------------------------


@pytest.fixture
def translated(qtbot, viewer, translate_dock):
    """A simulated field translated once in the dock."""
    from napari_phendiff.core.simulate import simulate_field

    image = simulate_field("translocation", "untreated", 48, seed=4, cell_diameter=20.0).image
    viewer.add_image(image, name="cells")
    translate_dock.set_channel_layers(["cells"])
    run(qtbot, translate_dock.translate())
    return image


@pytest.mark.slow
def test_retargeting_regenerates_without_inverting_again(qtbot, viewer, translate_dock, translated):
    from conftest import CountingUNet

    counter = CountingUNet(translate_dock.model.unet)
    translate_dock.model.unet = counter
    translate_dock.target.setCurrentText("untreated")
    translate_dock.source.setCurrentText("TNFa")  # another direction: a new inversion
    run(qtbot, translate_dock.translate())
    first = len(counter.calls)
    assert "reused" not in translate_dock.status.text() and first > 0
    translate_dock.guidance.setValue(2.0)  # same images, source and grid: only regenerated
    run(qtbot, translate_dock.translate())
    assert "The inversion was reused" in translate_dock.status.text()
    inverse_calls = [c for c in counter.calls[first:] if c[1] and set(c[1]) == {0}]  # the source alone: inverting
    assert inverse_calls == [] and len(counter.calls) > first


@pytest.mark.slow
def test_morph_goes_from_the_original_to_the_translation(qtbot, viewer, translate_dock, translated):
    translate_dock.frames.setValue(3)
    run(qtbot, translate_dock.morph())
    # each channel's frames hold the channel axis with length 1 (the frame axis goes in front of it)
    frames = np.concatenate([viewer.layers[f"cells_{c}_to_TNFa_s0.3_w4_morph"].data for c in ("DNA", "reporter")], 1)
    assert frames.shape == (4, *translated.shape) and frames.dtype == translated.dtype
    np.testing.assert_array_equal(frames[0], translated)
    np.testing.assert_array_equal(frames[-1], stacked(viewer, "cells_{}_to_TNFa_s0.3_w4"))
    for channel in ("DNA", "reporter"):  # each channel's morph in its translation's place, beside its original
        morph = viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4_morph"]
        assert morph.axis_labels[0] == "frame" and morph.visible
        np.testing.assert_array_equal(morph.translate[2:], viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4"].translate)
        assert viewer.layers[f"cells_{channel} original"].visible
    assert not viewer.layers["cells_DNA_to_TNFa_s0.3_w4"].visible  # the translation it replays is hidden


@pytest.mark.slow
def test_control_and_uncertainty_layers(qtbot, viewer, translate_dock, translated):
    run(qtbot, translate_dock.control())
    control = stacked(viewer, "cells_{}_to_untreated_s0.3_w4_control")
    assert control.shape == translated.shape and "cells_DNA_to_untreated_s0.3_w4_control_diff" in viewer.layers
    translate_dock.samples.setValue(2)
    translate_dock.steps.setValue(10)  # eta adds noise at every step but the last: more than one step
    run(qtbot, translate_dock.translate())
    spread = stacked(viewer, "cells_{}_to_TNFa_s0.3_w4_std")
    assert spread.shape == translated.shape and spread.dtype == np.float32 and np.isfinite(spread).all()
    for channel in ("DNA", "reporter"):  # over the translation it belongs to
        np.testing.assert_array_equal(
            viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4_std"].translate,
            viewer.layers[f"cells_{channel}_to_TNFa_s0.3_w4"].translate,
        )
    assert spread.max() > 0 and "spread over 2 seeds" in translate_dock.status.text()


def test_measure_cells_gives_a_table_a_labels_layer_and_a_csv(qtbot, viewer, translate_dock, translated, tmp_path):
    run(qtbot, translate_dock.measure_cells())
    cells = translate_dock.cells
    labels = viewer.layers["cells cells"]
    assert labels.data.shape == translated.shape[1:] and len(cells.rows) == len(np.unique(labels.data)) - 1 > 0
    assert len(labels.features) == len(cells.rows)
    assert translate_dock.cells_table.rowCount() == len(cells.rows)
    assert translate_dock.measure_choice.currentText() == "reporter_nc_ratio"
    assert all(np.isfinite(row["reporter_integrated_change"]) for row in cells.rows)
    assert "cells_change_reporter_nc_ratio" in viewer.layers
    table = translate_dock.cells_table
    # the measure's before, after and change in the first columns, in view; the cells that gained most first
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == [
        "cell",
        "original",
        "translated",
        "change",
    ]
    changes = [float(table.item(r, 3).text()) for r in range(table.rowCount())]
    assert changes == sorted(changes, reverse=True)
    first = next(row for row in cells.rows if row["cell"] == int(table.item(0, 0).text()))
    assert float(table.item(0, 3).text()) == pytest.approx(first["reporter_nc_ratio_change"], rel=1e-3)
    assert translate_dock.sections["Cells"].is_expanded() and table.isVisibleTo(translate_dock)
    translate_dock.centre_on_row(0)
    assert tuple(np.round(viewer.camera.center[-2:], 3)) == (round(first["y"], 3), round(first["x"], 3))
    written = translate_dock.export_cells(tmp_path / "cells.csv")
    assert len(written.read_text().splitlines()) == len(cells.rows) + 1

    # reveal: each cell's change mask as a layer (within its cell), the cells ranked by score, Next cell centres
    revealed = viewer.layers["cells reveal"].data
    assert revealed.shape == labels.data.shape and np.all((revealed == 0) | (revealed == labels.data))
    translate_dock.measure_choice.setCurrentText("reveal score")
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == [
        "cell",
        "mask share",
        "reached",
        "score",
    ]
    scores = [float(table.item(r, 3).text()) for r in range(table.rowCount())]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(cells.rows)
    table.setCurrentCell(0, 0)
    translate_dock.next_cell()
    second = next(row for row in cells.rows if row["cell"] == int(table.item(1, 0).text()))
    assert table.currentRow() == 1
    assert tuple(np.round(viewer.camera.center[-2:], 3)) == (round(second["y"], 3), round(second["x"], 3))


def test_the_dock_is_usable_after_a_refused_run_and_refuses_a_second_one(qtbot, viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    translate_dock.set_channel_layers(["cells"])
    translate_dock.target.setCurrentText("untreated")
    assert translate_dock.translate() is None and "same condition" in translate_dock.status.text()
    assert translate_dock.translate_button.isEnabled() and translate_dock.release_button.isEnabled()
    assert not translate_dock.cancel_button.isEnabled()
    translate_dock.target.setCurrentText("TNFa")
    worker = translate_dock.translate()
    assert worker is not None and translate_dock.translate() is None
    assert "already running" in translate_dock.status.text()
    run(qtbot, worker)
    assert translate_dock.translate_button.isEnabled()


def test_a_folder_is_translated_with_the_dock_settings_and_cell_tables(qtbot, viewer, translate_dock, tmp_path):
    for i in range(3):
        write_tif(tmp_path / "plate" / f"well_{i}.tif", random_image((2, 48, 48), seed=i))
    worker = translate_dock.translate_folder(tmp_path / "plate", tmp_path / "out")
    shown = []  # the bar's text after each message: the file(s) being translated and their share done
    worker.yielded.connect(lambda message: shown.append(translate_dock.progress_bar.format()))
    run(qtbot, worker)
    assert any(re.fullmatch(r"well_0\.tif.* \(files? 1.* of 3\) · \d+%.*", text) for text in shown), shown
    assert "step" not in " ".join(shown)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        [f"well_{i}_to_TNFa{s}" for i in range(3) for s in (".tif", "_cells.csv")] + ["summary.json"]
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["written"] == 6 and summary["options"]["steps"] == 2  # the dock's setting
    assert "Folder done: 6 file(s) written" in translate_dock.status.text()
    run(qtbot, translate_dock.translate_folder(tmp_path / "plate", tmp_path / "out"))  # resumable: nothing redone
    assert "0 file(s) written, 3 input(s) already translated" in translate_dock.status.text()
    assert translate_dock.translate_folder(tmp_path / "plate", tmp_path / "plate" / "out") is None
    assert "inside the input folder" in translate_dock.status.text() and translate_dock.translate_button.isEnabled()


def test_source_is_set_from_the_name_or_folder_and_shown(viewer, translate_dock, tmp_path):
    from napari_phendiff.widgets.translate_dock import guess_condition

    layer = viewer.add_image(random_image((2, 48, 48)), name="TNFa")
    assert guess_condition(layer, ["TNFa", "untreated"]) == ("TNFa", "name")
    numbered = viewer.add_image(random_image((2, 48, 48)), name="TNFa_0003")
    assert guess_condition(numbered, ["TNFa", "untreated"]) is None  # a word of a name is not trusted
    path = write_tif(tmp_path / "untreated" / "field7.tif", random_image((2, 48, 48)))
    opened = viewer.open(path)[0]
    assert guess_condition(opened, ["TNFa", "untreated"]) == ("untreated", "folder")
    translate_dock.set_channel_layers(["TNFa"])
    assert (translate_dock.source.currentText(), translate_dock.target.currentText()) == ("TNFa", "untreated")
    assert "Source TNFa: from the name of layer 'TNFa'" in translate_dock.direction_info.text()


def test_two_whole_images_ticked_as_channels_are_refused(viewer, translate_dock):
    viewer.add_image(random_image((2, 48, 48)), name="a")
    viewer.add_image(random_image((2, 48, 48), seed=1), name="b")
    translate_dock.set_channel_layers(["a", "b"])
    assert translate_dock.translate() is None
    assert "each look" in translate_dock.status.text() and translate_dock.translate_button.isEnabled()


def test_many_quick_steps_move_the_bars_a_few_times_and_end_full(translate_dock, monkeypatch):
    """A calibration's sweep yields a step per network call: the bars (each move repaints the window) follow them
    at most every PROGRESS_INTERVAL, named stages, a new file's first step and the last step always, and every event
    reaches the dock."""

    class NapariBar:  # the worker's bar in napari's activity dock, counting its moves
        total, n, moves = 0, 0, 0

        def update(self, steps):
            self.n, self.moves = self.n + steps, self.moves + 1

        def reset(self, total):
            self.total, self.n = total, 0

        def set_description(self, text):
            self.description = text

    class Clock:  # a hundredth of a second at each look: 500 steps take about 5 s
        now = 0.0

        @classmethod
        def monotonic(cls):
            cls.now += 0.01
            return cls.now

    bar, seen = NapariBar(), []
    translate_dock._pbar = bar
    monkeypatch.setattr(_shared, "time", Clock)
    monkeypatch.setattr(translate_dock, "on_progress", seen.append)
    texts = {}
    for step in range(1, 501):
        stage = "scoring the settings" if step == 251 else ""  # named in the middle of an interval
        translate_dock._dispatch(Progress(step, 500, step, stage=stage))
        texts[step] = translate_dock.progress_bar.format()
    assert seen == list(range(1, 501))
    assert 10 <= bar.moves <= 30 and bar.n == 500 and translate_dock.progress_bar.value() == 500
    assert texts[251] == "scoring the settings…" and texts[250] != texts[251]
    translate_dock._dispatch(Progress(1, 40, "next", where="b.tif (file 2 of 2)"))  # at once, a new bar
    assert (bar.total, bar.n, bar.description) == (40, 1, "b.tif (file 2 of 2)")
    assert translate_dock.progress_bar.value() == 1


def test_progress_shows_in_the_dock_and_errors_name_its_controls(qtbot, viewer, translate_dock, tmp_path):
    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    translate_dock.set_channel_layers(["cells"])
    run(qtbot, translate_dock.translate())
    bar = translate_dock.progress_bar
    # the share done and the time left, not tile-steps: the work is over, so 100% and nothing left
    assert bar.value() == bar.maximum() > 0 and bar.format() in ("100%", "100% · about 0 s left")
    translate_dock.on_error(PhenDiffError("out: already holds a checkpoint. Add --resume to continue that training"))
    assert "--" not in translate_dock.status.text() and "Tick Resume to continue" in translate_dock.status.text()


def test_saving_a_translated_layer_keeps_the_channel_names(qtbot, viewer, translate_dock, tmp_path):
    import tifffile

    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    translate_dock.set_channel_layers(["cells"])
    run(qtbot, translate_dock.translate())
    path = tmp_path / "translated.tif"
    viewer.layers["cells_reporter_to_TNFa_s0.3_w4"].save(str(path), plugin="napari-phendiff")
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["Labels"] == "reporter"  # one plane, one label (tifffile gives it bare)
        assert json.loads(tif.imagej_metadata["Info"])["layers"][0]["target"] == "TNFa"


@pytest.mark.slow
def test_save_results_writes_the_last_runs_layers_under_safe_names(qtbot, viewer, translate_dock, tmp_path):
    import tifffile

    viewer.add_image(random_image((2, 48, 48), seed=1), name="field 3 (untreated)")
    translate_dock.set_channel_layers(["field 3 (untreated)"])
    with pytest.raises(PhenDiffError, match="Translate first"):
        translate_dock.save_results(tmp_path)
    translate_dock.strength.setValue(0.5)
    run(qtbot, translate_dock.translate())
    names = ["field_3_untreated_to_TNFa_s0.5_w4", "field_3_untreated_to_TNFa_s0.5_w4_diff"]
    layers = [f"field_3_untreated_{c}_to_TNFa_s0.5_w4" for c in ("DNA", "reporter")]
    assert translate_dock.results == [
        (names[0], list(zip(layers, ["DNA", "reporter"]))),
        (names[1], [(f"{name}_diff", c) for name, c in zip(layers, ["DNA", "reporter"])]),
    ]
    assert viewer.layers[f"{layers[1]}_diff"].colorbar.visible  # the difference's colours can be read as values
    written = translate_dock.save_results(tmp_path / "out")
    assert [p.name for p in written] == [f"{name}.tif" for name in names]  # one file per image, as the CLI's
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.imagej_metadata["Labels"] == ["DNA", "reporter"]
        info = json.loads(tif.imagej_metadata["Info"])["layers"][0]
        assert (info["target"], info["strength"], info["guidance"]) == ("TNFa", 0.5, 4.0)
    np.testing.assert_allclose(
        tifffile.imread(written[1]), stacked(viewer, "field_3_untreated_{}_to_TNFa_s0.5_w4_diff")
    )
    again = translate_dock.save_results(tmp_path / "out")  # nothing is overwritten
    assert [p.name for p in again] == [f"{name}_2.tif" for name in names]
    translate_dock.guidance.setValue(2.0)  # other settings: other layers, the first ones kept
    run(qtbot, translate_dock.translate())
    assert translate_dock.results[0][0] == "field_3_untreated_to_TNFa_s0.5_w2" and layers[0] in viewer.layers


@pytest.mark.parametrize("action", ["morph", "control", "measure_cells"])
def test_cancel_during_each_run_adds_no_layer(qtbot, viewer, translate_dock, action):
    viewer.add_image(random_image((2, 48, 48)), name="cells")
    translate_dock.set_channel_layers(["cells"])
    if action == "measure_cells":
        run(qtbot, translate_dock.translate())
    before = [layer.name for layer in viewer.layers]
    translate_dock.steps.setValue(500)
    worker = getattr(translate_dock, action)()
    translate_dock.cancel()
    wait_for(qtbot, worker, WAIT_MS)
    assert [layer.name for layer in viewer.layers] == before
    assert "Cancelled" in translate_dock.status.text() and translate_dock.translate_button.isEnabled()


def test_keep_unchanged_keeps_the_ticked_channel_and_names_it(qtbot, viewer, translate_dock):
    image = random_image((2, 48, 48), seed=4)
    viewer.add_image(image, name="cells")
    translate_dock.set_channel_layers(["cells"])
    assert list(translate_dock.keep_checks) == ["DNA", "reporter"] and translate_dock.kept_channels() == ()
    translate_dock.keep_checks["DNA"].setChecked(True)
    run(qtbot, translate_dock.translate())
    translated = viewer.layers["cells_DNA_to_TNFa_s0.3_w4_keep_DNA"]
    np.testing.assert_array_equal(translated.data, image[0])
    assert translated.metadata["phendiff"]["keep_channels"] == ["DNA"]
    assert "kept DNA (given)" in translate_dock.status.text()


@pytest.mark.slow
def test_morph_by_embedding_is_its_own_layer_and_ends_at_the_translation(qtbot, viewer, translate_dock, translated):
    translate_dock.frames.setValue(2)
    translate_dock.morph_path.setCurrentText("embedding")
    run(qtbot, translate_dock.morph())
    layer = viewer.layers["cells_reporter_to_TNFa_s0.3_w4_morph_embedding"]
    assert layer.data.shape == (3, 1, *translated.shape[1:]) and layer.metadata["phendiff"]["morph_path"] == "embedding"
    np.testing.assert_array_equal(layer.data[-1, 0], viewer.layers["cells_reporter_to_TNFa_s0.3_w4"].data)


def test_a_checkpoints_own_defaults_are_preselected_and_typed_steps_stay(
    viewer, translate_dock, tiny_checkpoint, tmp_path
):
    import shutil

    own = tmp_path / "own"  # as a fine-tune of the shipped base records them: its steps, its DNA kept
    shutil.copytree(tiny_checkpoint, own)
    manifest = json.loads((own / "phendiff.json").read_text())
    manifest.pop("calibration", None)
    manifest["translation_defaults"] = {"strength": 1.0, "steps": 7, "keep_channels": ["DNA"]}
    (own / "phendiff.json").write_text(json.dumps(manifest))
    translate_dock.select_checkpoint(own)
    assert translate_dock.steps.value() == 7 and translate_dock.kept_channels() == ("DNA",)
    assert (
        "this model's defaults" in translate_dock.settings_info.text()
        and "7 steps" in translate_dock.settings_info.text()
    )
    translate_dock.select_checkpoint(tiny_checkpoint)  # a checkpoint without steps of its own: the project's again
    assert translate_dock.steps.value() == 20
    translate_dock.steps.setValue(3)  # what the user typed stays when the direction changes
    translate_dock.target.setCurrentText("untreated")
    translate_dock.target.setCurrentText("TNFa")
    assert translate_dock.steps.value() == 3
