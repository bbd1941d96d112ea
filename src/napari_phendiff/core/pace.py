"""How long the rest of a run will take on this computer, from the time its own first network steps took."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterator


def duration(seconds: float) -> str:
    """A time as a person says it: "40 s", "12 min", "1 h 40 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Pace:
    """Seconds left in a translation, in units of network work: an inversion step is one unit, a generation step
    `generate_units` (a guided step runs both branches in one call: two). The rate is measured from the end of the
    first step on (the first pays one-time set-up), so it is known after two steps and refined by every later one."""

    def __init__(self, total_units: float, generate_units: float = 1.0):
        self.total, self.generate_units = total_units, generate_units
        self.units = 0.0
        self._first: tuple[float, float] | None = None

    def follow(self, steps: Iterator) -> Iterator:
        """Pass a per-step TranslateEvent generator through, each event given `seconds_left`; return its value."""
        while True:
            try:
                event = next(steps)
            except StopIteration as stop:
                return stop.value
            self.units += self.generate_units if event.phase == "generate" else 1.0
            yield replace(event, seconds_left=self.seconds_left())

    def seconds_left(self) -> float | None:
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, self.units)
            return None
        began, units = self._first
        if self.units <= units:
            return None
        return (now - began) / (self.units - units) * max(0.0, self.total - self.units)
