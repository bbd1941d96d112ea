"""The Translate dock's Folder section: every image of a folder translated with the dock's settings, as the command
line's batch does it (TIFFs, per-cell tables and one summary in an output folder; a second run continues where it
stopped). A part of TranslateDock (translate_dock.py), which owns the settings, the cached model and the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QVBoxLayout

from ..core.files import named_condition, plan_jobs
from ..core.errors import PhenDiffError
from ._shared import Note, button
from ._translate_worker import PendingRun, run_folder


class FolderPanel:
    """Translate folder…: choose the folders, check them and the direction, run core.batch in a worker."""

    def _make_folder_controls(self) -> QVBoxLayout:
        """The Folder section's line and button."""
        self.folder_info = Note("Every image of a folder, with the settings above, into an output folder.")
        self.folder_button = button(
            "Translate folder…",
            self.browse_folder,
            "Every image of a folder with these settings: TIFFs, per-cell tables and one "
            "summary in an output folder; a second run continues where it stopped.",
        )
        folder = QVBoxLayout()
        folder.addWidget(self.folder_info)
        folder.addWidget(self.folder_button)
        return folder

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
        if not self.free_for_a_run():
            return None
        folder = Path(folder)
        try:
            self.require_manifest()
            named = named_condition(folder, self.manifest["conditions"])
            if named is not None:
                origin = (
                    f"the name of the folder {folder.name}"
                    if named[1] == "name"
                    else f"the name of the folder {folder.parent.name}, which holds {folder.name}"
                )
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
        model, key = self.cached_model(request)
        worker = run_folder(request, model, Path(folder), Path(out))
        self._pending, self._run_key = PendingRun("folder", None, request), key
        origin = f" (source from {self._source_from[1]})" if self._source_from else ""
        return self.start_worker(worker, f"Translating the images of {folder} {source} → {target}{origin}…")
