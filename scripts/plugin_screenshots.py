"""Retake the Translate dock screenshots of docs/plugin.md with the shipped demo model and the sample data.

    xvfb-run -a python scripts/plugin_screenshots.py
    # writes docs/images/plugin_translate.png, plugin_morph.png and plugin_cells.png

Opens a real napari viewer, loads the plugin's sample data, translates the untreated layer's first field to TNFa
through the dock (its preselected strength and guidance), waits for the worker, and saves the whole window; then
morphs the same field and measures its cells, saving the window after each.
"""

from __future__ import annotations

from pathlib import Path

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-phendiff", "simulated_cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    dock.set_channel_layers(["untreated"])
    dock.source.setCurrentText("untreated")
    dock.target.setCurrentText("TNFa")
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    wait(dock.translate())
    viewer.dims.set_current_step(viewer.dims.ndim - 3, 1)  # the reporter channel, where the phenotype shows
    shoot(viewer, dock, "plugin_translate.png")

    dock.frames.setValue(6)
    wait(dock.morph())
    for layer in viewer.layers:
        layer.visible = layer.name in ("untreated_to_TNFa_s0.45_w3_keep_DNA_morph",)
    viewer.dims.set_current_step(0, 3)  # a frame half way
    viewer.reset_view()
    shoot(viewer, dock, "plugin_morph.png")

    wait(dock.measure_cells())
    for layer in viewer.layers:
        layer.visible = layer.name in ("untreated_to_TNFa_s0.45_w3_keep_DNA", "cells_change_reporter_nc_ratio")
    viewer.reset_view()
    dock.cells_table.sortByColumn(6, Qt.SortOrder.DescendingOrder)
    shoot(viewer, dock, "plugin_cells.png")
    viewer.close()


def wait(worker) -> None:
    done = []
    worker.finished.connect(lambda: done.append(True))
    while not done:
        QApplication.processEvents()


def shoot(viewer, dock, name: str) -> None:
    for _ in range(20):
        QApplication.processEvents()
    path = DOCS / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"{path}: {dock.status.text()}")


if __name__ == "__main__":
    main()
