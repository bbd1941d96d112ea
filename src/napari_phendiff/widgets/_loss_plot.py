"""A small live loss curve for the Train dock (matplotlib in Qt, redrawn at most a few times a second)."""

from __future__ import annotations

import time

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

REDRAW_SECONDS = 0.5
SMOOTHING = 0.9  # exponential moving average of the loss, as training logs usually show it


class LossPlot(FigureCanvasQTAgg):
    """Training loss per step (faint) and its moving average (bold), log scale."""

    def __init__(self, foreground: str = "#d6d6d6", background: str = "#262930"):
        figure = Figure(figsize=(3.2, 1.9), facecolor=background, layout="constrained")
        super().__init__(figure)
        self.axes = figure.add_subplot(facecolor=background)
        self.axes.set_yscale("log")
        self.axes.set_xlabel("step", color=foreground, fontsize=8)
        self.axes.set_ylabel("loss", color=foreground, fontsize=8)
        self.axes.tick_params(colors=foreground, labelsize=7)
        for spine in self.axes.spines.values():
            spine.set_color(foreground)
        (self.raw,) = self.axes.plot([], [], color="#5c7cfa", alpha=0.35, linewidth=0.8)
        (self.smooth,) = self.axes.plot([], [], color="#5c7cfa", linewidth=1.6)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self._drawn_at = 0.0
        self.setMinimumHeight(150)

    def clear(self) -> None:
        self.steps.clear()
        self.losses.clear()
        self.redraw()

    def add(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(max(loss, 1e-8))
        if time.monotonic() - self._drawn_at > REDRAW_SECONDS:
            self.redraw()

    def redraw(self) -> None:
        smooth = np.empty(len(self.losses))
        value = self.losses[0] if self.losses else 0.0
        for i, loss in enumerate(self.losses):
            value = SMOOTHING * value + (1 - SMOOTHING) * loss
            smooth[i] = value
        self.raw.set_data(self.steps, self.losses)
        self.smooth.set_data(self.steps, smooth)
        if self.steps:
            self.axes.relim()
            self.axes.autoscale_view()
        self.draw_idle()
        self._drawn_at = time.monotonic()
