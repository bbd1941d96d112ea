"""The Translate dock: pick layers, checkpoint and conditions; one click runs core.translate.iter_translate.

The work happens in _translate_worker.py (napari's thread_worker over the core generators: translate, morph,
control, samples, a folder, measuring cells); the dock only gathers parameters, shows progress and turns the
results into layers (_results.py) and the per-cell table (_cells_panel.py).
"""

from __future__ import annotations

import contextlib
import gc
import html
import re
import warnings
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QSizePolicy, QSpinBox, QTableWidget, QVBoxLayout, QWidget)

from ..core.batch import named_condition, plan_jobs
from ..core.checkpoint import MANIFEST, resolve_checkpoint
from ..core.errors import PhenDiffError, PhenDiffWarning
from ..core.explore import MORPH_FRAMES
from ..core.models import read_manifest
from ..core.models.base import ConditionedModel
from ..core.pace import duration
from ..core.options import HELP, MORPH_PATHS, NEGATIVES, TranslateOptions, resolve_options
from ..core.inputs import check_fits
from ..core.translate import Estimate
from ._layer_picker import LayerPicker
from ._comparison import ChannelRow
from ._layers import ImageInput
from ._shared import (CHECKPOINTS, ERROR_STYLE, WARNING_STYLE, Note, Section, WorkerDock, button, connect_while_alive,
                      device_combo, in_dock_words, scrolled, spin)
from ._shared import row as in_a_row  # (row: a ChannelRow here)
from ._cells_panel import CellsPanel
from ._results import ResultLayers
from ._translate_worker import Cells, Folder, Spread, TranslateRequest, run_folder, run_measure, run_translation

CHOOSE = "choose…"


def guess_condition(layer, conditions: list[str]) -> tuple[str, str] | None:
    """(condition, "name" | "file" | "folder") when the layer's name, its file's name or the name of the folder its
    file is in is one of the conditions: whole names, case-insensitive, napari's ` [1]` of a repeated name left out
    (`untreated`, `untreated/field7.tif`). Else None: the source is then the user's to choose, never guessed (a
    `TNFa_high_0003` could be TNFa or TNFa_high)."""
    name = re.sub(r" \[\d+\]$", "", layer.name).lower()
    by_name = {c.lower(): c for c in conditions}
    if name in by_name:
        return by_name[name], "name"
    path = getattr(getattr(layer, "source", None), "path", None)
    found = named_condition(path, conditions) if path else None
    if found is not None:
        return found[0], "file" if found[1] == "name" else "folder"
    return None



