"""The Translate dock's Calibrate section: `phendiff calibrate` from the dock. It sweeps strength and guidance for
the chosen direction on real images of both conditions (a folder with one subfolder per condition, images the model
did not train on), chooses by core/calibration_rule.py's rule (move the phenotype first, keep the nuclei within a
tolerance of the source -> source control) and, when a setting does both, stores it in the checkpoint: the dock then
preselects it. A part of TranslateDock (translate_dock.py), which owns the settings, the cached model and the run."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QDoubleSpinBox, QFileDialog, QLabel, QSpinBox, QVBoxLayout

from ..core.calibrate import check_calibration_folder
from ..core.calibration_bars import BAR_HELP, BAR_RANGES, KEPT_TOLERANCE, REACHED_MIN, bars_by_hand, partial_move
from ..core.calibration_store import overshoot_warning
from ..core.checkpoint import is_shipped, resolve_checkpoint
from ..core.models import read_manifest
from ..core.options import CALIBRATION_IMAGES
from ..core.rejudge import rejudge
from ..core.errors import PhenDiffError
from ._shared import WARNING_STYLE, Note, button, default_calibration_folder, row, spin, tooltip
from ._translate_worker import Calibrated, PendingRun, run_calibration

FRONTIER_MIN_WIDTH = 280  # px: narrower, its labels cannot be read


class CalibratePanel:
    """Calibrate on a folder…: check the folder and the direction, run core.calibrate.iter_calibrate in a worker,
    then say what was chosen and why, and preselect it."""

    def _make_calibrate_controls(self) -> QVBoxLayout:
        """The Calibrate section's line, the rule's two bars, the image count and the button."""
        self.calibrate_info = Note(
            "Find the strength and guidance that move the phenotype of this direction and keep the cells, on real "
            "images of both conditions the model did not train on; the choice becomes the direction's default."
        )
        self.calibrate_images = spin(
            QSpinBox(),
            2,
            1024,
            CALIBRATION_IMAGES,
            "Source images translated at every setting (the first ones of the source's subfolder): more are slower "
            "and steadier.",
        )
        self.calibrate_images.setSuffix(" images")
        self.calibrate_button = button(
            "Calibrate on a folder…",
            self.browse_calibration,
            "Choose a folder with one subfolder of real images per condition (named as the conditions). Every "
            "setting of a strength x guidance grid translates the source images, beside a source -> source control; "
            "the frontier and the scores go into a new folder.",
        )
        self.calibrate_reached = spin(
            QDoubleSpinBox(decimals=2, singleStep=0.05),
            *BAR_RANGES["reached_min"],
            REACHED_MIN,
            tooltip(BAR_HELP["reached_min"]),
        )
        self.calibrate_reached.setPrefix("moved ≥ ")
        self.calibrate_tolerance = spin(
            QDoubleSpinBox(decimals=2, singleStep=0.01),
            *BAR_RANGES["kept_tolerance"],
            KEPT_TOLERANCE,
            tooltip(BAR_HELP["kept_tolerance"]),
        )
        self.calibrate_tolerance.setPrefix("IoU lost ≤ ")
        calibrate = QVBoxLayout()
        calibrate.addWidget(self.calibrate_info)
        self.judge_again_button = button(
            "Judge again",
            self.judge_again,
            "Judge the last calibration's sweep again at the bars above, without translating again (phendiff "
            "rejudge): what they choose is stored in the checkpoint the sweep was made with.",
        )
        self.judge_again_button.setEnabled(False)  # until a calibration ends
        self._last_calibration: Calibrated | None = None
        calibrate.addWidget(row(self.calibrate_reached, self.calibrate_tolerance, self.judge_again_button))
        calibrate.addWidget(row(self.calibrate_images, self.calibrate_button))
        self.calibrate_frontier = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.calibrate_frontier.setVisible(False)  # until a calibration ends: its frontier plot
        calibrate.addWidget(self.calibrate_frontier)
        return calibrate

    def browse_calibration(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of real images, one subfolder per condition")
        if folder:
            self.calibrate_on(folder)

    def calibrate_on(self, folder: str | Path, out: str | Path | None = None):
        """Calibrate the chosen direction on the real images of `folder` (one subfolder per condition), the frontier
        and scores written into `out` (default: a new per-user folder); returns the worker (None if something must be
        fixed first)."""
        if not self.free_for_a_run():
            return None
        folder = Path(folder)
        try:
            self.require_manifest()
            source, target = self.source.currentText(), self.target.currentText()
            if not source or not target or source == target:
                raise PhenDiffError("Choose a source and a different target condition to calibrate.")
            check_calibration_folder(folder, source, target)
            request = self._settings_request(source, target, np.zeros((0,)), "calibrate")
            if is_shipped(request.checkpoint):
                raise PhenDiffError(
                    f"The shipped checkpoint cannot be changed, so a calibration could not be stored in it: copy its "
                    f"folder ({request.checkpoint}), choose the copy with Browse…, and calibrate that."
                )
        except PhenDiffError as exc:
            self._report(str(exc))
            return None
        out = out if out is not None else _new_folder(request.checkpoint, source, target)
        model, key = self.cached_model(request)
        worker = run_calibration(
            request,
            model,
            folder,
            Path(out),
            self.calibrate_images.value(),
            reached_min=self.calibrate_reached.value(),
            kept_tolerance=self.calibrate_tolerance.value(),
        )
        self._pending, self._run_key = PendingRun("calibrate", None, request), key
        self.calibrate_frontier.setVisible(False)  # the last calibration's, until this one ends
        return self.start_worker(
            worker,
            f"Calibrating {source} → {target} on up to {self.calibrate_images.value()} images of {folder.name}…",
        )

    def _show_calibration(self, result: Calibrated) -> None:
        """Say what the calibration chose and why (naming its direction: the dock's may have changed meanwhile); a
        stored choice is preselected when the dock still shows that checkpoint and direction."""
        chosen, direction = result.record, f"{result.source} → {result.target}"
        if chosen["status"] == "calibrated":
            self._take_stored(result)
            head = (
                f"Calibrated {direction}: strength {chosen['strength']:g}, guidance {chosen['guidance']:g} (contrast "
                f"with {chosen['negative']}) is stored in {result.checkpoint.name} as this direction's setting."
            )
        else:
            head = WARNING_STYLE.format(
                f"Not calibrated {direction}: nothing was stored; the settings stay as they were. Check the model "
                "(train longer?) and the frontier."
            )
        exaggerated = overshoot_warning(chosen, result.target)
        exaggerated = " " + WARNING_STYLE.format(exaggerated) if exaggerated else ""
        self.status.setText(
            f"{head} {chosen['reason']}{_bars_said(chosen)}{exaggerated} Frontier and scores: {result.out}"
        )
        self._show_frontier(result.out / "frontier.png")
        self._last_calibration = result
        self.judge_again_button.setEnabled(True)

    def judge_again(self, out: str | Path | None = None) -> None:
        """The last calibration's sweep judged at the dock's bars (core.rejudge: no translation, so here, at once),
        its verdict shown and, when it calibrates, stored and preselected; `out`: its folder (default: a new
        per-user one)."""
        last = self._last_calibration
        if last is None or not self.free_for_a_run():
            return
        shown = (self.checkpoint.currentData(), self.source.currentText(), self.target.currentText())
        if not shown[0] or (resolve_checkpoint(shown[0]), *shown[1:]) != (last.checkpoint, last.source, last.target):
            self._report(
                f"Judge again judges the last calibration, of {last.checkpoint} for {last.source} → {last.target}: "
                "choose that checkpoint and direction again, or calibrate the ones shown."
            )
            return
        out = out if out is not None else _new_folder(last.checkpoint, last.source, last.target, "judged-")
        try:
            record = rejudge(
                last.out,
                out,
                reached_min=self.calibrate_reached.value(),
                kept_tolerance=self.calibrate_tolerance.value(),
            )
        except (PhenDiffError, OSError) as exc:
            self._report(f"Judge again: {exc}")
            return
        self._show_calibration(Calibrated(record, Path(out), last.checkpoint, last.source, last.target))

    def _show_frontier(self, path: Path) -> None:
        """The calibration's frontier plot under the Calibrate section's controls, as wide as the dock allows."""
        pixmap = QPixmap(str(path))
        if pixmap.isNull():  # unreadable: the status line still names the folder
            self.calibrate_frontier.setVisible(False)
            return
        width = min(pixmap.width(), max(self.calibrate_button.parentWidget().width(), FRONTIER_MIN_WIDTH))
        self.calibrate_frontier.setPixmap(pixmap.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation))
        self.calibrate_frontier.setToolTip(
            f"{path}: how far each setting moved the phenotype against the nuclei overlap it lost beyond its "
            "control (against the strength where the nuclei are kept as the original's), the bars drawn, the choice "
            "circled and the setting without calibration squared."
        )
        self.calibrate_frontier.setVisible(True)

    def _take_stored(self, result: Calibrated) -> None:
        """After a choice was stored in `result.checkpoint`: the dock's manifest and the model it holds for that
        checkpoint take the new calibration (the weights are unchanged, so the model stays cached), and the dock
        preselects the choice if it still shows that direction."""
        if self.manifest is None or resolve_checkpoint(self.checkpoint.currentData()) != result.checkpoint:
            return
        self.manifest = read_manifest(result.checkpoint)
        if self.model is not None and self._model_key is not None and self._model_key[0] == result.checkpoint:
            self.model.manifest = self.manifest
            _, self._model_key = self.cached_model_key(result.checkpoint, self._model_key[1])
        if (self.source.currentText(), self.target.currentText()) == (result.source, result.target):
            self._preselect_options()


def _bars_said(chosen: dict) -> str:
    """What the status line adds on the bars: those set in the dock when they are not the rule's own, and where the
    cells were kept but moved less than the bar, how to store that partial move."""
    by_hand = bars_by_hand(chosen)
    said = f" Judged by the bars set here: {by_hand}." if by_hand else ""
    share = partial_move(chosen)
    if share is not None:
        said += (
            f" To store a partial move like the furthest, set 'moved ≥' to {share:.2f} and press Judge again (no "
            "translation runs again), after looking at its translations: a partial move may be the model's noise "
            "rather than the phenotype."
        )
    return said


def _new_folder(checkpoint: Path, source: str, target: str, what: str = "") -> Path:
    """A new per-user folder for a calibration's frontier and scores (`what`: "judged-" for a sweep judged again)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return default_calibration_folder() / f"{checkpoint.name}-{source}-to-{target}-{what}{stamp}"
