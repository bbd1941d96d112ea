"""Pieces both docks use: the checkpoints they offer, per-user folders, device choice, the stoppable worker, the
WorkerDock that runs one worker at a time and turns its messages (_messages.py) into progress and results, the
layout pieces (a scroll area, sections that collapse) and tooltips made from core/options.py's help."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import platformdirs
from napari.qt.threading import GeneratorWorker
from psygnal import evented
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.checkpoint import NAMED_CHECKPOINTS
from ..core.device import DEVICE_CHOICES, available_devices
from ..core.errors import PhenDiffError
from ._messages import Loaded, Progress, Result

APP = "napari-phendiff"
RECENT_FILE = Path(platformdirs.user_config_dir(APP, appauthor=False)) / "recent_checkpoints.json"
MAX_RECENT = 10
ERROR_STYLE = "<span style='color:#e06c75'>{}</span>"
# the bars move at most this often (s): a calibration's sweep yields a step per network call and each move repaints
# the window, which is slow under software OpenGL; every message still reaches on_progress
PROGRESS_INTERVAL = 0.25
WARNING_STYLE = "<span style='color:#e5c07b'>{}</span>"


def default_checkpoint_folder() -> Path:
    """Where the Train dock proposes to write checkpoints: a per-user folder, never the working directory."""
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "checkpoints"


def default_calibration_folder() -> Path:
    """Where the Translate dock writes a calibration's frontier and scores: a per-user folder, as for checkpoints."""
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "calibrations"


@evented
@dataclass
class Checkpoints:
    """Checkpoint folders the docks offer, newest first. Training adds what it wrote; the list persists."""

    recent: tuple[str, ...] = ()

    def add(self, path: str | Path) -> None:
        name = str(path) if str(path) in NAMED_CHECKPOINTS else str(Path(path).expanduser().resolve())
        self.recent = (name, *(p for p in self.recent if p != name))[:MAX_RECENT]


def _load_recent() -> tuple[str, ...]:
    try:
        return tuple(str(p) for p in json.loads(RECENT_FILE.read_text()))[:MAX_RECENT]
    except (OSError, ValueError, TypeError):
        return ()


def _save_recent(recent: tuple[str, ...]) -> None:
    with contextlib.suppress(OSError):
        RECENT_FILE.parent.mkdir(parents=True, exist_ok=True)
        RECENT_FILE.write_text(json.dumps(list(recent), indent=1))


CHECKPOINTS = Checkpoints(recent=_load_recent())
CHECKPOINTS.events.recent.connect(_save_recent)


def connect_while_alive(signal, slot, widget: QWidget) -> None:
    """Connect a psygnal signal or napari event to a widget's method until Qt deletes the widget."""
    signal.connect(slot)
    widget.destroyed.connect(partial(_disconnect, signal, slot))


def _disconnect(signal, slot, *_) -> None:
    signal.disconnect(slot)


class StoppableWorker(GeneratorWorker):
    """napari's generator worker, which on quit() also closes the core generator in the worker thread.

    Closing lets the core clean up before `finished` is emitted: training saves a resumable checkpoint,
    translation simply stops between two steps.
    """

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


# Core messages name command-line flags; in a dock they name its controls.
DOCK_WORDS = {
    # Judge again stores in the checkpoint the dock shows: a copy is calibrated anew, and there is no --no-store
    "give the copy (--checkpoint), which holds the weights the sweep was made with; or judge without storing "
    "(--no-store).": "calibrate the copy.",
    ", or judge without storing (--no-store)": "",
    " (or calibrate with store=False, --no-store)": "",  # the dock always stores a calibration's choice
    "Add --resume to continue": "Tick Resume to continue",
    "add --resume": "tick Resume",
    "--resume": "Resume",
    "--steps": "Steps",
    "--lr": "Learning rate",
    "--base": "Base model",
    "--batch-size": "Batch size",
    "--image-size": "Image size",
    "--mixed-precision": "precision",
    "--out": "the output folder",
    "--strength": "Strength",
    "--guidance": "Guidance",
}


