"""The Translate dock in a real window: it scrolls and its sections collapse, it fits an 800-px-high screen, re-runs
replace their own layers, every result is named by the one name rule, and an image unlike the training images is
warned about next to the controls before the run."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from conftest import random_image, wait_for, write_tif  # noqa: E402
from qtpy.QtCore import QPoint, QRect, Qt  # noqa: E402
from qtpy.QtWidgets import QApplication, QFormLayout, QScrollArea  # noqa: E402

from napari_phendiff.core.simulate import simulate_field  # noqa: E402

NAME_RULE = re.compile(r"[A-Za-z0-9._-]+")


# the docks' list of recent checkpoints is kept out of the user's own (conftest.py)
pytestmark = pytest.mark.usefixtures("isolated_recent_checkpoints")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=True)


@pytest.fixture
def dock(viewer, tiny_checkpoint):
    _, widget = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    widget.select_checkpoint(tiny_checkpoint)
    widget.steps.setValue(2)
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.source.setCurrentText("untreated")
    widget.target.setCurrentText("TNFa")
    return widget


def run(qtbot, worker):
    wait_for(qtbot, worker, 120_000)


def window_of(viewer, width: int, height: int):
    window = viewer.window._qt_window
    window.showNormal()
    window.resize(width, height)
    for _ in range(5):
        QApplication.processEvents()
    return window


def form_rects(dock) -> list[tuple[str, QRect]]:
    """Every shown control of the dock's forms, with its rectangle in the scrolled widget's coordinates."""
    inner = dock.findChild(QScrollArea).widget()
    rects = []
    for form in dock.findChildren(QFormLayout):
        for index in range(form.count()):
            widget = form.itemAt(index).widget()
            if widget is not None and widget.isVisibleTo(inner):
                rects.append(
                    (
                        widget.objectName() or widget.__class__.__name__,
                        QRect(widget.mapTo(inner, QPoint(0, 0)), widget.size()),
                    )
                )
    return rects


def test_the_dock_scrolls_and_its_sections_collapse(qtbot, viewer, dock):
    area = dock.findChild(QScrollArea)
    assert area is not None and area.widgetResizable()
    assert list(dock.sections) == ["Translate", "Run", "Explore", "Cells", "Folder", "Calibrate"]
    assert all(area.widget().isAncestorOf(section) for section in dock.sections.values())
    assert dock.sections["Translate"].is_expanded() and not dock.sections["Cells"].is_expanded()
    cells = dock.sections["Cells"]
    assert not dock.cells_table.isVisibleTo(dock)
    qtbot.mouseClick(cells.title, Qt.MouseButton.LeftButton)
    assert cells.is_expanded() and dock.cells_table.isVisibleTo(dock)
    dock.steps.setValue(7)
    qtbot.mouseClick(dock.sections["Translate"].title, Qt.MouseButton.LeftButton)
    assert not dock.steps.isVisibleTo(dock) and dock.steps.value() == 7  # hidden, not reset
    # the run buttons and the status stay in view whatever is scrolled or collapsed
    assert not area.isAncestorOf(dock.translate_button) and not area.isAncestorOf(dock.status)


@pytest.mark.parametrize("width, height", [(1680, 1050), (1280, 800)])
def test_the_dock_fits_the_window_with_every_section_open(viewer, dock, width, height):
    window = window_of(viewer, width, height)
    for section in dock.sections.values():
        section.set_expanded(True)
    for _ in range(5):
        QApplication.processEvents()
    assert dock.minimumSizeHint().height() < 800 - 200  # an 800-px screen less the title bar and napari's menus
    assert dock.height() <= window.height() and dock.width() <= window.width()
    area = dock.findChild(QScrollArea)
    assert area.verticalScrollBar().maximum() > 0  # what does not fit scrolls...
    assert area.widget().width() <= area.viewport().width()  # ...and nothing is cut at the right edge
    rects = form_rects(dock)
    assert len(rects) > 15
    for (a, first), (b, second) in itertools.combinations(rects, 2):
        assert not first.intersects(second), f"{a} {first} overlaps {b} {second}"
    for form in dock.findChildren(QFormLayout):  # ...nor squeezed below its own height
        for index in range(form.count()):
            widget = form.itemAt(index).widget()
            if widget is not None and widget.isVisibleTo(dock):
                assert widget.height() >= widget.minimumSizeHint().height()


def test_the_translate_section_needs_no_scrolling_at_1050_px(viewer, dock):
    window_of(viewer, 1680, 1050)
    assert dock.findChild(QScrollArea).verticalScrollBar().maximum() == 0


@pytest.mark.slow
def test_a_rerun_replaces_its_layers(qtbot, viewer, dock):
    viewer.add_image(random_image((2, 48, 48), seed=1), name="cells")
    dock.set_channel_layers(["cells"])
    run(qtbot, dock.translate())
    first = viewer.layers["cells_reporter_to_TNFa_s0.3_w4"]
    order = [layer.name for layer in viewer.layers]
    dock.steps.setValue(3)  # not part of the name: the same result layers, holding the new run
    run(qtbot, dock.translate())
    assert [layer.name for layer in viewer.layers] == order
    assert order == ["cells"] + [
        f"cells_{c}{suffix}"
        for c in ("DNA", "reporter")
        for suffix in (" original", "_to_TNFa_s0.3_w4", "_to_TNFa_s0.3_w4_diff")
    ] + ["comparison labels"]
    assert viewer.layers["cells_reporter_to_TNFa_s0.3_w4"] is not first
    assert viewer.layers["cells_reporter_to_TNFa_s0.3_w4"].metadata["phendiff"]["steps"] == 3


@pytest.mark.slow
def test_channel_layers_and_saved_files_follow_the_name_rule(qtbot, viewer, dock, tmp_path):
    """napari names the channels of a file 'field crop', 'field crop [1]': the results are named after the channel
    each holds, and spaces and brackets never reach a layer or a file name."""
    image = random_image((2, 48, 48), seed=5)
    layers = viewer.open(write_tif(tmp_path / "untreated" / "field crop.tif", image), channel_axis=0)
    assert [layer.name for layer in layers] == ["field crop", "field crop [1]"]
    dock.set_channel_layers([layer.name for layer in layers])
    run(qtbot, dock.translate())
    names = [
        "field_crop_DNA_to_TNFa_s0.3_w4",
        "field_crop_DNA_to_TNFa_s0.3_w4_diff",
        "field_crop_reporter_to_TNFa_s0.3_w4",
        "field_crop_reporter_to_TNFa_s0.3_w4_diff",
    ]
    assert dock.results == [(name, [(name, None)]) for name in names]
    run(qtbot, dock.translate())  # again: replaced, no 'field_crop_DNA_to_TNFa_s0.3_w4 [1]'
    results = [
        layer.name
        for layer in viewer.layers
        if layer.name not in ("field crop", "field crop [1]")
        and not layer.name.endswith(" original")
        and layer.name != "comparison labels"
    ]
    assert sorted(results) == sorted(names)
    viewer.layers[names[0]].name = "my DNA [final]"  # renamed by hand
    dock.results[0] = ("my DNA [final]", [("my DNA [final]", None)])
    written = dock.save_results(tmp_path / "out")
    assert [path.name for path in written][0] == "my_DNA_final.tif"
    for path in written:
        assert NAME_RULE.fullmatch(path.stem) and "__" not in path.stem, path.name
    for name in names[1:]:
        assert NAME_RULE.fullmatch(name) and "__" not in name, name


def test_larger_cells_than_trained_are_warned_about_before_the_run(qtbot, viewer, dock, tiny_checkpoint):
    """The checkpoint learnt 20-px cells; a field of 28-px cells is translated, but the dock says so at once."""
    trained = simulate_field("translocation", "untreated", 128, seed=3, cell_diameter=20.0).image
    larger = simulate_field("translocation", "untreated", 128, seed=3, cell_diameter=28.0).image
    viewer.add_image(trained, name="20 px cells")
    viewer.add_image(larger, name="28 px cells")
    dock.set_channel_layers(["20 px cells"])
    assert dock.check_input() == [] and dock.input_warnings.isHidden()

    dock.set_channel_layers(["28 px cells"])  # shown by itself, before any click
    qtbot.waitUntil(lambda: "nuclei measure about" in dock.input_warnings.text(), timeout=10_000)
    text = dock.input_warnings.text()
    assert "Layer '28 px cells'" in text and "the training images'" in text and "Rescale" in text
    assert dock.input_warnings.isVisibleTo(dock)
    assert dock.sections["Translate"].content.isAncestorOf(dock.input_warnings)

    viewer.add_image(larger.astype(np.float32), name="float")  # another dtype than trained
    dock.set_channel_layers(["float"])
    assert any("is float32 but the model was trained on uint16" in said for said in dock.check_input())
