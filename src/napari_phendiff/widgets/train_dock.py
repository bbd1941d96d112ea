"""The Train dock: a labelled folder and a few options in, core.training.run.iter_train run in napari's thread_worker.

The same training loop and choices as `phendiff train`, asked in the order they are decided: fine-tune a pre-trained
model (the shipped microscopy base, a PhenDiff checkpoint, or a Stable Diffusion folder or hub id) or train one from
scratch (the pixel model at a preset, or the CycleGAN baseline). Before the click it shows what each adapter was
measured to cost and an estimate of the run's time. While training it shows a loss curve, an ETA, and sample images
generated from each checkpoint of a diffusion model (core.walk.sample) as layers. Stop closes the loop, which
saves a resumable checkpoint.

The dock's parts, each a mixin of TrainDock: the choices (_train_choice.py), reading what a run starts from
(_train_start.py), the data and output folders and resuming (_train_folders.py), the run as it goes
(_train_progress.py); what runs in the worker is _train_worker.py's.
"""

from __future__ import annotations

from pathlib import Path

import napari
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import ConfigError, PhenDiffError
from ..core.models import KINDS
from ..core.options import (
    MIXED_PRECISIONS,
    OPTIMIZERS,
    PRESET_SIZES,
    TRAIN_DEFAULTS,
    TRAIN_HELP,
    TrainConfig,
    default_lr,
    default_steps,
)
from ._loss_plot import LossPlot
from ._shared import ERROR_STYLE, WorkerDock, device_combo, in_dock_words, row, scrolled, spin, tooltip
from ._train_choice import ModelChoice
from ._train_folders import TrainFolders
from ._train_progress import TrainProgress
from ._train_start import StartReading
from ._train_worker import run_training

DEFAULTS = TRAIN_DEFAULTS  # the same defaults as `phendiff train`


