"""A Train dock run as it goes: the step, loss and ETA in the status line, the loss curve, the checkpoints written
(listed in the Translate dock), and the previews generated from each checkpoint as layers. A part of TrainDock
(train_dock.py), which owns the run (`_config`) and the widgets these fill (progress, status, loss_plot)."""

from __future__ import annotations

import datetime
import time

from ..core.training.run import TrainEvent
from ._shared import CHECKPOINTS
from ._train_worker import Previews


class TrainProgress:
    """The worker's messages turned into the status line, the bar, the loss curve and preview layers."""

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
                self._done_text = (
                    f"Finished {event.step} steps. Checkpoint: {event.path} (listed in the Translate dock)."
                )
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
        self.status.setText(
            f"step {event.step} / {event.total} · loss {event.loss:.4f} · lr {event.lr:.2e} · ETA {eta}"
        )

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
                self.viewer.add_image(
                    images,
                    name=name,
                    axis_labels=("sample", "channel", "y", "x"),
                    translate=(0, 0, 0, offset),
                    colormap="gray",
                    metadata={"phendiff": {"preview_of": condition, "step": previews.step}},
                )
                added = True
        if added:
            self.viewer.reset_view()

    def on_finished(self, aborted: bool) -> None:
        self.loss_plot.redraw()
        if aborted:
            saved = self._last_step > self._first_step
            if saved:
                CHECKPOINTS.add(self._config.out)
            self.status.setText(
                f"Stopped at step {self._last_step}: resumable checkpoint in {self._config.out}; "
                "tick Resume and press Train to continue."
                if saved
                else "Stopped before training."
            )
