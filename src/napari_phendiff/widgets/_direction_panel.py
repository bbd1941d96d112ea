"""The Translate dock's source and target conditions: the source set from the ticked layers' names, files or folders
(or the folder translated) when they name one condition, never guessed otherwise; the target set when it is the only
other condition; next to them, where the source came from or what is missing. A part of TranslateDock
(translate_dock.py), which owns the checkpoint's manifest (its conditions) and the status line (`_report`)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from qtpy.QtWidgets import QComboBox, QWidget

from ..core.files import named_condition
from ._shared import ERROR_STYLE, Note

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


class DirectionPanel:
    """Source and target: set from names, chosen by the user, checked before a run. `_source_from` is (layer |
    folder, whose name) while the source is one set from a name; `_setting` while the dock, not the user, changes
    it."""

    def _make_direction_controls(self) -> list[tuple[str | None, QWidget]]:
        """Source, target and the line next to them, as the form's (label, control) rows."""
        self.source, self.target = QComboBox(), QComboBox()
        for combo in (self.source, self.target):
            combo.setPlaceholderText(CHOOSE)
        self.source.setToolTip(
            "The condition the images are in. Set for you only when a ticked layer, its file or "
            "its folder (or the folder translated) is named after a condition; never guessed."
        )
        self.source.currentTextChanged.connect(self._source_changed)
        self.source.activated.connect(self._source_chosen)  # the user's choice, even of the condition already shown
        self.source.currentTextChanged.connect(self._preselect_options)
        self.target.currentTextChanged.connect(self._preselect_options)
        self.direction_info = Note()
        return [("Source", self.source), ("Target", self.target), (None, self.direction_info)]

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
            self._show_direction(
                f"The ticked layers are named after {' and '.join(found)}: choose the source." if found else ""
            )

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
        kind, what = (
            ("folder", f"the folder {folder.name}: choose the source condition of its images")
            if folder is not None
            else ("layer", "the ticked layers: choose their source condition")
        )
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
