"""Retake the Translate dock screenshot of docs/plugin.md with the shipped demo model and the sample data.

    xvfb-run -a python scripts/plugin_screenshots.py        # writes docs/images/plugin_translate.png

Opens a real napari viewer, loads the plugin's sample data, translates the untreated layer's first field to TNFa
through the dock (its preselected strength and guidance), waits for the worker, and saves the whole window.
"""

from __future__ import annotations

from pathlib import Path

import napari
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
    worker = dock.translate()
    done = []
    worker.finished.connect(lambda: done.append(True))
    while not done:
        QApplication.processEvents()
    viewer.dims.set_current_step(viewer.dims.ndim - 3, 1)  # the reporter channel, where the phenotype shows
    for _ in range(20):
        QApplication.processEvents()
    path = DOCS / "plugin_translate.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"{path}: {dock.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