class TranslateDock(ResultLayers, CellsPanel, WorkerDock):
    """Translate image layers from a source condition to a target condition with a PhenDiff checkpoint."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.manifest: dict | None = None
        self.manifest_error = ""
        self.model: ConditionedModel | None = None
        self._model_key: tuple | None = None
        self._inversions: dict = {}  # the inversion of the last images, for regenerating without inverting again
        self._last: tuple[ImageInput, TranslateRequest, np.ndarray] | None = None  # the last translation shown
        self._cancelled = False
        self._estimated = False  # this run's time was announced (on_progress)
        self.cells: Cells | None = None
        # the last run's files for Save results: (file stem, [(layer, channel)]); the channel layers of one
        # multichannel layer's results make one file with those channels, as the CLI writes it
        self.results: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.rows: list[ChannelRow] = []  # the comparison's rows, one per channel (_comparison.py)
        self._pending: tuple[ImageInput, TranslateRequest] | None = None  # the run whose result is awaited
        self._run_key: tuple | None = None
        self._source_from: tuple[str, str] | None = None  # (layer | folder, how): the source was set from a name
        self._setting = False  # the dock, not the user, is changing the source
        self._build()
        self._refresh_checkpoints()
        connect_while_alive(CHECKPOINTS.events.recent, self._refresh_checkpoints, self)

    # --- building ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
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
        self.source, self.target = QComboBox(), QComboBox()
        for combo in (self.source, self.target):
            combo.setPlaceholderText(CHOOSE)
        self.source.setToolTip("The condition the images are in. Set for you only when a ticked layer, its file or "
                               "its folder (or the folder translated) is named after a condition; never guessed.")
        self.source.currentTextChanged.connect(self._source_changed)
        self.source.activated.connect(self._source_chosen)  # the user's choice, even of the condition already shown
        self.source.currentTextChanged.connect(self._preselect_options)
        self.target.currentTextChanged.connect(self._preselect_options)
        self.direction_info = Note()
        defaults = TranslateOptions()
        self.strength = spin(QDoubleSpinBox(), 0.05, 1.0, defaults.strength,
                             "How far the image is taken apart before it is rebuilt: low keeps every cell, high "
                             "lets the condition change more (1: all the way to noise).")
        self.strength.setSingleStep(0.05)
        self.guidance = spin(QDoubleSpinBox(), 1.0, 20.0, defaults.guidance,
                             "How strongly the target condition is pushed: 1 = not at all; higher moves the "
                             "phenotype further but may change what should stay.")
        self.guidance.setSpecialValueText("off")
        self.negative = QComboBox()
        self.negative.addItems(list(NEGATIVES))
        self.negative.setToolTip("What the target is contrasted with: 'source' pushes along what differs between "
                                 "the two conditions; 'null' is classic classifier-free guidance.")
        self.keep_box = QWidget()  # one check box per channel of the checkpoint, made when it is chosen
        QHBoxLayout(self.keep_box).setContentsMargins(0, 0, 0, 0)
        self.keep_box.setToolTip("Channels the conditions do not change (say DNA): they stay exactly as in the "
                                 "original and the other channels are rebuilt around them, so the nuclei cannot "
                                 "move. Not for latent (Stable Diffusion) checkpoints.")
        self.keep_checks: dict[str, QCheckBox] = {}
        self.steps = spin(QSpinBox(), 1, 1000, defaults.steps, HELP["steps"].capitalize() + ".")
        self.settings_info = Note()
        self.seed = spin(QSpinBox(), 0, 2**31 - 1, 0, "Only matters for stochastic settings; recorded with the result.")
        self.batch_size = spin(QSpinBox(), 0, 1024, 0, "Tiles translated together; lower it if the GPU runs out "
                                "of memory.")
        self.batch_size.setSpecialValueText("auto")
        self.skip_background = QCheckBox("copy tiles without cells")
        self.skip_background.setChecked(defaults.skip_background)
        self.skip_background.setToolTip(HELP["skip_background"].capitalize() + ": faster on sparse fields.")
        self.device = device_combo()
        self.scope = QComboBox()
        self.scope.addItems(["current plane", "whole stack"])
        self.translate_button = QPushButton("Translate")
        self.translate_button.clicked.connect(self.translate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.estimate_button = button("Estimate time", self.estimate,
                                      "How long Translate would take on this computer with these settings: the "
                                      "model is timed on a batch of this image's tiles (a few network calls); "
                                      "nothing is translated.")
        self.frames = spin(QSpinBox(), 1, 64, MORPH_FRAMES, "Frames of the morph after the original: each goes a "
                           "little deeper, the last is the translation; the slider scrubs the progression.")
        self.morph_path = QComboBox()
        self.morph_path.addItems(list(MORPH_PATHS))
        self.morph_path.setToolTip("strength: each frame takes the image apart a little deeper (frame 1 barely "
                                   "changed); embedding: every frame as deep as the translation, the condition "
                                   "blended from the source to the target.")
        self.samples = spin(QSpinBox(), 0, 32, 0, "Regenerate with this many seeds and add a layer of how much they "
                            "disagree per pixel: where the model is unsure. Off: none.")
        self.samples.setSpecialValueText("off")
        self.morph_button = button("Morph", self.morph,
                                   "One layer of frames from the original to the target, on the same cells.")
        self.control_button = button("Control: source → source", self.control,
                                     "The same settings back to the source condition: what the model changes "
                                     "anyway, to tell the phenotype from reconstruction error.")
        self.measure_button = button("Measure cells", self.measure_cells,
                                     "Segment the nuclei of the original and measure every cell on the original "
                                     "and on the last translation.")
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
        self.folder_button = button("Translate folder…", self.browse_folder,
                                    "Every image of a folder with these settings: TIFFs, per-cell tables and one "
                                    "summary in an output folder; a second run continues where it stopped.")
        self.export_button = button("Export table…", self.browse_export)
        self.save_button = button("Save results…", self.browse_save,
                                  "Write the last run's layers as TIFFs into a folder, named as the layers are, "
                                  "with the checkpoint's channel names and the settings recorded inside.")
        self.release_button = QPushButton("Release model")
        self.release_button.clicked.connect(self.release_model)
        self.status = QLabel(wordWrap=True)
        self.progress_bar = QProgressBar()

        self.input_warnings = Note()
        self.input_warnings.setToolTip("How the ticked image differs from the checkpoint's training images, checked "
                                       "on the current plane as a run would check it: translated anyway, but say.")
        self.folder_info = Note("Every image of a folder, with the settings above, into an output folder.")

        translate = QFormLayout()
        translate.addRow("Image layers", self.layers)
        translate.addRow("Checkpoint", in_a_row(self.checkpoint, browse))
        translate.addRow(self.checkpoint_info)
        translate.addRow(self.input_warnings)
        translate.addRow("Source", self.source)
        translate.addRow("Target", self.target)
        translate.addRow(self.direction_info)
        translate.addRow("Strength", self.strength)
        translate.addRow("Guidance", self.guidance)
        translate.addRow("Contrast with", self.negative)
        translate.addRow("Keep unchanged", self.keep_box)
        translate.addRow("DDIM steps", self.steps)
        translate.addRow(self.settings_info)
        translate.addRow("Translate", self.scope)
        translate.addRow("Uncertainty samples", self.samples)
        run = QFormLayout()
        run.addRow("Seed", self.seed)
        run.addRow("Tiles per batch", self.batch_size)
        run.addRow("Skip background", self.skip_background)
        run.addRow("Device", self.device)
        run.addRow(self.release_button)
        explore = QFormLayout()
        explore.addRow("Morph frames", in_a_row(self.frames, self.morph_path))
        explore.addRow(in_a_row(self.morph_button, self.control_button))
        cells = QVBoxLayout()
        cells.addWidget(in_a_row(self.measure_button, self.measure_choice, self.next_button))
        cells.addWidget(self.cells_table)
        cells.addWidget(self.export_button)
        folder = QVBoxLayout()
        folder.addWidget(self.folder_info)
        folder.addWidget(self.folder_button)
        self.sections = {
            "Translate": Section("Translate", translate),
            "Run": Section("Run: seed, memory, device", run, expanded=False),
            "Explore": Section("Explore: morph, control", explore, expanded=False),
            "Cells": Section("Cells", cells, expanded=False),
            "Folder": Section("Folder", folder, expanded=False)}
        for form in (translate, run, explore):  # a narrow dock puts a field under its label rather than cut it
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        layout = QVBoxLayout(scrolled(self))
        layout.setContentsMargins(6, 6, 6, 6)
        for section in self.sections.values():
            layout.addWidget(section)
        layout.addStretch()
        footer = self.layout()  # below the scroll area: always in view
        footer.setContentsMargins(6, 0, 6, 6)
        footer.addWidget(in_a_row(self.translate_button, self.estimate_button, self.cancel_button, self.save_button))
        footer.addWidget(self.progress_bar)
        footer.addWidget(self.status)
        self.set_running(False)

    # --- inputs --------------------------------------------------------------------------------------------------
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
        described = ConditionedModel(**ConditionedModel.described_by(
            self.manifest, resolve_checkpoint(self.checkpoint.currentData())))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PhenDiffWarning)
            try:
                inputs = ImageInput.from_layers(self.channel_layers(), self.manifest["channel_names"],
                                                self.viewer.dims.point, opened)
                where = "Layer " + ", ".join(f"'{layer.name}'" for layer in inputs.layers)
                check_fits(described, inputs.pixels(), where)
            except PhenDiffError:
                return []
        said = [str(warning.message) for warning in caught if issubclass(warning.category, PhenDiffWarning)]
        self.input_warnings.setText("<br>".join(WARNING_STYLE.format("⚠ " + html.escape(text, quote=False))
                                                for text in said))
        return said

    # --- direction -----------------------------------------------------------------------------------------------
    def _guess_source(self, item=None) -> None:
        """The source from the ticked layers when their names, files or folders name one condition (as the sample
        data and a folder per condition do). Otherwise a source set from names before is taken back: the user
        chooses it. A source the user chose stays."""
        if not self.manifest:
            return
        found: dict[str, str] = {}
        for layer in self.channel_layers():
            named = guess_condition(layer, self.manifest["conditions"])
            if named is not None:
                where = {"name": "name", "file": "file's name", "folder": "file's folder"}[named[1]]
                found.setdefault(named[0], f"the {where} of layer '{layer.name}'")
        if len(found) == 1:
            self.set_source(*next(iter(found.items())), kind="layer")
        elif self._source_from is not None:
            with self._by_the_dock():
                self.source.setCurrentIndex(-1)
            self._source_from = None
            self._show_direction(f"The ticked layers are named after {' and '.join(found)}: choose the source."
                                 if found else "")

    def set_source(self, condition: str, origin: str, kind: str = "layer") -> None:
        """Set the source from a name (`origin` says whose), and a target that differs from it when that is
        unambiguous (the only other condition); the origin is shown next to the source."""
        with self._by_the_dock():
            self.source.setCurrentText(condition)
        self._source_from = (kind, origin)
        if self.target.currentText() in ("", condition):
            self._only_other_target()
        self._show_direction()

    @contextlib.contextmanager
    def _by_the_dock(self):
        self._setting = True
        try:
            yield
        finally:
            self._setting = False

    def _source_changed(self, text: str) -> None:
        if not self._setting:
            self._source_chosen()

    def _source_chosen(self, index=None) -> None:
        """The user chose the source: it is theirs now, whatever named it before."""
        self._source_from = None
        if not self.target.currentText():
            self._only_other_target()
        self._show_direction()

    def _only_other_target(self) -> None:
        others = [c for c in self.manifest["conditions"] if c != self.source.currentText()] if self.manifest else []
        self.target.setCurrentIndex(self.target.findText(others[0]) if len(others) == 1 else -1)

    def _show_direction(self, problem: str = "") -> None:
        """Next to the source: where it came from, or what to do."""
        if problem:
            self.direction_info.setText(ERROR_STYLE.format(problem))
        elif not self.source.currentText() and self.manifest:
            self.direction_info.setText("Choose the source: the condition the images are in.")
        elif self._source_from is not None:
            self.direction_info.setText(f"Source {self.source.currentText()}: from {self._source_from[1]}.")
        else:
            self.direction_info.setText("")

    def _direction_problem(self, mode: str, folder: Path | None = None) -> str:
        """What is missing from the source and target ("" when nothing). A source set from the name of a layer is
        not a folder's, nor one set from a folder's name the ticked layers'."""
        source, target = self.source.currentText(), self.target.currentText()
        kind, what = (("folder", f"the folder {folder.name}: choose the source condition of its images")
                      if folder is not None else ("layer", "the ticked layers: choose their source condition"))
        if self._source_from is not None and self._source_from[0] != kind:
            return f"Source {source} was set from {self._source_from[1]}, not from {what}."
        if not source:
            where = f" of the images in {folder.name}" if folder is not None else ""
            return f"Choose the source condition{where}: the dock does not guess the condition of the images."
        if mode != "control" and not target:
            return "Choose the target condition: the condition to translate the images to."
        return ""

    def _refuse_direction(self, problem: str) -> None:
        self._show_direction(problem)
        self._report(problem)

    # --- checkpoint ----------------------------------------------------------------------------------------------
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
        self.checkpoint_info.setText(f"{len(channels)} channel(s): {', '.join(channels)} · conditions: "
                                     f"{', '.join(conditions)} · {self.manifest['image_size']} px")
        self._guess_source()
        self._show_direction()
        self._preselect_options()
        self._input_changed()

    def _preselect_options(self, text=None) -> None:
        """Set strength, guidance and contrast to the checkpoint's calibrated setting for this direction (else the
        model's, else the project's defaults) and say which they are."""
        source, target = self.source.currentText(), self.target.currentText()
        if not self.manifest or not source or not target:
            return
        options, sources = resolve_options(self.manifest, source, target)
        self.strength.setValue(options.strength)
        self.guidance.setValue(options.guidance)
        self.negative.setCurrentText(options.negative)
        for name, check in self.keep_checks.items():
            check.setChecked(name in options.keep_channels)
        origin = ("calibrated for this checkpoint" if "calibrated" in sources.values() else
                  "this model's defaults, not calibrated" if "model default" in sources.values() else
                  "project defaults")
        shown = ", ".join(f"{name} {getattr(options, name)}" for name in ("strength", "guidance", "negative"))
        if options.keep_channels:
            shown += f", {'+'.join(options.keep_channels)} kept"
        self.settings_info.setText(f"Preselected: {origin} ({shown}).")

    def _make_keep_checks(self, channels: list[str]) -> None:
        layout = self.keep_box.layout()
        for check in self.keep_checks.values():
            layout.removeWidget(check)
            check.deleteLater()
        self.keep_checks = {name: QCheckBox(name) for name in channels}
        for check in self.keep_checks.values():
            check.setEnabled(len(channels) > 1)
            layout.addWidget(check)

    def kept_channels(self) -> tuple[str, ...]:
        """The channels ticked under Keep unchanged, in the checkpoint's order."""
        return tuple(name for name, check in self.keep_checks.items() if check.isChecked())

    # --- running -------------------------------------------------------------------------------------------------
    def request(self, mode: str = "translate") -> tuple[ImageInput, TranslateRequest]:
        """Check the inputs and gather the pixels (main thread); raise PhenDiffError saying what to fix."""
        self.layers.refresh()  # layers may have been renamed
        if self.manifest is None:
            self._load_manifest()
        if self.manifest is None:
            raise PhenDiffError(self.manifest_error)
        if mode != "control" and self.source.currentText() == self.target.currentText():
            raise PhenDiffError("Source and target are the same condition; choose another target (or press "
                                "'Control: source → source' for the round trip).")
        point = self.viewer.dims.point if self.scope.currentText() == "current plane" else None
        opened = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        inputs = ImageInput.from_layers(self.channel_layers(), self.manifest["channel_names"], point, opened)
        source, target = self.source.currentText(), self.target.currentText()
        return inputs, self._settings_request(source, target, inputs.pixels(), mode)

    def _settings_request(self, source: str, target: str, images: np.ndarray, mode: str) -> TranslateRequest:
        """The dock's settings for one run; options the user changed from the preselection count as given."""
        shown = dict(strength=self.strength.value(), guidance=self.guidance.value(),
                     negative=self.negative.currentText(), steps=self.steps.value(), seed=self.seed.value(),
                     batch_size=self.batch_size.value() or None, keep_channels=self.kept_channels(),
                     skip_background=self.skip_background.isChecked())
        preset, _ = resolve_options(self.manifest, source, target)
        changed = {name: value for name, value in shown.items() if getattr(preset, name) != value}  # the user's
        options, sources = resolve_options(self.manifest, source, target, changed)
        return TranslateRequest(
            checkpoint=resolve_checkpoint(self.checkpoint.currentData()), device=self.device.currentData(),
            source=source, target=target, options=options, sources=sources, images=images, mode=mode,
            frames=self.frames.value(), morph_path=self.morph_path.currentText(), samples=self.samples.value())

    def translate(self):
        """The Translate button: start the worker and return it (None if the inputs do not fit)."""
        return self._start("translate")

    def morph(self):
        """The Morph button: one layer of frames from the original to the target (the slider scrubs them)."""
        return self._start("morph")

    def control(self):
        """The control button: source -> source at the same settings."""
        return self._start("control")

    def estimate(self):
        """The Estimate time button: how long Translate would take here (nothing is translated)."""
        return self._start("estimate")

    def _start(self, mode: str):
        problem = self._direction_problem(mode) if self.manifest is not None else ""
        if problem:
            self._refuse_direction(problem)
            return None
        try:
            inputs, request = self.request(mode)
        except PhenDiffError as exc:
            self._report(str(exc))
            return None
        # a checkpoint trained further in place has a newer manifest: the cached weights are then stale
        key = (request.checkpoint, request.device, (request.checkpoint / MANIFEST).stat().st_mtime_ns)
        if self.running:
            self._report("A translation is already running: wait for it or press Cancel.")
            return None
        worker = run_translation(request, self.model if key == self._model_key else None, self._inversions)
        self._pending, self._run_key = (inputs, request), key
        what = {"translate": "Translating", "morph": "Morphing", "control": "Control run:",
                "estimate": "Timing a translation of"}[mode]
        matched = f" ({inputs.matched})" if inputs.matched else ""
        return self.start_worker(worker, f"{what} {request.images.shape[0]} image(s) {request.source} → "
                                         f"{request.shown_target}{matched}…")

    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder of images to translate")
        if not folder:
            return
        out = QFileDialog.getExistingDirectory(self, "Choose the output folder (outside the images' folder)")
        if out:
            self.translate_folder(folder, out)

    def translate_folder(self, folder: str | Path, out: str | Path):
        """Translate every image of `folder` into `out` with the dock's settings (strength, ...); returns the worker
        (None if something must be fixed first). A folder named after a condition, or inside one, sets the source;
        otherwise the source must have been chosen in the dock (one set from a layer's name is not the folder's)."""
        if self.running:
            self._report("A run is active: wait for it or press Cancel.")
            return None
        folder = Path(folder)
        try:
            if self.manifest is None:
                raise PhenDiffError(self.manifest_error or "Choose a checkpoint first.")
            named = named_condition(folder, self.manifest["conditions"])
            if named is not None:
                origin = (f"the name of the folder {folder.name}" if named[1] == "name" else
                          f"the name of the folder {folder.parent.name}, which holds {folder.name}")
                self.set_source(named[0], origin, kind="folder")
            problem = self._direction_problem("translate", folder)
            if problem:
                self._refuse_direction(problem)
                return None
            source, target = self.source.currentText(), self.target.currentText()
            if source == target:
                raise PhenDiffError("Source and target are the same condition; choose another target.")
            request = self._settings_request(source, target, np.zeros((0,)), "translate")
            plan_jobs([Path(folder)], Path(out), [target])  # no images, a collision or out inside: say so now
        except PhenDiffError as exc:
            self._report(str(exc))
            return None
        key = (request.checkpoint, request.device, (request.checkpoint / MANIFEST).stat().st_mtime_ns)
        worker = run_folder(request, self.model if key == self._model_key else None, Path(folder), Path(out))
        self._pending, self._run_key = ("folder", None, request), key
        origin = f" (source from {self._source_from[1]})" if self._source_from else ""
        return self.start_worker(worker, f"Translating the images of {folder} {source} → {target}{origin}…")

    def measure_cells(self):
        """The Measure cells button: segment and measure every cell of the last translation's originals."""
        if self._last is None:
            self._report("Translate first: the cells are measured on the original and its last translation.")
            return None
        if self.running:
            self._report("A run is active: wait for it or press Cancel.")
            return None
        inputs, request, result = self._last
        self._pending = ("cells", inputs, request)
        return self.start_worker(run_measure(request.images, result, self.manifest["channel_names"]),
                                 "Measuring cells…")

    def cancel(self) -> None:
        """Stop between two steps; nothing is added."""
        if self.running and self._pending is not None:
            self._pending, self._cancelled = None, True
            self.stop_worker()
            self.status.setText("Cancelling after the current step…")

    def on_loaded(self, model: ConditionedModel) -> None:
        """Cache the model the worker used, releasing a different one held before (and its inversions)."""
        if self.model is not None and self.model is not model:
            self.model.release()
            self._inversions.clear()
        self.model, self._model_key = model, self._run_key

    def on_result(self, result) -> None:
        if self._pending is None:  # cancelled
            return
        if isinstance(result, Folder):
            done = result.result
            self.status.setText(f"Folder done: {len(done.written)} file(s) written, {len(done.skipped)} input(s) "
                                f"already translated and skipped, in {result.out} (summary.json lists them; per-cell "
                                "tables are the *_cells.csv files).")
        elif isinstance(result, Estimate):
            copied = f", {result.copied} without cells copied" if result.copied else ""
            self.status.setText(f"Translate would take about {duration(result.seconds)} on this computer: "
                                f"{result.tiles} tile(s) to translate{copied} (timed on its first tiles; nothing "
                                "was translated).")
        elif isinstance(result, Cells):
            self._show_cells(result)
        elif isinstance(result, Spread):
            self._show_spread(result.images)
        else:
            self._show_result(result)

    def start_worker(self, worker, message: str):
        self._estimated = False
        return super().start_worker(worker, message)

    def progress_text(self, step: int, total: int, left: float | None) -> str:
        """Percent done and the time left: network steps over tiles mean nothing to a biologist."""
        done = f"{100 * min(step, total) // total}%"
        return done if left is None else f"{done} · about {duration(left)} left"

    def on_progress(self, event) -> None:
        """Say once, as soon as the first steps are timed, how long the whole run will take on this computer."""
        left = getattr(event, "seconds_left", None)
        if left is not None and not self._estimated:
            self._estimated = True
            self.status.setText(f"{self.status.text()} About {duration(left)} on this computer (timed on its "
                                "first steps); Cancel stops between two steps.")

    def on_finished(self, aborted: bool) -> None:
        if aborted or self._cancelled:  # a fast run may end before the stop request reaches it
            self.status.setText("Cancelled: no layers were added.")
        self._pending, self._cancelled = None, False

    def on_error(self, exc: Exception) -> None:
        self._pending = None
        super().on_error(exc)

    def run_buttons(self) -> list:
        return [self.translate_button, self.estimate_button, self.release_button, self.morph_button,
                self.control_button,
                self.measure_button, self.folder_button]

    def stop_buttons(self) -> list:
        return [self.cancel_button]

    def release_model(self) -> None:
        """Free the cached model (GPU memory goes back to the driver)."""
        if self.model is not None:
            self.model.release()
        self.model, self._model_key = None, None
        self._inversions.clear()
        gc.collect()
        self.status.setText("Model released.")

    def _report(self, message: str) -> None:
        """A refused run, said once in the dock's status line (a notification would stay on the canvas)."""
        self.status.setText(ERROR_STYLE.format(in_dock_words(message)))

