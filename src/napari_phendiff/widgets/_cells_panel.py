"""The Translate dock's Cells panel: the cells of the last translation measured, their change masks (reveal), the
table that ranks them and centres the viewer on one, the CSV export. A part of TranslateDock (translate_dock.py),
which owns the viewer, the last translation (`_last`) and the run in progress (`_pending`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QScrollArea, QTableWidget, QTableWidgetItem, QVBoxLayout

from ..core.errors import PhenDiffError
from ..core.explore import write_cells_csv
from ._comparison import place
from ._shared import button
from ._shared import row as in_a_row  # (row: a table row here)
from ._translate_worker import Cells, PendingRun, run_measure


REVEAL = "reveal score"  # the measure choice that ranks cells by core/reveal.py's score
REVEAL_TIP = (
    "Change per share of the cell's area: how much the cell's measurements moved, divided by the share of "
    "its pixels (its change mask, the 'reveal' layer) that carries most of that change."
)


class CellsPanel:
    """Measure cells and its results in the dock: layers, the ranking table, Next cell, Export table."""

    def _make_cells_controls(self) -> QVBoxLayout:
        """The Cells section: Measure cells, the measure to rank by, Next cell, the table, Export table."""
        self.measure_button = button(
            "Measure cells",
            self.measure_cells,
            "Segment the nuclei of the original and measure every cell on the original and on the last translation.",
        )
        self.measure_choice = QComboBox()
        self.measure_choice.setToolTip("The measure whose change colours the cells and fills the table.")
        self.measure_choice.currentTextChanged.connect(self._show_measure)
        self.next_button = button("Next cell", self.next_cell, "Centre the viewer on the table's next cell.")
        self.cells_table = QTableWidget()
        self.cells_table.setMinimumHeight(240)  # about 8 cells in view
        self.cells_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.cells_table.verticalHeader().setVisible(False)  # the cell column numbers them
        self.cells_table.setSortingEnabled(True)
        self.cells_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.cells_table.cellClicked.connect(self.centre_on_row)
        self.export_button = button("Export table…", self.browse_export)
        cells = QVBoxLayout()
        cells.addWidget(in_a_row(self.measure_button, self.measure_choice, self.next_button))
        cells.addWidget(self.cells_table)
        cells.addWidget(self.export_button)
        return cells

    def measure_cells(self):
        """The Measure cells button: segment and measure every cell of the last translation's originals."""
        if self._last is None:
            self._report("Translate first: the cells are measured on the original and its last translation.")
            return None
        if self.running:
            self._report("A run is active: wait for it or press Cancel.")
            return None
        inputs, request, result = self._last
        self._pending = PendingRun("cells", inputs, request)
        return self.start_worker(
            run_measure(request.images, result, self.manifest["channel_names"], self.model.path, request.shown_target),
            "Measuring cells…",
        )

    def _show_cells(self, cells: Cells) -> None:
        """A Labels layer of the cells (per-cell values as its features), the measures to choose from, the table."""
        import pandas as pd

        inputs, request = self._pending.inputs, self._pending.request
        self.cells = cells
        layer = inputs.layers[0]
        spatial = inputs.kept_axes[-2:]
        data = cells.labels[0] if len(cells.labels) == 1 else cells.labels
        scale = np.asarray(layer.scale)[spatial]
        translate = np.asarray(layer.translate)[spatial]
        if data.ndim == 3:
            scale, translate = np.r_[1.0, scale], np.r_[0.0, translate]
        features = pd.DataFrame(cells.rows)
        if len(cells.labels) == 1 and len(features):
            features = features.drop(columns="image").rename(columns={"cell": "index"})
        name = f"{layer.name} cells"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_labels(
            data,
            name=name,
            scale=scale,
            translate=translate,
            features=features if len(cells.labels) == 1 else None,
            metadata={"phendiff": {"source": request.source, "target": request.target}},
        )
        if cells.reveal is not None:  # each cell's smallest region carrying most of its change (core/reveal.py)
            revealed = f"{layer.name} reveal"
            if revealed in self.viewer.layers:
                self.viewer.layers.remove(revealed)
            self.viewer.add_labels(
                cells.reveal[0] if len(cells.reveal) == 1 else cells.reveal,
                name=revealed,
                scale=scale,
                translate=translate,
                opacity=0.6,
            )
        measures = [k[: -len("_change")] for k in (cells.rows[0] if cells.rows else {}) if k.endswith("_change")]
        if cells.rows and "reveal_score" in cells.rows[0]:
            measures.insert(0, REVEAL)
        self.measure_choice.blockSignals(True)
        self.measure_choice.clear()
        self.measure_choice.addItems(measures)
        preferred = [
            m for m in measures if m.endswith("_nc_ratio") and not m.startswith(self.manifest["channel_names"][0])
        ]
        self.measure_choice.blockSignals(False)
        if preferred:
            self.measure_choice.setCurrentText(preferred[0])
        self._show_measure()
        self.sections["Cells"].set_expanded(True)
        self.findChild(QScrollArea).ensureWidgetVisible(self.cells_table)
        self.status.setText(
            f"Measured {len(cells.rows)} cell(s): the table (Cells) lists the measure per cell "
            "before and after, largest gain first; click a row (or Next cell) to centre the viewer "
            f"on its cell. Choose '{REVEAL}' to rank the cells by where their change lies (the "
            "'reveal' layer)."
        )

    def _show_measure(self, text=None) -> None:
        """Fill the table with the chosen measure and colour the cells by its change (`cells_change_<measure>`)."""
        measure = self.measure_choice.currentText()
        if self.cells is None or not measure:
            return
        headers, keys = _measure_columns(measure, several=len(self.cells.labels) > 1)
        self._fill_cells_table(measure, headers, keys)
        self._show_change(measure, _painted_changes(self.cells, keys[3]))

    def _fill_cells_table(self, measure: str, headers: list[str], keys: list[str]) -> None:
        """One row per cell with the measure's columns, sorted by the change (the cells that gained most first)."""
        table = self.cells_table
        table.setSortingEnabled(False)
        table.clear()
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.horizontalHeaderItem(3).setToolTip(
            REVEAL_TIP if measure == REVEAL else f"{measure}: translated - original"
        )
        table.setRowCount(len(self.cells.rows))
        for r, values in enumerate(self.cells.rows):
            for c, key in enumerate(keys):
                item = QTableWidgetItem()
                value = values[key]
                # 4 significant digits shown; the item sorts by the number
                item.setData(
                    Qt.ItemDataRole.DisplayRole,
                    int(value) if key in ("cell", "image") else float(f"{float(value):.4g}"),
                )
                if key == "cell":
                    item.setData(
                        Qt.ItemDataRole.UserRole, (int(values["image"]), float(values["y"]), float(values["x"]))
                    )
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        table.setSortingEnabled(True)
        table.sortItems(3, Qt.SortOrder.DescendingOrder)  # the cells that gained most first

    def _show_change(self, measure: str, image: np.ndarray) -> None:
        """The `cells_change_<measure>` layer (replacing another measure's), in a diverging colour map around 0."""
        name = f"cells_change_{measure}"
        labels = self.viewer.layers[next(layer.name for layer in self.viewer.layers if layer.name.endswith(" cells"))]
        limit = float(np.abs(image).max()) or 1.0
        if name in self.viewer.layers:
            self.viewer.layers[name].data = image[0] if image.shape[0] == 1 else image
        else:
            for old in [layer.name for layer in self.viewer.layers if layer.name.startswith("cells_change_")]:
                self.viewer.layers.remove(old)
            placement = {"scale": labels.scale, "translate": labels.translate}
            if self.rows:  # over the translation of the first changed channel; the cells lie over its original
                placement = place(placement, self.rows[0], 0, 1)
            self.viewer.add_image(
                image[0] if image.shape[0] == 1 else image,
                name=name,
                colormap="RdBu_r",
                contrast_limits=(-limit, limit),
                opacity=0.7,
                **placement,
            )
        self.viewer.layers[name].contrast_limits = (-limit, limit)

    def next_cell(self) -> None:
        """The Next cell button: select the table's next row (the first after the last) and centre on its cell."""
        if self.cells_table.rowCount() == 0:
            self._report("Measure cells first.")
            return
        row = (self.cells_table.currentRow() + 1) % self.cells_table.rowCount()
        self.cells_table.selectRow(row)
        self.centre_on_row(row)

    def centre_on_row(self, row: int, column: int = 0) -> None:
        """Centre the viewer on the cell of a table row."""
        image, y, x = self.cells_table.item(row, 0).data(Qt.ItemDataRole.UserRole)
        labels = next(layer for layer in self.viewer.layers if layer.name.endswith(" cells"))
        if labels.ndim == 3:  # a stack's cells: go to the cell's plane too
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - 3, image)
        scale, translate = np.asarray(labels.scale)[-2:], np.asarray(labels.translate)[-2:]
        self.viewer.camera.center = tuple(np.asarray([y, x]) * scale + translate)
        self.viewer.camera.zoom = max(self.viewer.camera.zoom, 2.0)

    def export_cells(self, path: str | Path) -> Path:
        """Write the per-cell table (every measure, before, after, change) as CSV."""
        if self.cells is None:
            raise PhenDiffError("Measure cells first.")
        return write_cells_csv(path, self.cells.rows)

    def browse_export(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save the per-cell table", "cells.csv", "CSV (*.csv)")
        if name:
            try:
                self.status.setText(f"Table written: {self.export_cells(name)}")
            except PhenDiffError as exc:
                self._report(str(exc))


def _measure_columns(measure: str, several: bool) -> tuple[list[str], list[str]]:
    """The table's headers and the per-cell keys they show: the measure's columns first, so they stay in view in a
    narrow dock (the cell's position rides on its item), then the image of a stack's cell."""
    if measure == REVEAL:  # share of the cell in its change mask, share of the change it carries, the score
        headers, keys = (
            ["cell", "mask share", "reached", "score"],
            ["cell", "reveal_share", "reveal_reached", "reveal_score"],
        )
    else:
        headers = ["cell", "original", "translated", "change"]
        keys = ["cell", f"{measure}_original", f"{measure}_translated", f"{measure}_change"]
    return headers + (["image"] if several else []), keys + (["image"] if several else [])


def _painted_changes(cells: Cells, key: str) -> np.ndarray:
    """Each image's cells painted with their value of `key` (float32, 0 where it is not a finite number)."""
    changes = np.zeros(int(cells.labels.max()) + 1, np.float32)
    image = np.zeros(cells.labels.shape, np.float32)
    for index in range(len(cells.labels)):
        changes[:] = 0
        for cell in cells.rows:
            if cell["image"] == index and np.isfinite(cell[key]):
                changes[cell["cell"]] = cell[key]
        image[index] = changes[cells.labels[index]]
    return image
