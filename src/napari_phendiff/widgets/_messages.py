"""What a worker yields to its dock: a tagged message (Loaded | Progress | Result), so no dock inspects the classes of
what it receives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loaded:
    """The worker loaded a model (whatever its kind); the dock keeps it for the next run."""

    model: object


@dataclass(frozen=True)
class Progress:
    """A step of the core generator: `event` is its own event (TranslateEvent, TrainEvent or Previews)."""

    step: int
    total: int
    event: object = None
    where: str = ""  # a folder run: the file(s) being translated ("a.tif (file 3 of 40)"); step and total are theirs
    # what runs until the next step, shown instead of a time left where its pace says nothing of the rest (a
    # calibration's preparation and scoring)
    stage: str = ""


@dataclass(frozen=True)
class Result:
    """What the run produced (the translated images); the last message of a run that was not cancelled."""

    value: object