class TrainDock(ModelChoice, StartReading, TrainFolders, TrainProgress, WorkerDock):
    """Train a PhenDiff model on a labelled folder (one subfolder of images per condition), or continue one."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._config: TrainConfig | None = None
        self._first_step = self._last_step = 0
        self._done_text = ""
        self._timing: tuple[float, int] | None = None  # (time, step) of the first step of this run
        self._base_check = None  # the worker reading a Stable Diffusion base, while it runs
        self._restoring = False  # a resumed checkpoint's settings are being set: the choices change nothing else
        self._labels: dict[QWidget, QLabel] = {}
        self._build()

    def _build(self) -> None:
        rows = self._make_choice_controls() + self._make_data_controls() + self._make_settings_controls()
        rows += self._make_output_controls()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.status = QLabel(wordWrap=True)
        self.loss_plot = LossPlot()

        form = QFormLayout()
        for label, widget in rows:
            self._labels[widget] = QLabel(label)
            form.addRow(self._labels[widget], widget)
        layout = QVBoxLayout(scrolled(self))
        layout.addLayout(form)
        layout.addWidget(row(self.train_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addStretch()
        self._connect_choices()
        for box in (self.steps, self.batch_size, self.image_size, self.minutes):
            box.valueChanged.connect(self._show_costs)
        self.set_running(False)
        self._choice_changed()

    def _make_settings_controls(self) -> list[tuple[str, QWidget]]:
        """The run's settings (size, steps or minutes, batch, learning rate, checkpoints, previews, device), as the
        form's (label, control) rows."""
        self.image_size = spin(QSpinBox(), 8, 1024, PRESET_SIZES[DEFAULTS["preset"]], tooltip(TRAIN_HELP["image_size"]))
        self.image_size.setSingleStep(8)
        self.steps = spin(
            QSpinBox(),
            1,
            10_000_000,
            default_steps(DEFAULTS["model"]),
            tooltip(TRAIN_HELP["steps"], "set to the usual one when the choice changes"),
        )
        self.minutes = spin(
            QDoubleSpinBox(decimals=1), 0.0, 100_000.0, 0.0, tooltip(TRAIN_HELP["minutes"], "by steps when off")
        )
        self.minutes.setSpecialValueText("off (by steps)")
        self.minutes.setSuffix(" min")
        self.minutes.valueChanged.connect(self._minutes_changed)
        self.batch_size = spin(QSpinBox(), 1, 1024, DEFAULTS["batch_size"], tooltip(TRAIN_HELP["batch_size"]))
        self.lr = spin(
            QDoubleSpinBox(decimals=6, singleStep=1e-5),
            1e-6,
            1e-2,
            default_lr(DEFAULTS["model"]),
            tooltip(TRAIN_HELP["lr"], "set to the usual one for the model and adapter when they change"),
        )
        self.checkpoint_every = spin(
            QSpinBox(),
            1,
            1_000_000,
            DEFAULTS["checkpoint_every"],
            tooltip(TRAIN_HELP["checkpoint_every"], "previews are made from each"),
        )
        self.previews = spin(QSpinBox(), 0, 16, 4, "Images generated per condition at each checkpoint; 0: none.")
        self.device = device_combo()
        return [
            ("Image size", self.image_size),
            ("Steps", self.steps),
            ("Train for", self.minutes),
            ("Batch size", self.batch_size),
            ("Learning rate", self.lr),
            ("Checkpoint every", self.checkpoint_every),
            ("Previews", self.previews),
            ("Device", self.device),
            *self._make_recipe_controls(),
        ]

    def _make_recipe_controls(self) -> list[tuple[str, QWidget]]:
        """How the images and the loss are treated: whole images, mixed precision, min-SNR, noise offset."""
        self.resize = QCheckBox("scale whole images to the image size")
        self.resize.setChecked(DEFAULTS["resize"])
        self.resize.setToolTip(tooltip(TRAIN_HELP["resize"], "translation then scales fields the same way"))
        self.mixed_precision = QComboBox()
        for name in MIXED_PRECISIONS:
            self.mixed_precision.addItem(name, name)
        self.mixed_precision.setCurrentIndex(MIXED_PRECISIONS.index(DEFAULTS["mixed_precision"]))
        self.mixed_precision.setToolTip(tooltip(TRAIN_HELP["mixed_precision"]))
        self.snr_gamma = spin(
            QDoubleSpinBox(decimals=1), 0.0, 100.0, DEFAULTS["snr_gamma"], tooltip(TRAIN_HELP["snr_gamma"])
        )
        self.snr_gamma.setSpecialValueText("off")
        self.noise_offset = spin(
            QDoubleSpinBox(decimals=2, singleStep=0.05),
            0.0,
            0.99,
            DEFAULTS["noise_offset"],
            tooltip(TRAIN_HELP["noise_offset"]),
        )
        self.noise_offset.setSpecialValueText("off")
        self.optimizer = QComboBox()
        for name in OPTIMIZERS:
            self.optimizer.addItem(name, name)
        self.optimizer.setCurrentIndex(OPTIMIZERS.index(DEFAULTS["optimizer"]))
        self.optimizer.setToolTip(tooltip(TRAIN_HELP["optimizer"]))
        return [
            ("Whole images", self.resize),
            ("Mixed precision", self.mixed_precision),
            ("Min-SNR γ", self.snr_gamma),
            ("Noise offset", self.noise_offset),
            ("Optimizer", self.optimizer),
        ]

    def _minutes_changed(self, minutes: float) -> None:
        """A time budget replaces the steps: the run times its own steps first and takes the ones that fit."""
        self.steps.setEnabled(minutes == 0)
        self.resume.setEnabled(minutes == 0)
        if minutes:
            self.resume.setChecked(False)

    def config(self) -> TrainConfig:
        """The TrainConfig the current settings describe (checked by TrainConfig itself: ConfigError)."""
        kind = self.kind()
        names = [n.strip() for n in self.channel_names.text().split(",") if n.strip()]
        widgets = {
            "preset": self.preset,
            "image_size": self.image_size,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "checkpoint_every": self.checkpoint_every,
            "device": self.device,
            "resume": self.resume,
            "resize": self.resize,
            "mixed_precision": self.mixed_precision,
            "snr_gamma": self.snr_gamma,
            "noise_offset": self.noise_offset,
            "optimizer": self.optimizer,
        }
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
        return TrainConfig(
            data=Path(self.data.text()),
            out=Path(self.out.text()).expanduser(),
            model=kind,
            channel_names=names or None,
            **values,
        )

    # --- running -------------------------------------------------------------------------------------------------
    def train(self):
        """The Train button: validate, then start the worker and return it (None if something must be fixed)."""
        # a refused start is said once, next to what to fix (a notification would stay on the canvas)
        if self.running:
            self.status.setText(ERROR_STYLE.format("Training is already running in this dock: press Stop first."))
            return None
        if self._base_check is not None:
            self.status.setText(
                ERROR_STYLE.format("The base model is still being read: wait until the dock says what it is.")
            )
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
