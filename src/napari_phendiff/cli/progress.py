"""The progress bars of the `phendiff` commands (tqdm, on the terminal)."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, bar_format: str | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, bar_format=bar_format)


PERCENT_BAR = "{desc}: {percentage:3.0f}%|{bar}|"


class TranslationBar:
    """A progress bar fed by TranslateEvents, in percent of the translation with the time left (core/pace.py)."""

    def __init__(self, desc: str):
        self.desc, self.bar, self.estimated = desc, None, False

    def __call__(self, event) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=self.desc, dynamic_ncols=True, bar_format=PERCENT_BAR)
        from ..core.pace import duration, percent_done

        if event.seconds_left is not None:  # the core's own pace (core/pace.py), not tqdm's rate of percent
            self.bar.bar_format = f"{PERCENT_BAR} about {duration(event.seconds_left)} left"
        self.bar.update(percent_done(event.step, event.total) - self.bar.n)
        if event.seconds_left is not None and not self.estimated:
            self.estimated = True
            if event.seconds_left >= 20:  # a shorter run is over before the line is read
                self.bar.write(
                    f"{self.desc}: about {duration(event.seconds_left)} more on this computer (timed "
                    "on its first steps)",
                    file=sys.stderr,
                )
        if event.phase == "done":
            self.bar.close()
            if event.copied[0]:
                print(
                    f"{self.desc}: {event.copied[0]} of {event.copied[1]} tiles held no cell: copied, not "
                    "translated (--skip-background)."
                )


class CountingBar:
    """A progress bar moved by progress(done, total[, stage]) callbacks; it appears with the first one, so an error
    raised before any work is the only output. `percent`: shown in percent and time left, for counts that mean nothing
    to a user (a calibration's network calls). A step with a `stage` (a calibration's preparation, its scoring) is
    named instead of timed, and the time left is measured from the last such step."""

    def __init__(self, desc: str, percent: bool = False):
        self.desc, self.bar, self.percent = desc, None, percent

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        if self.bar is None:
            self.bar = progress_bar(total, self.desc, PERCENT_BAR if self.percent or stage else None)
        # tqdm has no public way to restart its clock without drawing 0% (reset): its own attributes, as reset sets
        # them (tqdm 4); tests/test_cli.py checks the time left that follows
        if stage:  # its clock starts again: the time left is the pace of what follows
            self.bar.start_t = self.bar.last_print_t = self.bar._time()
            self.bar.initial = done
        self.bar.bar_format = PERCENT_BAR if stage else f"{PERCENT_BAR} {{remaining}} left" if self.percent else None
        self.bar.set_description_str(f"{self.desc} ({stage})" if stage else self.desc, refresh=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
