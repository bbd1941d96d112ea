"""A sweep: one stack of images translated with many settings (strength x guidance x negative x inversion), each
result equal to a translation with that setting alone. One inversion per image serves the whole sweep: inverting to
the highest strength keeps every intermediate state, and a lower strength on the same grid regenerates from the
state it needs. `phendiff calibrate` scores a sweep; benchmarks/ compare its settings with the ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Generator, Sequence, TypeVar

import numpy as np

from .errors import ConfigError
from .options import TranslateOptions
from .translate import is_direct, translate
from .walk import network_steps


@dataclass(frozen=True)
class Setting:
    """One point of a sweep."""

    strength: float
    guidance: float = 1.0
    negative: str = "source"
    inversion: str = "ddim"
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def options(self, base: TranslateOptions) -> TranslateOptions:
        return TranslateOptions.from_record({**base.record(), **asdict(self)})

    def walk(self) -> Setting:
        """The setting as the walk runs it, for telling settings apart: without guidance the negative and the
        interval change nothing, and strengths and scales are compared to 6 decimals (0.1 + 0.2 is 0.3)."""
        guided = self.guidance != 1.0
        return Setting(
            round(self.strength, 6),
            round(self.guidance, 6),
            self.negative if guided else "source",
            self.inversion,
            (round(self.guidance_interval[0], 6), round(self.guidance_interval[1], 6)) if guided else (0.0, 1.0),
        )

    def label(self) -> str:
        guided = f"w {self.guidance:g} ({self.negative})" if self.guidance != 1.0 else "no guidance"
        if self.guidance != 1.0 and tuple(self.guidance_interval) != (0.0, 1.0):
            guided += f" in t/T {self.guidance_interval[0]:g}-{self.guidance_interval[1]:g}"
        return f"s {self.strength:g}, {guided}" + ("" if self.inversion == "ddim" else f", {self.inversion}")


def sweep(
    model,
    images: np.ndarray,
    source: str,
    target: str,
    settings: Sequence[Setting],
    base: TranslateOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Setting, np.ndarray]:
    """Translate a stack (N, C, Y, X) source -> target with every setting; {setting: stack in the input's dtype}."""
    pairs = sweep_pairs(model, images, source, [(target, s) for s in settings], base, progress)
    return {setting: result for (_, setting), result in pairs.items()}


def control_of(setting: Setting) -> Setting:
    """The source -> source translation that shows what `setting` changes anyway. Guidance against the source
    condition has no effect when the target is the source, so those controls are one per strength and inversion."""
    if setting.negative == "source":
        return Setting(setting.strength, 1.0, "source", setting.inversion)
    return setting


def with_controls(settings: Sequence[Setting], source: str, target: str) -> list[tuple[str, Setting]]:
    """The (condition, setting) pairs a calibration sweep translates: every setting to `target` and its source ->
    source control, each once."""
    return list(dict.fromkeys([(target, s) for s in settings] + [(source, control_of(s)) for s in settings]))


def sweep_pairs(
    model,
    images: np.ndarray,
    source: str,
    pairs: Sequence[tuple[str, Setting]],
    base: TranslateOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[tuple[str, Setting], np.ndarray]:
    """`iter_sweep_pairs` to its end, `progress(done, total)` after each pair (in network calls)."""
    return follow(iter_sweep_pairs(model, images, source, pairs, base), progress)


def iter_sweep_pairs(
    model,
    images: np.ndarray,
    source: str,
    pairs: Sequence[tuple[str, Setting]],
    base: TranslateOptions | None = None,
    of: int | None = None,
    after: int = 0,
) -> Generator[tuple[int, int], None, dict[tuple[str, Setting], np.ndarray]]:
    """Translate a stack (N, C, Y, X) of `source` images to each (target condition, setting) of `pairs`, yielding
    (done, `of`) after each, counted in network calls (`sweep_calls`) from `after` (a caller's steps before these;
    `of`: `after` + the sweep's calls, or a caller's total that counts steps of its own after these); returns
    {(target, setting): stack in the input's dtype}, each equal to `translate` with that setting alone.

    Every pair goes through `iter_translate` with one inversion cache: pairs run deepest strength first within each
    inversion method, so the images are inverted once per method and every other pair regenerates from the
    state it needs.
    """
    if is_direct(model):
        raise ConfigError("A CycleGAN has no strength or guidance to calibrate.")
    base = (base or TranslateOptions()).validate()
    order = in_sweep_order(pairs)
    calls = _pair_calls(order, base)
    stack = np.asarray(images)
    cache: dict = {}
    results = {}
    done, total = after, of or after + sum(calls)
    for (target, setting), cost in zip(order, calls):
        results[(target, setting)] = translate(model, stack, source, target, setting.options(base), cache=cache)
        done += cost
        yield done, total
    return {pair: results[pair] for pair in dict.fromkeys(pairs)}


def in_sweep_order(pairs: Sequence[tuple[str, Setting]]) -> list[tuple[str, Setting]]:
    """The pairs, each once, in the order a sweep runs them: deepest strength first within each inversion method."""
    return sorted(dict.fromkeys(pairs), key=lambda p: (p[1].inversion, -p[1].strength))


def sweep_calls(pairs: Sequence[tuple[str, Setting]], base: TranslateOptions) -> int:
    """The network calls (per image) of a sweep of `pairs`: what its progress counts, so that its pace holds from the
    deep pairs to the shallow ones (counted in pairs, a calibration's time left read 5x too long at the start)."""
    return sum(_pair_calls(in_sweep_order(pairs), base))


def _pair_calls(order: list[tuple[str, Setting]], base: TranslateOptions) -> list[int]:
    """Network calls of each pair, in sweep order: the first pair of each inversion method inverts to the deepest
    strength, and every pair regenerates over its strength's steps, a guided one through both branches. Counted
    here, before anything runs, rather than timed (estimate.py): a step that reuses deep features counts as a call
    though it is cheaper, and a guidance interval (fewer guided steps) is not counted."""
    calls, inverted = [], set()
    for _, setting in order:
        options = setting.options(base)
        inverse, forward = network_steps(options)
        calls.append((0 if options.inversion in inverted else inverse) + forward * (2 if options.guided else 1))
        inverted.add(options.inversion)
    return calls


Value = TypeVar("Value")


def relabelled(events: Generator[Any, None, Value], label: Callable[[Any], Any]) -> Generator[Any, None, Value]:
    """A generator's steps as `label(step)`, its value returned; however this ends (closed, or `label` raised), it
    closes the generator, so that its clean-up (locks) runs at once."""
    try:
        while True:
            try:
                step = next(events)
            except StopIteration as stop:
                return stop.value
            yield label(step)
    finally:
        events.close()


def follow(events: Generator[tuple, None, Value], progress: Callable[..., None] | None) -> Value:
    """Run a generator of (done, total[, stage]) steps to its end, telling `progress(*step)` each; return the
    generator's value. A progress that raised (an interrupt) still lets the generator clean up."""
    steps = relabelled(events, (lambda step: progress(*step)) if progress else _ignored)
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def _ignored(step) -> None:
    return None
