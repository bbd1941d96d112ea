"""The Translate dock: pick layers, checkpoint and conditions; one click runs core.translate.iter_translate.

The work happens in _translate_worker.py (napari's thread_worker over the core generators: translate, morph,
control, samples, a folder, measuring cells); the dock only gathers parameters, shows progress and turns the
results into layers (_results.py) and the per-cell table (_cells_panel.py). Its sections are parts of TranslateDock:
the image layers and the checkpoint (_checkpoint_panel.py), the source and target (_direction_panel.py), the
settings (_options_panel.py), Cells (_cells_panel.py), Folder (_folder_panel.py) and Calibrate
(_calibrate_panel.py).
"""

from __future__ import annotations

import gc
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QFormLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..core.checkpoint import MANIFEST
from ..core.errors import PhenDiffError
from ..core.models.base import ConditionedModel
from ..core.pace import duration, percent_done
from ..core.estimate import Estimate
from ._calibrate_panel import CalibratePanel
from ._cells_panel import CellsPanel
from ._checkpoint_panel import CheckpointPanel
from ._comparison import ChannelRow
from ._direction_panel import DirectionPanel, guess_condition
from ._folder_panel import FolderPanel
from ._layers import ImageInput
from ._options_panel import OptionsPanel
from ._results import ResultLayers
from ._shared import CHECKPOINTS, ERROR_STYLE, Section, WorkerDock, button, connect_while_alive, in_dock_words, scrolled
from ._shared import row as in_a_row  # (row: a ChannelRow here)
from ._translate_worker import Calibrated, Cells, Folder, PendingRun, Spread, TranslateRequest, run_translation

__all__ = ["TranslateDock", "guess_condition"]  # guess_condition: _direction_panel.py's, named here as before


