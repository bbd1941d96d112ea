"""How long the rest of a run will take on this computer, from the time its own first network steps took."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Generator, TypeVar

Result = TypeVar("Result")


def duration(seconds: float) -> str:
    """A time as a person says it: "40 s", "12 min", "1 h 40 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def percent_done(step: int, total: int) -> int:
    """How much of a run is done, in whole percent: what the dock and the terminal show instead of its steps (tile
    batches x network calls, a count that means nothing to a biologist)."""
    return 100 * min(step, total) // max(total, 1)


class Pace:
    """Seconds left in a translation, from the seconds per tile of its own steps, measured apart for inversion and
    generation steps (a guided generation step runs both branches in one call) and without the first step of each
    (it pays one-time set-up for its batch shape). Known once both have been timed, refined by every later step.
    With a deep cache of N (a whole generation step, then N - 1 cheaper ones) generation is known once N steps beyond
    the first are timed: one whole cycle, not its cheap steps alone."""

    def __init__(self, inverse_tiles: int, generate_tiles: int, cycle: int = 1):
        """inverse_tiles, generate_tiles: tile-steps of the whole run (tiles x network steps) of each phase;
        cycle: generation steps that repeat at one cost pattern (the deep cache)."""
        self.left = {"invert": inverse_tiles, "generate": generate_tiles}
        self.spent = {"invert": 0.0, "generate": 0.0}  # seconds over the timed tile-steps below
        self.timed = {"invert": 0, "generate": 0}
        self.steps = {"invert": 0, "generate": 0}  # timed steps
        self.needed = {"invert": 1, "generate": cycle}
        self.seen = {"invert": False, "generate": False}
        self._last: float | None = None

    def follow(self, steps: Generator[Any, None, Result], tiles: int) -> Generator[Any, None, Result]:
        """Pass a per-step TranslateEvent generator (a batch of `tiles`) through, each event given `seconds_left`;
        return its value."""
        while True:
            try:
                event = next(steps)
            except StopIteration as stop:
                return stop.value
            now = time.perf_counter()
            phase = "invert" if event.phase == "invert" else "generate"
            if self.seen[phase] and self._last is not None:
                self.spent[phase] += now - self._last
                self.timed[phase] += tiles
                self.steps[phase] += 1
            self.seen[phase] = True
            self.left[phase] = max(0, self.left[phase] - tiles)
            self._last = now
            yield replace(event, seconds_left=self.seconds_left())

    def seconds_left(self) -> float | None:
        if any(self.left[p] and self.steps[p] < self.needed[p] for p in self.left):
            return None
        return sum(self.spent[p] / self.timed[p] * self.left[p] for p in self.left if self.left[p])
