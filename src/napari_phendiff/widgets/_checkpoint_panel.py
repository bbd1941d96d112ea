"""The Translate dock's inputs: the image layers ticked and the checkpoint they are translated with. Choosing a
checkpoint reads its manifest (no weights): its conditions fill the source and target, its channels the Keep
unchanged boxes; the ticked image is checked against the checkpoint's training images before any run. A part of
TranslateDock (translate_dock.py), which owns the viewer and the manifest read (`manifest`, `manifest_error`)."""

from __future__ import annotations

import html
import warnings
from pathlib import Path

from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFileDialog, QPushButton, QSizePolicy, QWidget

from ..core.checkpoint import resolve_checkpoint
from ..core.errors import PhenDiffError, PhenDiffWarning
from ..core.inputs import check_fits
from ..core.models import read_manifest
from ..core.models.base import ConditionedModel
from ._layer_picker import LayerPicker
from ._layers import ImageInput
from ._shared import CHECKPOINTS, ERROR_STYLE, WARNING_STYLE, Note, row


class CheckpointPanel:
    """The image layers, the checkpoint list (the recent ones, the demo) and what the checkpoint says of both."""

    def _make_checkpoint_controls(self) -> list[tuple[str | None, QWidget]]:
        """The layer picker, the checkpoint and the lines under it, as the form's (label, control) rows."""
        self.layers = LayerPicker(self.viewer)
        self.layers.itemChanged.connect(self._guess_source)
        self._check_soon = QTimer(singleShot=True, interval=200)  # once after a burst of ticks, not per tick
        self._check_soon.timeout.connect(self.check_input)
        self.layers.itemChanged.connect(self._input_changed)
        self.checkpoint = QComboBox()
        # a long folder path is shown cut, not widening the dock (its tooltip gives it whole)
        self.checkpoint.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.checkpoint.setMinimumContentsLength(8)
        self.checkpoint.currentIndexChanged.connect(self._load_manifest)
        browse = QPushButton("Browse…")
        browse.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        browse.clicked.connect(self.browse_checkpoint)
        self.checkpoint_info = Note()
        self.input_warnings = Note()
        self.input_warnings.setToolTip(
            "How the ticked image differs from the checkpoint's training images, checked "
            "on the current plane as a run would check it: translated anyway, but say."
        )
        return [
            ("Image layers", self.layers),
            ("Checkpoint", row(self.checkpoint, browse)),
            (None, self.checkpoint_info),
            (None, self.input_warnings),
        ]

    # --- the image layers ----------------------------------------------------------------------------------------
    def channel_layers(self) -> list[Image]:
        """The ticked layers, in the order ticked: one layer, or one layer per channel (named after its channel)."""
        return self.layers.ticked()

    def set_channel_layers(self, names: list[str]) -> None:
        """Tick exactly these layers, in this order."""
        self.layers.tick(names)

    def _input_changed(self, item=None) -> None:
        self._check_soon.start()

    def check_input(self) -> list[str]:
        """Show, next to the checkpoint, how the ticked image differs from the checkpoint's training images (its
        cells' size, intensity range, dtype): the warnings core.inputs.check_fits gives the CLI, here before the
        run, on the current plane. Returns them. Inputs that do not fit are left to Translate, which says why."""
        self.input_warnings.setText("")
        if not self.manifest:
            return []
        opened = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        # the checkpoint's description without its weights: all check_fits reads
        described = ConditionedModel(
            **ConditionedModel.described_by(self.manifest, resolve_checkpoint(self.checkpoint.currentData()))
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PhenDiffWarning)
            try:
                inputs = ImageInput.from_layers(
                    self.channel_layers(), self.manifest["channel_names"], self.viewer.dims.point, opened
                )
                where = "Layer " + ", ".join(f"'{layer.name}'" for layer in inputs.layers)
                check_fits(described, inputs.pixels(), where)
            except PhenDiffError:
                return []
        said = [str(warning.message) for warning in caught if issubclass(warning.category, PhenDiffWarning)]
        self.input_warnings.setText(
            "<br>".join(WARNING_STYLE.format("⚠ " + html.escape(text, quote=False)) for text in said)
        )
        return said

    # --- the checkpoint ------------------------------------------------------------------------------------------
    def _refresh_checkpoints(self, recent=None) -> None:
        current = self.checkpoint.currentData()
        self.checkpoint.blockSignals(True)
        self.checkpoint.clear()
        self.checkpoint.addItem("demo (shipped)", "demo")
        for path in CHECKPOINTS.recent:
            if path != "demo":
                self.checkpoint.addItem(path, path)
        self.checkpoint.blockSignals(False)
        self.select_checkpoint(current or "demo")

    def select_checkpoint(self, path: str | Path) -> None:
        """Select a checkpoint folder (or "demo"), adding it to the recent list if it is new."""
        if self.checkpoint.findData(str(path)) < 0:
            CHECKPOINTS.add(path)  # refreshes the list through the event
        index = max(0, self.checkpoint.findData(str(path)))
        if self.checkpoint.currentIndex() == index:
            self._load_manifest()
        self.checkpoint.setCurrentIndex(index)

    def browse_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a checkpoint folder (it holds phendiff.json)")
        if folder:
            self.select_checkpoint(Path(folder).resolve())

    def _load_manifest(self, index=None) -> None:
        """Read the chosen checkpoint's manifest (no weights): conditions for the dropdowns, channels to check.
        The source and target stay as chosen when the checkpoint has them; otherwise they are to be chosen."""
        chosen = self.source.currentText(), self.target.currentText()
        self.checkpoint.setToolTip(self.checkpoint.currentText())
        with self._by_the_dock():
            self.source.clear()
            self.target.clear()
        self.manifest, self.manifest_error = None, ""
        try:
            self.manifest = read_manifest(self.checkpoint.currentData())
        except PhenDiffError as exc:
            self.manifest_error = str(exc)
            self.checkpoint_info.setText(ERROR_STYLE.format(exc))
            self.input_warnings.setText("")
            self._source_from = None
            self._show_direction()
            return
        conditions = self.manifest["conditions"]
        with self._by_the_dock():
            for combo, condition in zip((self.source, self.target), chosen):
                combo.addItems(conditions)
                combo.setCurrentIndex(combo.findText(condition) if condition else -1)
        if not self.source.currentText():
            self._source_from = None
        channels = self.manifest["channel_names"]
        self._make_keep_checks(channels)
        self.checkpoint_info.setText(
            f"{len(channels)} channel(s): {', '.join(channels)} · conditions: "
            f"{', '.join(conditions)} · {self.manifest['image_size']} px"
        )
        self._guess_source()
        self._show_direction()
        self._preselect_options()
        self._input_changed()
