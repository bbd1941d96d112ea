"""What a Train dock run starts from, read before the click: the PhenDiff checkpoint to start from (its manifest, no
weights), the shipped base (local, read at once) or a Stable Diffusion folder or hub id (read in a worker, a hub id
downloaded first with progress in the dock's bar). Each takes its image size and says what it is, or what is wrong,
under the choice. A part of TrainDock (train_dock.py), with the choices of _train_choice.py."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from ..core.checkpoint import manifest_kind
from ..core.errors import PhenDiffError
from ..core.models import KINDS, read_manifest
from ..core.models.bases import DEFAULT_BASE, is_hub_id
from ._messages import Progress
from ._shared import ERROR_STYLE, in_dock_words
from ._train_choice import STARTING, without_flags
from ._train_worker import BaseRead, read_base_model


class StartReading:
    """Read the checkpoint or base model a run starts from; `_base_check` is the worker reading a base, while it
    runs."""

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
            self._say_source_problem(
                f"{text}: is a {kind!r} checkpoint ({without_flags(KINDS[kind].help)}); a run "
                f"starts only from a {STARTING!r} checkpoint (PhenDiff). Choose one, or "
                "fine-tune its base model instead."
            )
            return
        self.preset.setCurrentIndex(self.preset.findData(manifest["preset"]))
        self.image_size.setValue(int(manifest["image_size"]))
        self.source_info.setText(
            f"PhenDiff {manifest['preset']} model, {manifest['image_size']} px · conditions "
            f"{', '.join(manifest['conditions'])} · channels {', '.join(manifest['channel_names'])} · "
            f"{manifest.get('trained_steps', '?')} trained steps. The folder's conditions take its condition rows "
            "(same names keep theirs)."
        )

    def _read_shipped_base(self) -> None:
        """The shipped base's image size (its configs are local and small: read at once)."""
        from ..core.models.latent import native_image_size

        try:
            self.image_size.setValue(native_image_size(DEFAULT_BASE))
        except PhenDiffError as exc:
            self._say_source_problem(str(exc))
            return
        self.source_info.setText(
            f"The shipped {DEFAULT_BASE} base: {self.image_size.value()} px images, no download needed."
        )

    def _say_source_problem(self, message: str) -> None:
        self.source_info.setText(ERROR_STYLE.format(in_dock_words(message)))

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