def in_dock_words(message: str) -> str:
    """A core message with its command-line flags replaced by the dock's control names."""
    for flag, control in DOCK_WORDS.items():
        message = message.replace(flag, control)
    return message


class WorkerDock(QWidget):
    """A dock that runs one core generator at a time in napari's thread_worker: start, stop, progress (napari's bar
    follows Progress messages), errors and the running state. Subclasses give `run_buttons` (enabled while idle),
    `stop_buttons` (enabled while running), `status` (a QLabel) and the on_* handlers."""

    status: QLabel
    progress_bar: QProgressBar | None = None  # when a dock shows one, it follows Progress with the step and ETA

    def __init__(self):
        super().__init__()
        self._worker = self._pbar = None
        self._started: tuple[float, int] | None = None  # (time, step) of a run's (or a file's) first Progress
        self._where = ""  # what the steps count, when a run counts them per file (Progress.where)
        self._moved = -math.inf  # when the bars last moved (time.monotonic)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start_worker(self, worker, message: str):
        """Connect and start `worker` (refused while another run is active); return it."""
        if self.running:
            raise PhenDiffError("A run is already active in this dock: wait for it, or press its stop button.")
        worker.dock_done = False  # set once the dock has handled the end of the run (scripts and tests wait on it)
        worker.yielded.connect(self._dispatch)
        worker.finished.connect(self._finished)
        worker.errored.connect(self._errored)
        self._worker, self._pbar, self._started, self._where = worker, worker.pbar, None, ""
        self._moved = -math.inf
        self.set_running(True)
        self.status.setText(message)
        worker.start()
        return worker

    def stop_worker(self) -> bool:
        """Ask the worker to stop between two steps; False when nothing runs."""
        if self._worker is None:
            return False
        self._worker.quit()
        return True

    def _dispatch(self, message) -> None:
        # napari's progress bar processes Qt events whenever it moves, so the next messages may be handled inside
        # pbar.update(): each handler finishes its own work first and the bar moves last.
        if isinstance(message, Loaded):
            self.on_loaded(message.model)
        elif isinstance(message, Result):
            self.on_result(message.value)
        elif isinstance(message, Progress):
            if message.where != self._where:  # the next file of a folder: its own bar, pace and time left
                self._where, self._started, self._moved = message.where, None, -math.inf
                self._pbar.reset(total=message.total)
                self._pbar.set_description(message.where)
            self.on_progress(message.event)
            if message.stage:  # named instead of timed: the time left is measured from the step after the last
                self._started = None
            now = time.monotonic()
            if not (message.stage or message.step >= message.total or now - self._moved >= PROGRESS_INTERVAL):
                return
            self._moved = now
            self._show_progress(message.step, message.total, getattr(message.event, "seconds_left", None))
            if message.stage and self.progress_bar is not None:
                self.progress_bar.setFormat(f"{message.stage}…")
            if self._pbar.total != message.total:
                self._pbar.total = message.total
            if message.step > self._pbar.n:
                self._pbar.update(message.step - self._pbar.n)

    def _show_progress(self, step: int, total: int, left: float | None = None) -> None:
        """Move the dock's bar; `left`: seconds left as the work measured them, else from the steps' pace here."""
        if self.progress_bar is None or total <= 0:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = (now, step)
        began, first = self._started
        if left is None and step > first:
            left = (now - began) / (step - first) * (total - step)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(step, total))
        self.progress_bar.setFormat(self.progress_text(step, total, left))

    def progress_text(self, step: int, total: int, left: float | None) -> str:
        """The bar's text: steps and the time left (a dock whose steps mean nothing to its user says otherwise)."""
        eta = f" · ETA {datetime.timedelta(seconds=round(left))}" if left is not None else ""
        return f"step {step} / {total}{eta}"

    def _finished(self) -> None:
        aborted = self._worker.abort_requested
        self._worker.dock_done = True
        self._worker = None
        self.set_running(False)
        self.on_finished(aborted)

    def _errored(self, exc: Exception) -> None:
        # The workers ignore their errors (ignore_errors=True): a project error is the user's to fix and is shown in
        # the dock, in one line; anything else is a bug, raised again for napari to show with its traceback.
        self.on_error(exc)
        if not isinstance(exc, PhenDiffError):
            raise exc

    def set_running(self, running: bool) -> None:
        for button in self.run_buttons():
            button.setEnabled(not running)
        for button in self.stop_buttons():
            button.setEnabled(running)

    def run_buttons(self) -> list:
        return []

    def stop_buttons(self) -> list:
        return []

    def on_loaded(self, model) -> None:
        pass

    def on_progress(self, event) -> None:
        pass

    def on_result(self, value) -> None:
        pass

    def on_finished(self, aborted: bool) -> None:
        pass

    def on_error(self, exc: Exception) -> None:
        self.status.setText(ERROR_STYLE.format(in_dock_words(str(exc))))


