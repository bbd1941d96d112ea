"""The Train dock: a labelled folder and a few options in, core.training.run.iter_train run in napari's thread_worker.

The same training loop and choices as `phendiff train`: the pixel model (preset), the latent model (Stable Diffusion
base folder, adapter, LoRA rank) or the CycleGAN baseline. The dock adds a loss curve, an ETA, and sample images
generated from each checkpoint of a diffusion model (core.translate.sample) shown as layers. Stop closes the loop,
which saves a resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QLabel, QLineEdit,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..core.models import load_checkpoint, read_manifest
from ..core.dataset import scan_folder
from ..core.errors import PhenDiffError
from ..core.models import KINDS
from ..core.options import ADAPTERS, DEFAULT_LR, PRESET_SIZES, TRAIN_DEFAULTS, TrainConfig
from ..core.training.run import TrainEvent, iter_train
from ..core.translate import sample
from ._loss_plot import LossPlot
from ._shared import (CHECKPOINTS, ERROR_STYLE, Progress, Result, StoppableWorker, WorkerDock,
                      button, default_checkpoint_folder, device_combo, explain_memory_errors, in_dock_words, row,
                      spin)

PREVIEW_STEPS = 20
DEFAULTS = TRAIN_DEFAULTS  # the same defaults as `phendiff train`
MEMORY_ADVICE = ("Lower the batch size or the image size, or choose device cpu; for the latent model, tick "
                 "gradient checkpointing or choose the lora adapter.")
ADAPTER_TIPS = {
    "lora": "low-rank updates of the attention layers: few weights, little memory (tens to hundreds of images)",
    "svdiff": "shifts of the singular values of every weight: fewest weights (tens of images)",
    "attention": "the attention layers themselves (hundreds of images)",
    "full": "every UNet weight: most memory (thousands of images)",
}


@dataclass(frozen=True)
class Previews:
    """Images generated from the checkpoint saved at `step`: {condition: (n, C, S, S)}."""

    step: int
    images: dict[str, np.ndarray]


@thread_worker(progress={"desc": "PhenDiff: training"}, worker_class=StoppableWorker)
def run_training(config: TrainConfig, previews: int):
    """core.training.run.iter_train as Progress messages (counted from the step this run starts at), plus `previews`
    generated images per condition after every checkpoint (Result messages)."""
    with contextlib.closing(iter_train(config)) as events, explain_memory_errors(config.device, MEMORY_ADVICE):
        first = 0
        for event in events:
            first = event.step if event.kind == "start" else first
            yield Progress(event.step - first, event.total - first, event)
            if previews and event.kind in ("checkpoint", "done"):
                model = load_checkpoint(event.path, device=config.device)
                images = {}
                for i, condition in enumerate(model.conditions):  # say what is happening: this takes a while
                    yield Progress(event.step - first, event.total - first, TrainEvent(
                        "preview", event.step, event.total,
                        message=f"Making previews of step {event.step}: {condition} ({i + 1} of "
                                f"{len(model.conditions)})…"))
                    images[condition] = sample(model, condition, previews, steps=PREVIEW_STEPS, seed=0)
                model.release()
                yield Result(Previews(event.step, images))


class TrainDock(WorkerDock):
    """Train a PhenDiff model on a labelled folder (one subfolder of images per condition), or continue one."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._config: TrainConfig | None = None
        self._first_step = self._last_step = 0
        self._done_text = ""
        self._timing: tuple[float, int] | None = None  # (time, step) of the first step of this run
        self._build()

    def _build(self) -> None:
        self.data = QLineEdit(placeholderText="folder with one subfolder of images per condition")
        self.data.editingFinished.connect(self.check_folder)
        self.folder_info = QLabel(wordWrap=True)
        self.channel_names = QLineEdit(placeholderText="e.g. DNA, reporter (optional)")
        self.model = QComboBox()
        for name, kind in KINDS.items():
            self.model.addItem(f"{name}: {kind.help}", name)
        self.model.setCurrentIndex(self.model.findData(DEFAULTS["model"]))
        self.model.currentIndexChanged.connect(self._model_changed)
        self.preset = QComboBox()
        for name in PRESET_SIZES:
            self.preset.addItem(name, name)
        self.preset.setCurrentIndex(self.preset.findData(DEFAULTS["preset"]))
        self.preset.setToolTip("Model size: tiny runs on a CPU, paper needs a GPU.")
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.preset_label = QLabel("Preset")
        self.latent_options = self._build_latent_options()
        self.image_size = spin(QSpinBox(), 8, 1024, PRESET_SIZES[DEFAULTS["preset"]],
                               "Side of the square crops the model learns from (px).")
        self.image_size.setSingleStep(8)
        self.steps = spin(QSpinBox(), 1, 10_000_000, DEFAULTS["steps"], "Optimisation steps in total (a resumed "
                          "run continues up to this number).")
        self.batch_size = spin(QSpinBox(), 1, 1024, DEFAULTS["batch_size"], "Images per step.")
        self.lr = spin(QDoubleSpinBox(decimals=6, singleStep=1e-5), 1e-6, 1e-2, DEFAULT_LR[DEFAULTS["model"]],
                       "Peak learning rate (set to the usual one for the model and adapter when they change).")
        self.checkpoint_every = spin(QSpinBox(), 1, 1_000_000, DEFAULTS["checkpoint_every"],
                                     "Save a checkpoint (and previews) this often.")
        self.previews = spin(QSpinBox(), 0, 16, 4, "Images generated per condition at each checkpoint; 0: none.")
        self.device = device_combo()
        self.out = QLineEdit(str(default_checkpoint_folder() / "new-model"))
        self.out.setToolTip("The checkpoint folder training writes (a per-user folder unless you choose one).")
        self.resume = QCheckBox("continue the checkpoint in the output folder")
        self.resume.toggled.connect(self._resume_toggled)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.status = QLabel(wordWrap=True)
        self.loss_plot = LossPlot()

        form = QFormLayout()
        form.addRow("Data folder", row(self.data, button("Browse…", self.browse_data)))
        form.addRow("", self.folder_info)
        form.addRow("Channel names", self.channel_names)
        form.addRow("Model", self.model)
        form.addRow(self.preset_label, self.preset)
        form.addRow(self.latent_options)
        form.addRow("Image size", self.image_size)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.lr)
        form.addRow("Checkpoint every", self.checkpoint_every)
        form.addRow("Previews", self.previews)
        form.addRow("Device", self.device)
        form.addRow("Output folder", row(self.out, button("Browse…", self.browse_out)))
        form.addRow("Resume", self.resume)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(row(self.train_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addStretch()
        self.set_running(False)
        self._model_changed()

    def _build_latent_options(self) -> QWidget:
        """Base model, adapter, rank and gradient checkpointing: shown only for the latent model."""
        self.base = QLineEdit(placeholderText="Stable Diffusion 1.x/2.x folder (diffusers layout) or hub id")
        self.base.setToolTip("The pre-trained model to fine-tune; docs/latent.md says how to download one.")
        self.base.editingFinished.connect(self.check_base)
        self.adapter = QComboBox()
        for name in ADAPTERS:
            self.adapter.addItem(name, name)
            self.adapter.setItemData(self.adapter.count() - 1, ADAPTER_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.adapter.setCurrentIndex(self.adapter.findData(DEFAULTS["adapter"]))
        self.adapter.currentIndexChanged.connect(self._adapter_changed)
        self.rank = spin(QSpinBox(), 1, 256, DEFAULTS["rank"], "LoRA rank: more is more capacity and memory.")
        self.gradient_checkpointing = QCheckBox("less memory, slower steps")
        self.gradient_checkpointing.setChecked(DEFAULTS["gradient_checkpointing"])
        options = QWidget()
        form = QFormLayout(options)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Base model", row(self.base, button("Browse…", self.browse_base)))
        form.addRow("Adapter", self.adapter)
        form.addRow("LoRA rank", self.rank)
        form.addRow("Gradient checkpointing", self.gradient_checkpointing)
        return options

    # --- inputs --------------------------------------------------------------------------------------------------
    def browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with one subfolder per condition")
        if folder:
            self.set_data_folder(folder)

    def browse_base(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Stable Diffusion folder (with unet/, vae/, scheduler/)")
        if folder:
            self.set_base(folder)

    def set_base(self, base: str | Path) -> None:
        self.base.setText(str(base))
        self.check_base()

    def check_base(self) -> None:
        """Read the base model's configs (fast): take its own image size, or show what is wrong."""
        if not self.base.text().strip():
            return
        from ..core.models.latent import native_image_size

        try:
            self.image_size.setValue(native_image_size(self.base.text()))
            self.status.setText(f"Base model: {self.base.text()} ({self.image_size.value()} px images).")
        except PhenDiffError as exc:
            self.status.setText(ERROR_STYLE.format(in_dock_words(str(exc))))

    def browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the output folder (new, or a checkpoint to resume)")
        if folder:
            self.out.setText(folder)

    def set_data_folder(self, folder: str | Path) -> None:
        self.data.setText(str(folder))
        self.check_folder()

    def check_folder(self) -> None:
        """Show the conditions and image counts found, or what is wrong with the folder."""
        try:
            self._scan()
        except PhenDiffError as exc:
            self.folder_info.setText(ERROR_STYLE.format(in_dock_words(str(exc))))

    def _scan(self):
        """scan_folder (fast: no pixels read), shown in the dock; propose an output folder named after the data."""
        found = scan_folder(self.data.text())
        self.folder_info.setText(" · ".join(f"{c}: {n} images" for c, n in found.counts.items()))
        if not self.resume.isChecked() and Path(self.out.text()).parent == default_checkpoint_folder():
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
            self.out.setText(str(default_checkpoint_folder() / f"{found.root.name}-{stamp}"))
        return found

    def _preset_changed(self, index=None) -> None:
        self.image_size.setValue(PRESET_SIZES[self.preset.currentData()])

    def _model_changed(self, index=None) -> None:
        """Show the options of the chosen kind: a preset for one trained from scratch, the base model and adapter
        for one fine-tuned; previews only for one that generates (a CycleGAN maps images)."""
        kind = KINDS[self.model.currentData()]
        self.preset.setVisible(not kind.fine_tunes)
        self.preset_label.setVisible(not kind.fine_tunes)
        self.latent_options.setVisible(kind.fine_tunes)
        self.previews.setEnabled(kind.generates)
        if kind.fine_tunes:
            self.check_base()
        else:
            self._preset_changed()
        self._adapter_changed()

    def _adapter_changed(self, index=None) -> None:
        model = self.model.currentData()
        self.lr.setValue(DEFAULT_LR[self.adapter.currentData() if KINDS[model].fine_tunes else model])
        self.rank.setEnabled(self.adapter.currentData() == "lora")
        self.adapter.setToolTip(ADAPTER_TIPS[self.adapter.currentData()])

    def _resume_toggled(self, on: bool) -> None:
        """Resuming must keep the model: take preset, size and channels from the checkpoint being continued."""
        if not on:
            return
        try:
            manifest = read_manifest(self.out.text())
        except PhenDiffError as exc:
            self.status.setText(ERROR_STYLE.format(in_dock_words(str(exc))))
            return
        training = manifest["training"]
        self.model.setCurrentIndex(self.model.findData(manifest.get("kind", "pixel")))
        self.preset.setCurrentIndex(self.preset.findData(training["preset"]))
        if KINDS[manifest.get("kind", "pixel")].fine_tunes:
            self.base.setText(manifest["base"]["source"])
            self.adapter.setCurrentIndex(self.adapter.findData(training["adapter"]))
            self.rank.setValue(int(training["rank"]))
            self.gradient_checkpointing.setChecked(bool(training["gradient_checkpointing"]))
        self.image_size.setValue(int(training["image_size"]))
        self.channel_names.setText(", ".join(manifest["channel_names"]))
        self.steps.setValue(max(self.steps.value(), int(manifest["trained_steps"]) + 1))
        if not self.data.text():
            self.set_data_folder(training["data"])
        self.status.setText(f"Continues {manifest['trained_steps']} trained steps up to {self.steps.value()}.")

    def config(self) -> TrainConfig:
        """The TrainConfig the current settings describe (checked by TrainConfig itself: ConfigError)."""
        names = [n.strip() for n in self.channel_names.text().split(",") if n.strip()]
        widgets = {"model": self.model, "preset": self.preset, "base": self.base, "adapter": self.adapter,
                   "rank": self.rank, "gradient_checkpointing": self.gradient_checkpointing,
                   "image_size": self.image_size, "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                   "checkpoint_every": self.checkpoint_every, "device": self.device, "resume": self.resume}
        return TrainConfig(data=Path(self.data.text()), out=Path(self.out.text()).expanduser(),
                           channel_names=names or None, **{name: _value(w) for name, w in widgets.items()})

    # --- running -------------------------------------------------------------------------------------------------
    def train(self):
        """The Train button: validate, then start the worker and return it (None if something must be fixed)."""
        if self.running:
            show_error("Training is already running in this dock: press Stop first.")
            return None
        try:
            self._scan()
            config = self.config()
        except PhenDiffError as exc:
            self.folder_info.setText(ERROR_STYLE.format(in_dock_words(str(exc))))
            show_error(in_dock_words(str(exc)))
            return None
        self._config, self._timing, self._done_text = config, None, ""
        self.loss_plot.clear()
        worker = run_training(config, self.previews.value() if self.previews.isEnabled() else 0)
        return self.start_worker(worker, "Reading the images…")

    def stop(self) -> None:
        """Stop after the current step; the training loop saves a resumable checkpoint."""
        if self.stop_worker():
            self.status.setText("Stopping: saving a resumable checkpoint…")

    def on_result(self, previews: Previews) -> None:
        self._show_previews(previews)
        self.status.setText(self._done_text or f"Previews of step {previews.step} shown; training goes on…")

    def on_progress(self, event: TrainEvent) -> None:
        if event.kind == "start":
            self._first_step = self._last_step = event.step
            self.progress.setRange(event.step, event.total)
            self._show_step(event.step, event.total)
            self.status.setText(event.message)
            for step, loss in event.history:  # a resumed run: the curve goes on from where it stopped
                self.loss_plot.add(step, loss)
            self.loss_plot.redraw()
        elif event.kind == "preview":
            self.status.setText(event.message)
        elif event.kind == "step":
            self._on_step(event)
        else:  # a checkpoint was written; "done" is the last one
            CHECKPOINTS.add(event.path)
            if event.kind == "done":
                self._done_text = (f"Finished {event.step} steps. Checkpoint: {event.path} (listed in the "
                                   "Translate dock).")
                self.status.setText(self._done_text)

    def _on_step(self, event: TrainEvent) -> None:
        if self._timing is None:
            self._timing = (time.monotonic(), event.step)
        self._last_step = max(self._last_step, event.step)
        self._show_step(self._last_step, event.total)
        self.loss_plot.add(event.step, event.loss)
        started, first = self._timing
        seconds = (time.monotonic() - started) / max(1, event.step - first) * (event.total - event.step)
        eta = datetime.timedelta(seconds=round(seconds)) if event.step > first else "…"
        self.status.setText(f"step {event.step} / {event.total} · loss {event.loss:.4f} · lr {event.lr:.2e} · "
                            f"ETA {eta}")

    def _show_step(self, step: int, total: int) -> None:
        self.progress.setValue(step)
        self.progress.setFormat(f"{step} / {total} steps")

    def _show_previews(self, previews: Previews) -> None:
        """One layer per condition, `preview: <condition>`, updated in place at every checkpoint; the view is reset
        when they are first added, so all of them are on screen."""
        added = False
        for position, (condition, images) in enumerate(previews.images.items()):
            name = f"preview: {condition}"
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = images
                layer.reset_contrast_limits()
                layer.metadata["phendiff"]["step"] = previews.step
            else:
                offset = position * images.shape[-1] * 1.1  # conditions side by side
                self.viewer.add_image(images, name=name, axis_labels=("sample", "channel", "y", "x"),
                                      translate=(0, 0, 0, offset), colormap="gray",
                                      metadata={"phendiff": {"preview_of": condition, "step": previews.step}})
                added = True
        if added:
            self.viewer.reset_view()

    def on_finished(self, aborted: bool) -> None:
        self.loss_plot.redraw()
        if aborted:
            saved = self._last_step > self._first_step
            if saved:
                CHECKPOINTS.add(self._config.out)
            self.status.setText(f"Stopped at step {self._last_step}: resumable checkpoint in {self._config.out}; "
                                "tick Resume and press Train to continue." if saved else "Stopped before training.")

    def run_buttons(self) -> list:
        return [self.train_button]

    def stop_buttons(self) -> list:
        return [self.stop_button]


def _value(widget):
    """What a control holds, as TrainConfig takes it (an empty text box: not set)."""
    if isinstance(widget, QComboBox):
        return widget.currentData()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QLineEdit):
        return widget.text().strip() or None
    return widget.value()

