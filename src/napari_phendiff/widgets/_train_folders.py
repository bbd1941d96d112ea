"""The Train dock's two folders: the labelled data folder it learns from (its conditions and image counts shown as
soon as it is given) and the output folder it writes, a new checkpoint or one to resume, whose choices and settings
resuming takes. A part of TrainDock (train_dock.py), with the choices of _train_choice.py."""

from __future__ import annotations

import datetime
from pathlib import Path

from qtpy.QtWidgets import QCheckBox, QFileDialog, QLabel, QLineEdit, QWidget

from ..core.checkpoint import manifest_kind, resolve_checkpoint
from ..core.dataset import scan_folder
from ..core.errors import PhenDiffError
from ..core.images import read_channel_names
from ..core.models import KINDS, read_manifest
from ..core.models.bases import is_shipped
from ..core.options import TRAIN_HELP
from ._shared import ERROR_STYLE, button, default_checkpoint_folder, in_dock_words, row

TRAINING_STATE = "training"  # a checkpoint's folder of what resuming needs (core.training.run writes it)
NO_NAMES = "e.g. DNA, reporter (optional)"


class TrainFolders:
    """The data folder, the output folder and Resume."""

    def _make_data_controls(self) -> list[tuple[str, QWidget]]:
        """The data folder's controls, as the form's (label, control) rows."""
        self.data = QLineEdit(placeholderText="folder with one subfolder of images per condition")
        self.data.editingFinished.connect(self.check_folder)
        self.folder_info = QLabel(wordWrap=True)
        self.channel_names = QLineEdit(placeholderText=NO_NAMES)
        return [
            ("Data folder", row(self.data, button("Browse…", self.browse_data))),
            ("", self.folder_info),
            ("Channel names", self.channel_names),
        ]

    def _make_output_controls(self) -> list[tuple[str, QWidget]]:
        """The output folder's controls, as the form's (label, control) rows."""
        self.out = QLineEdit(str(default_checkpoint_folder() / "new-model"))
        self.out.setToolTip("The checkpoint folder training writes (a per-user folder unless you choose one).")
        self.resume = QCheckBox(TRAIN_HELP["resume"])
        self.resume.toggled.connect(self._resume_toggled)
        return [("Output folder", row(self.out, button("Browse…", self.browse_out))), ("Resume", self.resume)]

    # --- the data ------------------------------------------------------------------------------------------------
    def browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with one subfolder per condition")
        if folder:
            self.set_data_folder(folder)

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
        self.channel_names.setPlaceholderText(f"from the files: {', '.join(recorded)}" if recorded else NO_NAMES)
        if not self.resume.isChecked() and Path(self.out.text()).parent == default_checkpoint_folder():
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
            self.out.setText(str(default_checkpoint_folder() / f"{found.root.name}-{stamp}"))
        return found

    # --- the output and resuming ---------------------------------------------------------------------------------
    def browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the output folder (new, or a checkpoint to resume)")
        if folder:
            self.out.setText(folder)

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
            build_on = (
                "To build on it, choose Fine-tune > a PhenDiff checkpoint and give it there, with a new output folder."
                if KINDS[kind].starts_from
                else "Train a new model into another output folder."
            )
            self.status.setText(
                ERROR_STYLE.format(f"{out}: holds no training state, so it cannot be resumed. {build_on}")
            )
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
            self.resize.setChecked(bool(training.get("resize", False)))
            self.snr_gamma.setValue(float(training.get("snr_gamma", 0.0)))
            self.noise_offset.setValue(float(training.get("noise_offset", 0.0)))
            self.optimizer.setCurrentIndex(self.optimizer.findData(training.get("optimizer", "adamw")))
        finally:
            self._restoring = False
        self._show_choice()
        self._show_costs()
        self.source_info.setText("Continues the checkpoint in the output folder, with its own settings.")
        self.steps.setValue(max(self.steps.value(), int(manifest["trained_steps"]) + 1))
        if not self.data.text():
            self.set_data_folder(training["data"])
        took += [
            f"image size {training['image_size']} px",
            f"channels {', '.join(manifest['channel_names'])}",
            f"batch size {training['batch_size']}",
            f"learning rate {float(training['lr']):.2e}",
        ]
        took += ["whole images scaled"] if training.get("resize") else []
        took += [f"min-SNR γ {float(training['snr_gamma']):g}"] if training.get("snr_gamma") else []
        took += [f"noise offset {float(training['noise_offset']):g}"] if training.get("noise_offset") else []
        took += [f"optimizer {training['optimizer']}"] if training.get("optimizer", "adamw") != "adamw" else []
        self.status.setText(
            f"Continues {manifest['trained_steps']} trained steps up to {self.steps.value()}, with "
            f"the checkpoint's settings: {'; '.join(took)}."
        )

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
            return [
                f"model {kind}",
                f"base {base}",
                f"adapter {training['adapter']}{rank}",
                f"gradient checkpointing {'on' if training['gradient_checkpointing'] else 'off'}",
            ]
        if training.get("start_from"):
            self._choose("fine-tune", "checkpoint")
            self.start_from.setText(str(training["start_from"]))
            return [f"model {kind}", f"preset {training['preset']}", f"started from {training['start_from']}"]
        self._choose("scratch")
        self.model.setCurrentIndex(self.model.findData(kind))
        return [f"model {kind}", f"preset {training['preset']}"]
