"""The Train dock: a labelled folder and a few options in, core.training.run.iter_train run in napari's thread_worker.

The same training loop and choices as `phendiff train`, asked in the order they are decided: fine-tune a pre-trained
model (the shipped microscopy base, a PhenDiff checkpoint, or a Stable Diffusion folder or hub id) or train one from
scratch (the pixel model at a preset, or the CycleGAN baseline). Before the click it shows what each adapter was
measured to cost and an estimate of the run's time. While training it shows a loss curve, an ETA, and sample images
generated from each checkpoint of a diffusion model (core.walk.sample) as layers. Stop closes the loop, which
saves a resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import napari
import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QLabel, QLineEdit,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..core.checkpoint import manifest_kind, resolve_checkpoint
from ..core.dataset import scan_folder
from ..core.images import read_channel_names
from ..core.errors import ConfigError, PhenDiffError
from ..core.models import KINDS, load_checkpoint, read_manifest
from ..core.models.bases import DEFAULT_BASE, adapter_costs, is_hub_id, is_shipped, iter_fetch
from ..core.options import (ADAPTERS, DEFAULT_LR, PRESET_SIZES, TRAIN_DEFAULTS, TRAIN_HELP, TrainConfig,
                            default_lr, default_steps)
from ..core.training.run import TrainEvent, iter_train
from ..core.device import explain_memory_errors
from ..core.pace import duration
from ..core.walk import sample
from ._loss_plot import LossPlot
from ._shared import (CHECKPOINTS, ERROR_STYLE, Progress, Result, StoppableWorker, WorkerDock,
                      button, default_checkpoint_folder, device_combo, in_dock_words, row,
                      scrolled, spin)

PREVIEW_STEPS = 20
DEFAULTS = TRAIN_DEFAULTS  # the same defaults as `phendiff train`
MEMORY_ADVICE = ("Lower the batch size or the image size, or choose device cpu; for a fine-tuned model, tick "
                 "gradient checkpointing or choose the lora adapter.")
ADAPTER_TIPS = {
    "lora": "low-rank updates of the attention layers: few weights, little memory (tens to hundreds of images)",
    "svdiff": "shifts of the singular values of every weight: fewest weights (tens of images)",
    "attention": "the attention layers themselves (hundreds of images)",
    "full": "every UNet weight: most memory (thousands of images)",
}
# The first choice, and what fine-tuning starts from.
WHAT = {"fine-tune": "Fine-tune a pre-trained model", "scratch": "Train from scratch"}
SOURCES = {"shipped": f"the shipped {DEFAULT_BASE} base (offline)", "checkpoint": "a PhenDiff checkpoint",
           "stable-diffusion": "a Stable Diffusion folder or hub id"}
FINE_TUNING = next(name for name, kind in KINDS.items() if kind.fine_tunes)  # the kind a base model becomes
STARTING = next(name for name, kind in KINDS.items() if kind.starts_from)   # the kind a checkpoint can start
TRAINING_STATE = "training"  # a checkpoint's folder of what resuming needs (core.training.run writes it)


@dataclass(frozen=True)
class Previews:
    """Images generated from the checkpoint saved at `step`: {condition: (n, C, S, S)}."""

    step: int
    images: dict[str, np.ndarray]


@dataclass(frozen=True)
class BaseRead:
    """What reading a base model found: its own image size, or the problem in one line."""

    base: str
    image_size: int | None = None
    problem: str | None = None


@thread_worker(progress={"desc": "PhenDiff: training"},
               worker_class=StoppableWorker, ignore_errors=True)
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


@thread_worker
def read_base_model(base: str):
    """A base model's own image size, read off the UI thread: a hub id missing from the local hub cache is downloaded
    first (a Progress message per file; offline, the problem at once). Returns a BaseRead."""
    from ..core.models.latent import native_image_size

    try:
        if is_hub_id(base):
            for event in iter_fetch(base):
                if isinstance(event, tuple):
                    done, total, name = event
                    yield Progress(done, total, f"downloading {done} / {total} files: {name}")
        return BaseRead(base, image_size=native_image_size(base))
    except PhenDiffError as exc:
        return BaseRead(base, problem=str(exc))


class TrainDock(WorkerDock):
    """Train a PhenDiff model on a labelled folder (one subfolder of images per condition), or continue one."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._config: TrainConfig | None = None
        self._first_step = self._last_step = 0
        self._done_text = ""
        self._timing: tuple[float, int] | None = None  # (time, step) of the first step of this run
        self._base_check = None       # the worker reading a Stable Diffusion base, while it runs
        self._restoring = False       # a resumed checkpoint's settings are being set: the choices change nothing else
        self._labels: dict[QWidget, QLabel] = {}
        self._build()

    def _build(self) -> None:
        self.what = _combo(WHAT, "fine-tune", "Fine-tune: start from a model that has already learnt images (fewer "
                           "images and steps). From scratch: random weights, many images and steps.")
        self.source = _combo(SOURCES, "shipped", "The pre-trained model to start from.")
        self.start_from = QLineEdit(placeholderText="checkpoint folder, or demo (the shipped example)")
        self.start_from.setToolTip("A PhenDiff checkpoint: its weights start the run, and the folder's conditions "
                                   "take its condition rows (same names keep theirs). It fixes the preset.")
        self.start_from.editingFinished.connect(self.check_start_from)
        self.start_from_row = row(self.start_from, button("Browse…", self.browse_start_from))
        self.base = QLineEdit(placeholderText="Stable Diffusion 1.x/2.x folder (diffusers layout) or hub id")
        self.base.setToolTip("The pre-trained model to fine-tune; docs/latent.md says how to download one.")
        self.base.editingFinished.connect(self._base_edited)
        self.base_row = row(self.base, button("Browse…", self.browse_base))
        self.source_info = QLabel(wordWrap=True)
        self.model = _combo({name: f"{name}: {_without_flags(kind.help)}" for name, kind in KINDS.items()
                             if not kind.fine_tunes}, DEFAULTS["model"], "What to train from random weights.")
        self.preset = _combo({name: name for name in PRESET_SIZES}, DEFAULTS["preset"],
                             "Model size: tiny runs on a CPU, paper needs a GPU.")
        self.adapter = _combo({name: name for name in ADAPTERS}, DEFAULTS["adapter"], "")
        for i, name in enumerate(ADAPTERS):
            self.adapter.setItemData(i, ADAPTER_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.rank = spin(QSpinBox(), 1, 256, DEFAULTS["rank"], "LoRA rank: more is more capacity and memory.")
        self.gradient_checkpointing = QCheckBox("less memory, slower steps")
        self.gradient_checkpointing.setChecked(DEFAULTS["gradient_checkpointing"])
        self.costs = QLabel(wordWrap=True)
        self.data = QLineEdit(placeholderText="folder with one subfolder of images per condition")
        self.data.editingFinished.connect(self.check_folder)
        self.folder_info = QLabel(wordWrap=True)
        self.channel_names = QLineEdit(placeholderText="e.g. DNA, reporter (optional)")
        self.image_size = spin(QSpinBox(), 8, 1024, PRESET_SIZES[DEFAULTS["preset"]],
                               "Side of the square crops the model learns from (px).")
        self.image_size.setSingleStep(8)
        self.steps = spin(QSpinBox(), 1, 10_000_000, default_steps(DEFAULTS["model"]), "Optimisation steps in total "
                          "(a resumed run continues up to this number; set to the usual one when the choice changes).")
        self.minutes = spin(QDoubleSpinBox(decimals=1), 0.0, 100_000.0, 0.0, TRAIN_HELP["minutes"].capitalize()
                            + "; by steps when off.")
        self.minutes.setSpecialValueText("off (by steps)")
        self.minutes.setSuffix(" min")
        self.minutes.valueChanged.connect(self._minutes_changed)
        self.batch_size = spin(QSpinBox(), 1, 1024, DEFAULTS["batch_size"], "Images per step.")
        self.lr = spin(QDoubleSpinBox(decimals=6, singleStep=1e-5), 1e-6, 1e-2, DEFAULT_LR[DEFAULTS["model"]],
                       "Peak learning rate (set to the usual one for the model and adapter when they change).")
        self.checkpoint_every = spin(QSpinBox(), 1, 1_000_000, DEFAULTS["checkpoint_every"],
                                     "Save a checkpoint (and previews) this often.")
        self.previews = spin(QSpinBox(), 0, 16, 4, "Images generated per condition at each checkpoint; 0: none.")
        self.device = device_combo()
        self.out = QLineEdit(str(default_checkpoint_folder() / "new-model"))
        self.out.setToolTip("The checkpoint folder training writes (a per-user folder unless you choose one).")
        self.resume = QCheckBox("continue the training saved in the output folder")
        self.resume.toggled.connect(self._resume_toggled)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.status = QLabel(wordWrap=True)
        self.loss_plot = LossPlot()

        form = QFormLayout()
        for label, widget in (("What to train", self.what), ("Start from", self.source),
                              ("Checkpoint", self.start_from_row), ("Base model", self.base_row),
                              ("", self.source_info), ("Model", self.model), ("Preset", self.preset),
                              ("Adapter", self.adapter), ("LoRA rank", self.rank),
                              ("Gradient checkpointing", self.gradient_checkpointing), ("", self.costs),
                              ("Data folder", row(self.data, button("Browse…", self.browse_data))),
                              ("", self.folder_info), ("Channel names", self.channel_names),
                              ("Image size", self.image_size), ("Steps", self.steps), ("Train for", self.minutes),
                              ("Batch size", self.batch_size),
                              ("Learning rate", self.lr), ("Checkpoint every", self.checkpoint_every),
                              ("Previews", self.previews), ("Device", self.device),
                              ("Output folder", row(self.out, button("Browse…", self.browse_out))),
                              ("Resume", self.resume)):
            self._labels[widget] = QLabel(label)
            form.addRow(self._labels[widget], widget)
        layout = QVBoxLayout(scrolled(self))
        layout.addLayout(form)
        layout.addWidget(row(self.train_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addStretch()
        for combo in (self.what, self.source, self.model):
            combo.currentIndexChanged.connect(self._choice_changed)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.adapter.currentIndexChanged.connect(self._adapter_changed)
        for box in (self.steps, self.batch_size, self.image_size, self.minutes):
            box.valueChanged.connect(self._show_costs)
        self.set_running(False)
        self._choice_changed()

    # --- what to train -------------------------------------------------------------------------------------------
    def kind(self) -> str:
        """The model kind the first choices describe."""
        if self.what.currentData() == "scratch":
            return self.model.currentData()
        return STARTING if self.source.currentData() == "checkpoint" else FINE_TUNING

    def _choice_changed(self, index=None) -> None:
        """Show the controls of the choice; take its image size and usual learning rate."""
        self._show_choice()
        if self._restoring:
            return
        self.steps.setValue(default_steps(self.kind(), self._base_source() or None))
        self._adapter_changed()
        if self.what.currentData() == "scratch":
            self._preset_changed()
        elif self.source.currentData() == "shipped":
            self._read_shipped_base()
        elif self.source.currentData() == "checkpoint":
            self.check_start_from()
        else:
            self.check_base()

    def _show_choice(self) -> None:
        fine_tune, source = self.what.currentData() == "fine-tune", self.source.currentData()
        kind = KINDS[self.kind()]
        self._show(self.source, fine_tune)
        self._show(self.start_from_row, fine_tune and source == "checkpoint")
        self._show(self.base_row, fine_tune and source == "stable-diffusion")
        self._show(self.source_info, fine_tune)
        self._show(self.model, not fine_tune)
        self._show(self.preset, not kind.fine_tunes)
        self.preset.setEnabled(not fine_tune)  # a checkpoint to start from fixes it
        for widget in (self.adapter, self.rank, self.gradient_checkpointing, self.costs):
            self._show(widget, kind.fine_tunes)
        self.previews.setEnabled(kind.generates)

    def _show(self, widget: QWidget, visible: bool) -> None:
        """Show or hide a form row: the control and its label."""
        widget.setVisible(visible)
        self._labels[widget].setVisible(visible)

    def _preset_changed(self, index=None) -> None:
        if self.what.currentData() == "scratch" and not self._restoring:
            self.image_size.setValue(PRESET_SIZES[self.preset.currentData()])

    def _adapter_changed(self, index=None) -> None:
        kind = self.kind()
        if not self._restoring:
            self.lr.setValue(default_lr(kind, self.adapter.currentData(), self._base_source() or None))
        self.rank.setEnabled(self.adapter.currentData() == "lora")
        self.adapter.setToolTip(ADAPTER_TIPS[self.adapter.currentData()])
        self._show_costs()

    def _show_costs(self, *_) -> None:
        if KINDS[self.kind()].fine_tunes:
            base = self._base_source()
            self.costs.setText(cost_text(adapter_costs(base) if base else None, self.adapter.currentData(),
                                         self.steps.value(), self.batch_size.value(), self.image_size.value(),
                                         self.minutes.value()))

    def _minutes_changed(self, minutes: float) -> None:
        """A time budget replaces the steps: the run times its own steps first and takes the ones that fit."""
        self.steps.setEnabled(minutes == 0)
        self.resume.setEnabled(minutes == 0)
        if minutes:
            self.resume.setChecked(False)

    def _base_source(self) -> str:
        """The base a fine-tuned run starts from ('' when the folder or hub id is still to be given)."""
        return DEFAULT_BASE if self.source.currentData() == "shipped" else self.base.text().strip()

    def _read_shipped_base(self) -> None:
        """The shipped base's image size (its configs are local and small: read at once)."""
        from ..core.models.latent import native_image_size

        try:
            self.image_size.setValue(native_image_size(DEFAULT_BASE))
        except PhenDiffError as exc:
            self._say_source_problem(str(exc))
            return
        self.source_info.setText(f"The shipped {DEFAULT_BASE} base: {self.image_size.value()} px images, "
                                 "no download needed.")

    def _say_source_problem(self, message: str) -> None:
        self.source_info.setText(ERROR_STYLE.format(in_dock_words(message)))

    # --- inputs --------------------------------------------------------------------------------------------------
    def browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with one subfolder per condition")
        if folder:
            self.set_data_folder(folder)

    def browse_start_from(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a PhenDiff checkpoint folder (with phendiff.json)")
        if folder:
            self.set_start_from(folder)

    def set_start_from(self, checkpoint: str | Path) -> None:
        """Fine-tune the PhenDiff checkpoint `checkpoint` (a folder, or demo)."""
        self.start_from.setText(str(checkpoint))
        if self._chosen() == ("fine-tune", "checkpoint"):
            self.check_start_from()
        else:
            self._choose("fine-tune", "checkpoint")  # which reads it

    def check_start_from(self) -> None:
        """Read the checkpoint to start from (its manifest: no weights): take its preset and image size, and say what
        it is, or what is wrong with it."""
        text = self.start_from.text().strip()
        if not text:
            self.source_info.setText("Give a PhenDiff checkpoint folder, or demo (the shipped example).")
            return
        try:
            manifest = read_manifest(text)
        except PhenDiffError as exc:
            self._say_source_problem(str(exc))
            return
        kind = manifest_kind(manifest)
        if not KINDS[kind].starts_from:
            self._say_source_problem(f"{text}: is a {kind!r} checkpoint ({_without_flags(KINDS[kind].help)}); a run "
                                     f"starts only from a {STARTING!r} checkpoint (PhenDiff). Choose one, or "
                                     "fine-tune its base model instead.")
            return
        self.preset.setCurrentIndex(self.preset.findData(manifest["preset"]))
        self.image_size.setValue(int(manifest["image_size"]))
        self.source_info.setText(
            f"PhenDiff {manifest['preset']} model, {manifest['image_size']} px · conditions "
            f"{', '.join(manifest['conditions'])} · channels {', '.join(manifest['channel_names'])} · "
            f"{manifest.get('trained_steps', '?')} trained steps. The folder's conditions take its condition rows "
            "(same names keep theirs).")

    def browse_base(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Stable Diffusion folder (unet/, vae/, scheduler/)")
        if folder:
            self.set_base(folder)

    def set_base(self, base: str | Path):
        """Fine-tune the Stable Diffusion folder or hub id `base`; returns the worker reading it."""
        self.base.setText(str(base))
        if self._chosen() == ("fine-tune", "stable-diffusion"):
            return self.check_base()
        self._choose("fine-tune", "stable-diffusion")  # which reads it
        return self._base_check

    def _base_edited(self) -> None:
        """editingFinished comes on Enter and again on leaving the box: read a base once."""
        if self._base_check is None or self._base_check.base != self.base.text().strip():
            self.check_base()

    def check_base(self):
        """Read the base model's configs in a worker (a hub id is downloaded first, with progress in the dock's bar):
        take its own image size, or show what is wrong. Returns the worker (None: nothing to read)."""
        base = self.base.text().strip()
        self._show_costs()
        if not base:
            self.source_info.setText("Give a Stable Diffusion folder (diffusers layout) or a hub id.")
            return None
        if self._base_check is not None:
            self._base_check.quit()  # a newer base replaces it; what it finds is ignored
        worker = read_base_model(base)
        worker.base = base
        worker.yielded.connect(self._on_fetch)
        worker.returned.connect(self._on_base_read)
        worker.finished.connect(partial(self._base_check_finished, worker))
        self._base_check = worker
        self.set_running(self.running)
        self.source_info.setText(f"Reading {base}…" + (" (a hub id is downloaded once)" if is_hub_id(base) else ""))
        self.progress.setRange(0, 0)  # busy until the first file or the answer
        worker.start()
        return worker

    def _on_fetch(self, message: Progress) -> None:
        self.progress.setRange(0, message.total)
        self.progress.setValue(message.step)
        self.progress.setFormat(f"{message.step} / {message.total} files")
        self.status.setText(message.event)

    def _on_base_read(self, read: BaseRead) -> None:
        if read.base != self.base.text().strip() or self.source.currentData() != "stable-diffusion":
            return  # the base or the choice changed while it was read
        if read.problem:
            self._say_source_problem(read.problem)
            return
        self.image_size.setValue(read.image_size)
        self.source_info.setText(f"Base model: {read.base} ({read.image_size} px images).")
        self._show_costs()

    def _base_check_finished(self, worker) -> None:
        if self._base_check is worker:
            self._base_check = None
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
            self.set_running(self.running)

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
        first = next(iter(found.files.values()))[0]
        recorded = read_channel_names(first)  # training reads them from every file; the first is enough to show
        self.channel_names.setPlaceholderText(f"from the files: {', '.join(recorded)}" if recorded
                                              else "e.g. DNA, reporter (optional)")
        if not self.resume.isChecked() and Path(self.out.text()).parent == default_checkpoint_folder():
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
            self.out.setText(str(default_checkpoint_folder() / f"{found.root.name}-{stamp}"))
        return found

    # --- resuming ------------------------------------------------------------------------------------------------
    def _resume_toggled(self, on: bool) -> None:
        """Resuming must keep the model: take the checkpoint's choices and settings, and say which were taken."""
        if not on:
            return
        try:
            manifest = read_manifest(self.out.text())
        except PhenDiffError as exc:
            self.status.setText(ERROR_STYLE.format(in_dock_words(str(exc))))
            return
        out, kind = self.out.text().strip(), manifest_kind(manifest)
        if not (resolve_checkpoint(out) / TRAINING_STATE).is_dir():
            self.resume.setChecked(False)
            build_on = ("To build on it, choose Fine-tune > a PhenDiff checkpoint and give it there, with a new output "
                        "folder." if KINDS[kind].starts_from else "Train a new model into another output folder.")
            self.status.setText(ERROR_STYLE.format(f"{out}: holds no training state, so it cannot be resumed. "
                                                   f"{build_on}"))
            return
        training = manifest["training"]
        self._restoring = True
        try:
            took = self._take_choices(manifest)
            self.preset.setCurrentIndex(self.preset.findData(training["preset"]))
            self.image_size.setValue(int(training["image_size"]))
            self.channel_names.setText(", ".join(manifest["channel_names"]))
            self.batch_size.setValue(int(training["batch_size"]))
            self.lr.setValue(float(training["lr"]))
        finally:
            self._restoring = False
        self._show_choice()
        self._show_costs()
        self.source_info.setText("Continues the checkpoint in the output folder, with its own settings.")
        self.steps.setValue(max(self.steps.value(), int(manifest["trained_steps"]) + 1))
        if not self.data.text():
            self.set_data_folder(training["data"])
        took += [f"image size {training['image_size']} px", f"channels {', '.join(manifest['channel_names'])}",
                 f"batch size {training['batch_size']}", f"learning rate {float(training['lr']):.2e}"]
        self.status.setText(f"Continues {manifest['trained_steps']} trained steps up to {self.steps.value()}, with "
                            f"the checkpoint's settings: {'; '.join(took)}.")

    def _take_choices(self, manifest: dict) -> list[str]:
        """Set the first choices as the checkpoint was trained; the settings taken, in words."""
        training, kind = manifest["training"], manifest_kind(manifest)
        if KINDS[kind].fine_tunes:
            base = manifest["base"]["source"]
            self._choose("fine-tune", "shipped" if is_shipped(base) else "stable-diffusion")
            self.base.setText("" if is_shipped(base) else base)
            self.adapter.setCurrentIndex(self.adapter.findData(training["adapter"]))
            self.rank.setValue(int(training["rank"]))
            self.gradient_checkpointing.setChecked(bool(training["gradient_checkpointing"]))
            rank = f" (rank {training['rank']})" if training["adapter"] == "lora" else ""
            return [f"model {kind}", f"base {base}", f"adapter {training['adapter']}{rank}",
                    f"gradient checkpointing {'on' if training['gradient_checkpointing'] else 'off'}"]
        if training.get("start_from"):
            self._choose("fine-tune", "checkpoint")
            self.start_from.setText(str(training["start_from"]))
            return [f"model {kind}", f"preset {training['preset']}", f"started from {training['start_from']}"]
        self._choose("scratch")
        self.model.setCurrentIndex(self.model.findData(kind))
        return [f"model {kind}", f"preset {training['preset']}"]

    def _chosen(self) -> tuple[str, str]:
        return self.what.currentData(), self.source.currentData()

    def _choose(self, what: str, source: str | None = None) -> None:
        self.what.setCurrentIndex(self.what.findData(what))
        if source is not None:
            self.source.setCurrentIndex(self.source.findData(source))

    def config(self) -> TrainConfig:
        """The TrainConfig the current settings describe (checked by TrainConfig itself: ConfigError)."""
        kind = self.kind()
        names = [n.strip() for n in self.channel_names.text().split(",") if n.strip()]
        widgets = {"preset": self.preset, "image_size": self.image_size, "steps": self.steps,
                   "batch_size": self.batch_size, "lr": self.lr, "checkpoint_every": self.checkpoint_every,
                   "device": self.device, "resume": self.resume}
        if self.minutes.value() > 0:
            widgets["minutes"] = self.minutes
        if KINDS[kind].fine_tunes:
            widgets.update(adapter=self.adapter, rank=self.rank, gradient_checkpointing=self.gradient_checkpointing)
        values = {name: _value(w) for name, w in widgets.items()}
        missing = self.missing_start()
        if missing:
            raise ConfigError(missing)
        if KINDS[kind].fine_tunes:
            values["base"] = self._base_source()
        elif self.what.currentData() == "fine-tune":
            values["start_from"] = self.start_from.text().strip()
        return TrainConfig(data=Path(self.data.text()), out=Path(self.out.text()).expanduser(), model=kind,
                           channel_names=names or None, **values)

    def missing_start(self) -> str:
        """What a fine-tune still needs to know where it starts ('' when nothing is missing)."""
        if KINDS[self.kind()].fine_tunes and not self._base_source():
            return (f"Give the Stable Diffusion folder or hub id (Base model), or choose the shipped {DEFAULT_BASE} "
                    "base under Start from.")
        if (not KINDS[self.kind()].fine_tunes and self.what.currentData() == "fine-tune"
                and not self.start_from.text().strip()):
            return "Give the PhenDiff checkpoint to start from (a folder, or demo), or choose another Start from."
        return ""

    # --- running -------------------------------------------------------------------------------------------------
    def train(self):
        """The Train button: validate, then start the worker and return it (None if something must be fixed)."""
        # a refused start is said once, next to what to fix (a notification would stay on the canvas)
        if self.running:
            self.status.setText(ERROR_STYLE.format("Training is already running in this dock: press Stop first."))
            return None
        if self._base_check is not None:
            self.status.setText(ERROR_STYLE.format("The base model is still being read: wait until the dock says "
                                                   "what it is."))
            return None
        missing = self.missing_start()
        if missing:  # said under the base or checkpoint it concerns
            self.source_info.setText(ERROR_STYLE.format(missing))
            return None
        try:
            self._scan()
        except PhenDiffError as exc:
            self.folder_info.setText(ERROR_STYLE.format(in_dock_words(str(exc))))
            return None
        try:
            config = self.config()
        except PhenDiffError as exc:
            self.status.setText(ERROR_STYLE.format(in_dock_words(str(exc))))
            return None
        self._config, self._timing, self._done_text = config, None, ""
        self.loss_plot.clear()
        worker = run_training(config, self.previews.value() if self.previews.isEnabled() else 0)
        return self.start_worker(worker, "Reading the images…")

    def set_running(self, running: bool) -> None:
        """Train waits for the end of a run, and for a base model being read."""
        super().set_running(running)
        self.train_button.setEnabled(not running and self._base_check is None)

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
        elif event.kind in ("preview", "probe"):
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


def cost_text(costs: dict | None, adapter: str, steps: int, batch_size: int, image_size: int,
              minutes: float = 0.0) -> str:
    """What each adapter was measured to cost (models.bases.adapter_costs), and the time of this run with `adapter`:
    its seconds per step scaled by the batch size and the image area, an estimate (the computer, the data loading and
    the checkpoints differ)."""
    if not costs:
        return "What each adapter costs: not measured for this base (docs/benchmarks.md)."
    size, batch = costs["image_size"], costs["batch_size"]
    lines = [f"Measured on {costs['measured_on']}, at {size} px, batch {batch}:"]
    lines += [f"{name}: {_number(c['seconds_per_step'])} s/step, {_number(c['peak_memory_mb'])} MB peak memory, "
              f"checkpoint {_number(c['checkpoint_mb'])} MB" for name, c in costs["adapters"].items()]
    measured = costs["adapters"].get(adapter)
    if minutes:
        lines.append(f"This run: about {duration(minutes * 60)} of training (the time budget); its steps are "
                     "timed on this computer when it starts.")
    elif measured is None:
        lines.append(f"{adapter}: not measured, so no estimate of this run's time.")
    else:
        seconds = steps * measured["seconds_per_step"] * batch_size / batch * (image_size / size) ** 2
        lines.append(f"This run ({adapter}, {steps} steps, batch {batch_size}, {image_size} px): about "
                     f"{duration(seconds)}, an estimate from these measurements.")
    return "\n".join(lines)


def _number(x: float) -> str:
    return f"{x:.2g}" if abs(x) < 10 else f"{x:.0f}"


def _without_flags(text: str) -> str:
    """A kind's help without the command-line flags it names in brackets ("(--base)")."""
    return re.sub(r"\s*\([^)]*--[^)]*\)", "", text)


def _combo(choices: dict[str, str], default: str, tip: str) -> QComboBox:
    """A combo box of {data: text}, `default` chosen."""
    combo = QComboBox()
    for data, text in choices.items():
        combo.addItem(text, data)
    combo.setCurrentIndex(combo.findData(default))
    combo.setToolTip(tip)
    return combo


def _value(widget):
    """What a control holds, as TrainConfig takes it (an empty text box: not set)."""
    if isinstance(widget, QComboBox):
        return widget.currentData()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QLineEdit):
        return widget.text().strip() or None
    return widget.value()
