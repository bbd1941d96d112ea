"""Pieces both docks use: the checkpoints they offer, per-user folders, device choice and the stoppable worker."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import platformdirs
from napari.qt.threading import GeneratorWorker
from psygnal import evented
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QWidget

from ..core.checkpoint import NAMED_CHECKPOINTS
from ..core.device import DEVICE_CHOICES, available_devices
from ..core.errors import PhenDiffError

APP = "napari-phendiff"
RECENT_FILE = Path(platformdirs.user_config_dir(APP, appauthor=False)) / "recent_checkpoints.json"
MAX_RECENT = 10
ERROR_STYLE = "<span style='color:#e06c75'>{}</span>"


def default_checkpoint_folder() -> Path:
    """Where the Train dock proposes to write checkpoints: a per-user folder, never the working directory."""
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "checkpoints"


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


@contextlib.contextmanager
def explain_memory_errors(device: str, advice: str):
    """Turn an out-of-memory error of the accelerator into a PhenDiffError that says what to change."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise PhenDiffError(f"Out of GPU memory on {device}. {advice}") from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        raise PhenDiffError(f"Out of memory on {device}. {advice}") from exc


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


def spin(box, low, high, value, tip: str):
    """A QSpinBox or QDoubleSpinBox with its range, value and tooltip set."""
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def row(*widgets) -> QWidget:
    """Widgets side by side, without margins (for a form row)."""
    container = QWidget()
    layout = QHBoxLayout(container)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return container
