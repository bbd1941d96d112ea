"""Retake the dock screenshots of docs/plugin.md with the shipped demo model, the shipped base and the sample data.

    xvfb-run -a -s "-screen 0 1680x1050x24" python scripts/plugin_screenshots.py \
        [--train-only | --translate-only | --calibrate-only]
    # writes docs/images/plugin_translate.png, plugin_morph.png, plugin_cells.png, plugin_reveal.png,
    # train_dock_finetune.png and plugin_calibrate.png

Opens a real napari viewer, loads the plugin's sample data, translates the untreated layer's first field to TNFa
through the dock (its preselected strength and guidance), waits for the worker, and saves the whole window; then
morphs the same field and measures its cells, saving the window after each. Then fine-tunes the shipped base with
LoRA in the Train dock on simulated translocation cells (100 per condition, 80 steps, previews) and saves the window.
Last, calibrates a copy of the demo on fields simulated as its training data (24 per condition, seeds it never saw)
in the Translate dock's Calibrate section and saves the window, the stored choice preselected.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    only = [flag for flag in ("--train-only", "--translate-only", "--calibrate-only") if flag in sys.argv]
    if not only or "--translate-only" in only:
        translate_shots()
    if not only or "--train-only" in only:
        train_shot()
    if not only or "--calibrate-only" in only:
        calibrate_shot()


def calibrate_shot() -> None:
    import shutil

    from napari_phendiff.core.checkpoint import DEMO_CHECKPOINT
    from napari_phendiff.core.models import read_manifest
    from napari_phendiff.core.simulate import simulate_dataset

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1680, 1050)
    viewer.open_sample("napari-phendiff", "simulated_cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    with tempfile.TemporaryDirectory() as tmp:
        model = shutil.copytree(DEMO_CHECKPOINT, Path(tmp) / "my-model")
        sim = read_manifest(model)["metadata"]["simulator"]
        data = simulate_dataset(
            Path(tmp) / "held-out", sim["phenotype"], 24, sim["size"], seed=7, cell_diameter=sim["cell_diameter"]
        )
        dock.select_checkpoint(model)
        dock.set_channel_layers(["untreated"])
        dock.source.setCurrentText("untreated")
        dock.target.setCurrentText("TNFa")
        dock.device.setCurrentIndex(dock.device.findData("cpu"))
        for name, section in dock.sections.items():
            section.set_expanded(name in ("Translate", "Calibrate"))
        start = time.perf_counter()
        wait(dock.calibrate_on(data, Path(tmp) / "calibration"))  # the stored choice is then preselected
        print(f"calibration from the dock, click to result: {time.perf_counter() - start:.1f} s")
        scrolled_to(dock.calibrate_frontier)  # the section's bars, button and the frontier plot in view
        shoot(viewer, dock, "plugin_calibrate.png")
        start = time.perf_counter()
        dock.judge_again(Path(tmp) / "judged")  # in the GUI thread: no translation, the rule and the plot
        print(f"Judge again, click to result: {time.perf_counter() - start:.2f} s ({dock.status.text()[:60]})")
    viewer.close()


def train_shot() -> None:
    from napari_phendiff.core.simulate import simulate_dataset

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1680, 1050)
    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Train")
    with tempfile.TemporaryDirectory() as tmp:
        data = simulate_dataset(Path(tmp) / "cells", "translocation", 100, 64, seed=0, cell_diameter=20.0)
        dock.set_data_folder(data)
        dock.channel_names.setText("DNA, reporter")
        dock.out.setText(str(Path(tmp) / "my-lora"))
        for box, value in ((dock.steps, 80), (dock.batch_size, 8), (dock.checkpoint_every, 40), (dock.previews, 3)):
            box.setValue(value)
        dock.device.setCurrentIndex(dock.device.findData("cpu"))
        wait(dock.train())
        viewer.reset_view()
        shoot(viewer, dock, "train_dock_finetune.png")
    viewer.close()


def translate_shots() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1680, 1050)
    viewer.open_sample("napari-phendiff", "simulated_cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    dock.set_channel_layers(["untreated"])
    dock.source.setCurrentText("untreated")
    dock.target.setCurrentText("TNFa")
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    wait(dock.translate())  # one row per channel: the reporter first, the kept DNA last
    shoot(viewer, dock, "plugin_translate.png")

    dock.frames.setValue(6)
    wait(dock.morph())  # the same rows, each channel's morph in its translation's place
    viewer.dims.set_current_step(0, 3)  # a frame half way
    shoot(viewer, dock, "plugin_morph.png")

    wait(dock.measure_cells())  # the table sorted by the change, largest gain first
    shown = (
        "untreated_reporter original",
        "untreated cells",
        "untreated_reporter_to_TNFa_s0.45_w3_keep_DNA",
        "cells_change_reporter_nc_ratio",
    )
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    viewer.layers["untreated cells"].opacity = 0.3
    viewer.reset_view()
    shoot(viewer, dock, "plugin_cells.png")

    dock.measure_choice.setCurrentText("reveal score")  # the cells ranked by where their change lies
    shown = ("untreated_reporter original", "untreated reveal")
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    viewer.reset_view()
    shoot(viewer, dock, "plugin_reveal.png")
    viewer.close()


def wait(worker) -> None:
    """Run Qt's event loop until the dock has handled the end of the run, idle as napari's own loop waits (a loop of
    processEvents would take a CPU core from the run); a timer looks, so an end before this call is not missed."""
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: worker.dock_done and loop.quit())
    timer.start(100)
    loop.exec()
    timer.stop()


def scrolled_to(widget) -> None:
    """The dock's scroll area moved so that `widget` shows."""
    from qtpy.QtWidgets import QScrollArea

    area = widget.parent()
    while not isinstance(area, QScrollArea):
        area = area.parent()
    QApplication.processEvents()
    area.ensureWidgetVisible(widget)


def shoot(viewer, dock, name: str) -> None:
    for _ in range(20):
        QApplication.processEvents()
    path = DOCS / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"{path}: {dock.status.text()}")


if __name__ == "__main__":
    main()
