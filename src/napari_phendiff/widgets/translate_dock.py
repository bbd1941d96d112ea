"""The Translate dock: pick layers, checkpoint and conditions; one click runs core.translate.iter_translate.

The work happens in `run_translation` (napari's thread_worker over the core generator); the dock only gathers
parameters, advances napari's progress bar per step and turns the final result into layers.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QLabel, QPushButton, QSpinBox,
                            QVBoxLayout)

from ..core.checkpoint import MANIFEST, resolve_checkpoint
from ..core.models import load_checkpoint, read_manifest
from ..core.models.base import ConditionedModel
from ..core.errors import PhenDiffError
from ..core.export import provenance
from ..core.options import HELP, NEGATIVES, TranslateOptions, describe, resolve_options
from ..core.translate import is_direct, iter_translate
from ._layer_picker import LayerPicker
from ._layers import ImageInput, difference_layer, translated_layer
from ._shared import (CHECKPOINTS, ERROR_STYLE, Loaded, Progress, Result, StoppableWorker, WorkerDock,
                      connect_while_alive, device_combo, explain_memory_errors, row, spin)

MEMORY_ADVICE = ("Lower 'Tiles per batch', translate the current plane instead of the whole stack, press "
                 "'Release model' in other docks, or choose device cpu.")


@dataclass(frozen=True)
class TranslateRequest:
    """Everything the worker needs: plain values and pixels, no layers."""

    checkpoint: Path
    device: str
    source: str
    target: str
    options: TranslateOptions
    sources: dict  # where each option came from: "given", "calibrated", "default"
    images: np.ndarray  # (N, C, Y, X)


@thread_worker(progress={"desc": "PhenDiff: translating"}, worker_class=StoppableWorker)
def run_translation(request: TranslateRequest, model: ConditionedModel | None):
    """Load the checkpoint unless it is cached (Loaded, so the dock can keep it), then translate: Progress per step,
    the Result before the last Progress."""
    with explain_memory_errors(request.device, MEMORY_ADVICE):
        if model is None:
            model = load_checkpoint(request.checkpoint, device=request.device)
        yield Loaded(model)
        for event in iter_translate(model, request.images, request.source, request.target, request.options):
            if event.phase == "done":
                yield Result(event.result)
            yield Progress(event.step, event.total, event)


class TranslateDock(WorkerDock):
    """Translate image layers from a source condition to a target condition with a PhenDiff checkpoint."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.manifest: dict | None = None
        self.manifest_error = ""
        self.model: ConditionedModel | None = None
        self._model_key: tuple | None = None
        self._pending: tuple[ImageInput, TranslateRequest] | None = None  # the run whose result is awaited
        self._run_key: tuple | None = None
        self._build()
        self._refresh_checkpoints()
        connect_while_alive(CHECKPOINTS.events.recent, self._refresh_checkpoints, self)

    # --- building ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.layers = LayerPicker(self.viewer)
        self.layers.itemChanged.connect(self._guess_source)
        self.checkpoint = QComboBox()
        self.checkpoint.currentIndexChanged.connect(self._load_manifest)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse_checkpoint)
        self.checkpoint_info = QLabel(wordWrap=True)
        self.source, self.target = QComboBox(), QComboBox()
        self.source.currentTextChanged.connect(self._preselect_options)
        self.target.currentTextChanged.connect(self._preselect_options)
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
        self.steps = spin(QSpinBox(), 1, 1000, defaults.steps, HELP["steps"].capitalize() + ".")
        self.settings_info = QLabel(wordWrap=True)
        self.seed = spin(QSpinBox(), 0, 2**31 - 1, 0, "Only matters for stochastic settings; recorded with the result.")
        self.batch_size = spin(QSpinBox(), 0, 1024, 0, "Tiles translated together; lower it if the GPU runs out "
                                "of memory.")
        self.batch_size.setSpecialValueText("auto")
        self.device = device_combo()
        self.scope = QComboBox()
        self.scope.addItems(["current plane", "whole stack"])
        self.translate_button = QPushButton("Translate")
        self.translate_button.clicked.connect(self.translate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.release_button = QPushButton("Release model")
        self.release_button.clicked.connect(self.release_model)
        self.status = QLabel(wordWrap=True)

        form = QFormLayout()
        form.addRow("Image layers", self.layers)
        form.addRow("Checkpoint", row(self.checkpoint, browse))
        form.addRow("", self.checkpoint_info)
        form.addRow("Source", self.source)
        form.addRow("Target", self.target)
        form.addRow("Strength", self.strength)
        form.addRow("Guidance", self.guidance)
        form.addRow("Contrast with", self.negative)
        form.addRow("DDIM steps", self.steps)
        form.addRow("", self.settings_info)
        form.addRow("Seed", self.seed)
        form.addRow("Tiles per batch", self.batch_size)
        form.addRow("Device", self.device)
        form.addRow("Translate", self.scope)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(row(self.translate_button, self.cancel_button))
        layout.addWidget(self.release_button)
        layout.addWidget(self.status)
        layout.addStretch()
        self.set_running(False)

    # --- inputs --------------------------------------------------------------------------------------------------
    def channel_layers(self) -> list[Image]:
        """The ticked layers: one layer, or one layer per channel in channel order."""
        return self.layers.ticked()

    def set_channel_layers(self, names: list[str]) -> None:
        """Tick exactly these layers, in this order."""
        self.layers.tick(names)

    def _guess_source(self, item=None) -> None:
        """A ticked layer named after a condition (as in the sample data) sets the source, the target the other."""
        for layer in self.channel_layers() if self.manifest else []:
            if self.source.findText(layer.name) >= 0:
                self.source.setCurrentText(layer.name)
                others = [c for c in self.manifest["conditions"] if c != layer.name]
                self.target.setCurrentText(others[0])
                return

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
        """Read the chosen checkpoint's manifest (no weights): conditions for the dropdowns, channels to check."""
        self.source.clear()
        self.target.clear()
        self.manifest, self.manifest_error = None, ""
        try:
            self.manifest = read_manifest(self.checkpoint.currentData())
        except PhenDiffError as exc:
            self.manifest_error = str(exc)
            self.checkpoint_info.setText(ERROR_STYLE.format(exc))
            return
        conditions = self.manifest["conditions"]
        self.source.addItems(conditions)
        self.target.addItems(conditions)
        self.target.setCurrentIndex(min(1, len(conditions) - 1))
        channels = self.manifest["channel_names"]
        self.checkpoint_info.setText(f"{len(channels)} channel(s): {', '.join(channels)} · conditions: "
                                     f"{', '.join(conditions)} · {self.manifest['image_size']} px")
        self._guess_source()
        self._preselect_options()

    def _preselect_options(self, text=None) -> None:
        """Set strength, guidance and contrast to the checkpoint's calibrated setting for this direction (else the
        defaults) and say which they are."""
        source, target = self.source.currentText(), self.target.currentText()
        if not self.manifest or not source or not target:
            return
        options, sources = resolve_options(self.manifest, source, target)
        self.strength.setValue(options.strength)
        self.guidance.setValue(options.guidance)
        self.negative.setCurrentText(options.negative)
        origin = "calibrated for this checkpoint" if "calibrated" in sources.values() else "project defaults"
        shown = ", ".join(f"{name} {getattr(options, name)}" for name in ("strength", "guidance", "negative"))
        self.settings_info.setText(f"Preselected: {origin} ({shown}).")

    # --- running -------------------------------------------------------------------------------------------------
    def request(self) -> tuple[ImageInput, TranslateRequest]:
        """Check the inputs and gather the pixels (main thread); raise PhenDiffError saying what to fix."""
        self.layers.refresh()  # layers may have been renamed
        if self.manifest is None:
            self._load_manifest()
        if self.manifest is None:
            raise PhenDiffError(self.manifest_error)
        if self.source.currentText() == self.target.currentText():
            raise PhenDiffError("Source and target are the same condition; choose another target.")
        point = self.viewer.dims.point if self.scope.currentText() == "current plane" else None
        inputs = ImageInput.from_layers(self.channel_layers(), self.manifest["channel_names"], point)
        source, target = self.source.currentText(), self.target.currentText()
        shown = dict(strength=self.strength.value(), guidance=self.guidance.value(),
                     negative=self.negative.currentText(), steps=self.steps.value(), seed=self.seed.value(),
                     batch_size=self.batch_size.value() or None)
        preset, _ = resolve_options(self.manifest, source, target)
        changed = {name: value for name, value in shown.items() if getattr(preset, name) != value}  # the user's
        options, sources = resolve_options(self.manifest, source, target, changed)
        request = TranslateRequest(
            checkpoint=resolve_checkpoint(self.checkpoint.currentData()), device=self.device.currentData(),
            source=source, target=target, options=options, sources=sources, images=inputs.pixels())
        return inputs, request

    def translate(self):
        """The Translate button: start the worker and return it (None if the inputs do not fit)."""
        try:
            inputs, request = self.request()
        except PhenDiffError as exc:
            self._report(str(exc))
            return None
        # a checkpoint trained further in place has a newer manifest: the cached weights are then stale
        key = (request.checkpoint, request.device, (request.checkpoint / MANIFEST).stat().st_mtime_ns)
        if self.running:
            self._report("A translation is already running: wait for it or press Cancel.")
            return None
        worker = run_translation(request, self.model if key == self._model_key else None)
        self._pending, self._run_key = (inputs, request), key
        return self.start_worker(worker, f"Translating {request.images.shape[0]} image(s) {request.source} → "
                                         f"{request.target}…")

    def cancel(self) -> None:
        """Stop between two steps; nothing is added."""
        if self.running and self._pending is not None:
            self._pending = None
            self.stop_worker()
            self.status.setText("Cancelling after the current step…")

    def on_loaded(self, model: ConditionedModel) -> None:
        """Cache the model the worker used, releasing a different one held before."""
        if self.model is not None and self.model is not model:
            self.model.release()
        self.model, self._model_key = model, self._run_key

    def on_result(self, result: np.ndarray) -> None:
        if self._pending is not None:  # not cancelled
            self._show_result(result)

    def on_finished(self, aborted: bool) -> None:
        if aborted:
            self.status.setText("Cancelled: no layers were added.")
        self._pending = None

    def on_error(self, exc: Exception) -> None:
        self._pending = None
        super().on_error(exc)

    def run_buttons(self) -> list:
        return [self.translate_button, self.release_button]

    def stop_buttons(self) -> list:
        return [self.cancel_button]

    def _show_result(self, result: np.ndarray) -> None:
        """Add `<name> → <target>` and `<name> Δ <target>` per input layer, then show them side by side."""
        inputs, request = self._pending
        self._pending = None
        meta = provenance(self.model, request.source, request.target, request.options,
                          input_path=", ".join(layer.name for layer in inputs.layers))
        meta["plane"] = inputs.plane
        triples = []
        for layer, translated, original in zip(inputs.layers, inputs.split(result), inputs.split(request.images)):
            difference = translated.astype(np.float32) - original.astype(np.float32)
            new = self.viewer.add_image(**translated_layer(layer, translated, inputs.kept_axes,
                                                           f"{layer.name} → {request.target}", meta))
            diff = self.viewer.add_image(**difference_layer(layer, difference, inputs.kept_axes,
                                                            f"{layer.name} Δ {request.target}", meta))
            triples.append((layer, new, diff))
        self.show_side_by_side(triples)
        settings = describe(request.options, request.sources, direct=is_direct(self.model))
        self.status.setText(f"Done: {request.source} → {request.target} ({settings}). Grid view: original "
                            "| translated | difference (other layers hidden).")

    def show_side_by_side(self, triples: list[tuple[Image, Image, Image]]) -> None:
        """Grid mode with one row per input layer: original | translated | difference; other layers hidden."""
        shown = [layer.name for triple in triples for layer in triple]  # napari hands plugins proxies: use names
        names = [layer.name for layer in self.viewer.layers]
        for layer in self.viewer.layers:
            layer.visible = layer.name in shown
        self.viewer.layers.move_multiple([names.index(name) for name in shown], 0)
        grid = self.viewer.canvas.grid
        grid.stride, grid.shape, grid.enabled = 1, (len(triples), 3), True
        self.viewer.reset_view()

    def release_model(self) -> None:
        """Free the cached model (GPU memory goes back to the driver)."""
        if self.model is not None:
            self.model.release()
        self.model, self._model_key = None, None
        gc.collect()
        self.status.setText("Model released.")

    def _report(self, message: str) -> None:
        self.status.setText(ERROR_STYLE.format(message))
        show_error(message)