def device_combo() -> QComboBox:
    """auto / cuda / mps / cpu, with the backends this machine lacks shown but disabled."""
    combo = QComboBox()
    found = available_devices()
    for name in DEVICE_CHOICES:
        label = f"auto ({found[0]})" if name == "auto" else name
        if name not in found and name != "auto":
            label += " (not available)"
        combo.addItem(label, name)
        combo.model().item(combo.count() - 1).setEnabled(name == "auto" or name in found)
    combo.setToolTip("Where the model runs: auto takes the best available (cuda > mps > cpu).")
    return combo


def tooltip(help_text: str, more: str = "") -> str:
    """An option's help from core/options.py (the words of its command-line help) as a control's tooltip: a capital
    first letter, the dock's own remark after it, a full stop. One source for the CLI's help and the docks."""
    text = f"{help_text}; {more}" if more else help_text
    return text[:1].upper() + text[1:] + "."


def spin(box, low, high, value, tip: str):
    """A QSpinBox or QDoubleSpinBox with its range, value and tooltip set."""
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def button(text: str, slot, tip: str = "") -> QPushButton:
    """A push button calling `slot` when clicked, with its tooltip."""
    made = QPushButton(text)
    made.clicked.connect(slot)
    if tip:
        made.setToolTip(tip)
    return made


def row(*widgets) -> QWidget:
    """Widgets side by side, without margins (for a form row)."""
    container = QWidget()
    layout = QHBoxLayout(container)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return container


class Note(QLabel):
    """A word-wrapped line of information next to the controls, taking no room while it says nothing."""

    def __init__(self, text: str = ""):
        super().__init__(wordWrap=True)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self.setVisible(bool(text))


class _DockScroll(QScrollArea):
    """A vertical scroll area as wide as what it holds: a dock scrolls down, never sideways."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        inner = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(inner + 2 * self.frameWidth(), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = self.widget().sizeHint()
        return QSize(max(hint.width(), self.minimumSizeHint().width()), hint.height())

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # what it holds changed size: so does the dock
        return super().eventFilter(watched, event)


def scrolled(dock: QWidget) -> QWidget:
    """The widget to lay a dock's controls out in: it sits in a scroll area filling `dock`, so a dock taller than
    the window scrolls instead of being squeezed (controls overlapping) or cut."""
    area = _DockScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)  # the area now filters the widget's events
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return inner


class Section(QWidget):
    """A titled group of controls that collapses to its title: click the title (an arrow and a name) to show or
    hide the controls. Hidden controls keep their values."""

    def __init__(self, title: str, content: QLayout, expanded: bool = True, tip: str = ""):
        super().__init__()
        self.title = QToolButton(text=title, checkable=True)
        self.title.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.title.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.title.setToolTip(tip)
        self.title.toggled.connect(self.set_expanded)
        self.content = QWidget()
        self.content.setLayout(content)
        content.setContentsMargins(12, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.content)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        if self.title.isChecked() != expanded:
            self.title.setChecked(expanded)  # comes back here through toggled
            return
        self.title.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.content.setVisible(expanded)

    def is_expanded(self) -> bool:
        return self.title.isChecked()