class TranslateDock(
    CheckpointPanel, DirectionPanel, OptionsPanel, ResultLayers, CellsPanel, FolderPanel, CalibratePanel, WorkerDock
):
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
        self._shown = False  # this run's result was shown (a calibration's, even when Cancel came too late)
        self.cells: Cells | None = None
        # the last run's files for Save results: (file stem, [(layer, channel)]); the channel layers of one
        # multichannel layer's results make one file with those channels, as the CLI writes it
        self.results: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.rows: list[ChannelRow] = []  # the comparison's rows, one per channel (_comparison.py)
        self._pending: PendingRun | None = None  # the run whose result is awaited
        self._run_key: tuple | None = None
        self._source_from: tuple[str, str] | None = None  # (layer | folder, how): the source was set from a name
        self._setting = False  # the dock, not the user, is changing the source
        self._build()
        self._refresh_checkpoints()
        connect_while_alive(CHECKPOINTS.events.recent, self._refresh_checkpoints, self)

    # --- building ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        translate = self._make_checkpoint_controls() + self._make_direction_controls() + self._make_option_controls()
        self.release_button = QPushButton("Release model")
        self.release_button.clicked.connect(self.release_model)
        self.sections = {
            "Translate": Section("Translate", form(translate)),
            "Run": Section(
                "Run: seed, memory, device",
                form(self._make_run_controls() + [(None, self.release_button)]),
                expanded=False,
            ),
            "Explore": Section("Explore: morph, control", form(self._make_explore_controls()), expanded=False),
            "Cells": Section("Cells", self._make_cells_controls(), expanded=False),
            "Folder": Section("Folder", self._make_folder_controls(), expanded=False),
            "Calibrate": Section(
                "Calibrate: this direction's setting", self._make_calibrate_controls(), expanded=False
            ),
        }
        layout = QVBoxLayout(scrolled(self))
        layout.setContentsMargins(6, 6, 6, 6)
        for section in self.sections.values():
            layout.addWidget(section)
        layout.addStretch()
        self._build_footer()
        self.set_running(False)

    def _build_footer(self) -> None:
        """The run buttons, the progress bar and the status line, below the scroll area: always in view."""
        self.translate_button = QPushButton("Translate")
        self.translate_button.clicked.connect(self.translate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.estimate_button = button(
            "Estimate time",
            self.estimate,
            "How long Translate would take on this computer with these settings: the "
            "model is timed on a batch of this image's tiles (a few network calls); "
            "nothing is translated.",
        )
        self.save_button = button(
            "Save results…",
            self.browse_save,
            "Write the last run's layers as TIFFs into a folder, named as the layers are, "
            "with the checkpoint's channel names and the settings recorded inside.",
        )
        self.status = QLabel(wordWrap=True)
        self.progress_bar = QProgressBar()
        footer = self.layout()
        footer.setContentsMargins(6, 0, 6, 6)
        footer.addWidget(in_a_row(self.translate_button, self.estimate_button, self.cancel_button, self.save_button))
        footer.addWidget(self.progress_bar)
        footer.addWidget(self.status)

    # --- running -------------------------------------------------------------------------------------------------
    def request(self, mode: str = "translate") -> tuple[ImageInput, TranslateRequest]:
        """Check the inputs and gather the pixels (main thread); raise PhenDiffError saying what to fix."""
        self.layers.refresh()  # layers may have been renamed
        if self.manifest is None:
            self._load_manifest()
        if self.manifest is None:
            raise PhenDiffError(self.manifest_error)
        if mode != "control" and self.source.currentText() == self.target.currentText():
            raise PhenDiffError(
                "Source and target are the same condition; choose another target (or press "
                "'Control: source → source' for the round trip)."
            )
        point = self.viewer.dims.point if self.scope.currentText() == "current plane" else None
        opened = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        inputs = ImageInput.from_layers(self.channel_layers(), self.manifest["channel_names"], point, opened)
        source, target = self.source.currentText(), self.target.currentText()
        return inputs, self._settings_request(source, target, inputs.pixels(), mode)

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
        if self.running:
            self._report("A translation is already running: wait for it or press Cancel.")
            return None
        model, key = self.cached_model(request)
        worker = run_translation(request, model, self._inversions)
        self._pending, self._run_key = PendingRun("translate", inputs, request), key
        what = {
            "translate": "Translating",
            "morph": "Morphing",
            "control": "Control run:",
            "estimate": "Timing a translation of",
        }[mode]
        matched = f" ({inputs.matched})" if inputs.matched else ""
        return self.start_worker(
            worker, f"{what} {request.images.shape[0]} image(s) {request.source} → {request.shown_target}{matched}…"
        )

    def free_for_a_run(self) -> bool:
        """Whether no run is active; if one is, the status line says so."""
        if self.running:
            self._report("A run is active: wait for it or press Cancel.")
        return not self.running

    def require_manifest(self) -> None:
        """Raise PhenDiffError, saying what is wrong, unless a checkpoint's manifest was read."""
        if self.manifest is None:
            raise PhenDiffError(self.manifest_error or "Choose a checkpoint first.")

    def cached_model(self, request: TranslateRequest) -> tuple[ConditionedModel | None, tuple]:
        """The model the dock holds when it was loaded for this request's checkpoint and device (else None), and
        the key a run keeps for on_loaded. A checkpoint trained further or calibrated in place has a newer manifest:
        the model held for it is then stale."""
        return self.cached_model_key(request.checkpoint, request.device)

    def cached_model_key(self, checkpoint: Path, device: str) -> tuple[ConditionedModel | None, tuple]:
        """`cached_model` for a checkpoint folder and a device."""
        key = (checkpoint, device, (checkpoint / MANIFEST).stat().st_mtime_ns)
        return (self.model if key == self._model_key else None), key

    def cancel(self) -> None:
        """Stop between two steps; nothing is added."""
        if self.running and self._pending is not None:
            if self._pending.kind != "calibrate":  # a calibration's last step stores its choice: show it if it comes
                self._pending = None
            self._cancelled = True
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
        self._shown = True
        if isinstance(result, Folder):
            done = result.result
            self.status.setText(
                f"Folder done: {len(done.written)} file(s) written, {len(done.skipped)} input(s) "
                f"already translated and skipped, in {result.out} (summary.json lists them; per-cell "
                "tables are the *_cells.csv files)."
            )
        elif isinstance(result, Estimate):
            copied = f", {result.copied} without cells copied" if result.copied else ""
            self.status.setText(
                f"Translate would take about {duration(result.seconds)} on this computer: "
                f"{result.tiles} tile(s) to translate{copied} (timed on its first tiles; nothing "
                "was translated)."
            )
        elif isinstance(result, Cells):
            self._show_cells(result)
        elif isinstance(result, Calibrated):
            self._show_calibration(result)
        elif isinstance(result, Spread):
            self._show_spread(result.images)
        else:
            self._show_result(result)

    def start_worker(self, worker, message: str):
        self._estimated, self._shown = False, False
        return super().start_worker(worker, message)

    def progress_text(self, step: int, total: int, left: float | None) -> str:
        """Percent done and the time left: network steps over tiles mean nothing to a biologist."""
        done = f"{percent_done(step, total)}%"
        if self._where:  # a folder: the file being translated, its share done and its time left
            return f"{self._where} · {done}" + ("" if left is None else f" · about {duration(left)} left in it")
        return done if left is None else f"{done} · about {duration(left)} left"

    def on_progress(self, event) -> None:
        """Say once, as soon as the first steps are timed, how long the whole run will take on this computer."""
        left = getattr(event, "seconds_left", None)
        if left is not None and not self._estimated:
            self._estimated = True
            whole = "for its first file" if self._where else "on this computer"
            self.status.setText(
                f"{self.status.text()} About {duration(left)} {whole} (timed on its first steps); Cancel stops "
                "between two steps."
            )

    def on_finished(self, aborted: bool) -> None:
        if (aborted or self._cancelled) and not self._shown:  # a fast run may end before the stop request reaches it
            self.status.setText("Cancelled: nothing was added or stored.")
        self._pending, self._cancelled = None, False

    def on_error(self, exc: Exception) -> None:
        self._pending = None
        super().on_error(exc)

    def run_buttons(self) -> list:
        return [
            self.translate_button,
            self.estimate_button,
            self.release_button,
            self.morph_button,
            self.control_button,
            self.measure_button,
            self.folder_button,
            self.calibrate_button,
        ]

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


def form(rows: list[tuple[str | None, QWidget]]) -> QFormLayout:
    """A form of (label, control) rows, a control without a label spanning its row. A narrow dock puts a field under
    its label rather than cut it."""
    made = QFormLayout()
    for label, widget in rows:
        if label is None:
            made.addRow(widget)
        else:
            made.addRow(label, widget)
    made.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    made.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return made
