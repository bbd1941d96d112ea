"""PhenDiff image-to-image translation, the engine: every translation (CLI, docks, batch, calibrate, explore,
evaluate) runs through `iter_translate`.

A translation inverts each image under the source condition and regenerates it under the target: the DDIM (or
exact BDIA) walk and its equations are in core/walk.py, strength and guidance included. Here: the options resolved
(given > calibrated > model default > default), the field cut as core/tiling.py plans it (whole fields when they fit
the device's memory budget, tiles of the model's size with 25% overlap blended by linear ramps beyond it, background
tiles copied), the walk run tile batch by tile batch with a TranslateEvent after every network step, kept channels
pasted back, and the tiles put back together (core/assembly.py) into the result in the input's shape and dtype.
The estimate of a run's time before it starts is core/estimate.py.

Memory: beyond the input and the result (in the input's dtype), a translation holds one batch of tiles, the
tiles translated ahead of the blending (tiles arrive in batches of translated ones; copied ones are read when
their turn comes) and one tile's height of blended rows per target: no normalised or padded copy of a field is made
(docs/benchmarks.md huge_field: a 20000 x 20000 field).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, Iterator, Sequence

import numpy as np
import torch

from .assembly import Assembly
from .device import settled_precision
from .errors import ConfigError
from .models import KINDS
from .models.base import ConditionedModel, DiffusionModel, is_direct
from .options import TranslateOptions, resolve_options
from .pace import Pace
from .tiling import TilePlan, plan_tiles
from .walk import Inverted, autocast_dtype, generate, invert, network_steps


@dataclass(frozen=True)
class TranslateEvent:
    """Progress of a translation: `phase` is "invert", "generate" or "done"; the "done" event carries `result`."""

    phase: str
    step: int
    total: int
    target: str | None = None
    result: Any = None
    reused: bool = False  # "done" only: every inversion came from the cache, none was run again
    copied: tuple[int, int] = (0, 0)  # "done" only: tiles copied as background, of all tiles (skip_background)
    seconds_left: float | None = None  # from the pace of the steps so far (core/pace.py); None before the second


def translate(
    model: ConditionedModel,
    images: np.ndarray,
    source: str,
    target: str | Sequence[str],
    options: TranslateOptions | None = None,
    *,
    progress: Callable[[TranslateEvent], None] | None = None,
    cache: dict | None = None,
    **overrides,
):
    """Translate images from `source` to `target`; see `iter_translate` for the options and the cache.

    Returns an array of the input's shape and dtype, or {target: array} when `target` is a list.
    `progress`, if given, is called with every TranslateEvent (e.g. to advance a progress bar).
    """
    for event in iter_translate(model, images, source, target, options, cache=cache, **overrides):
        if progress is not None:
            progress(event)
        if event.phase == "done":
            return event.result
    raise RuntimeError("translation stopped before it finished")  # unreachable unless the generator is broken


def translation_options(
    model, source: str, target: str, options: TranslateOptions | None = None, **overrides
) -> tuple[TranslateOptions, dict[str, str]]:
    """The options a translation runs with, and where each came from ("given", "calibrated", "model default",
    "default").

    A TranslateOptions object is taken as given in full; keyword overrides are laid over the checkpoint's
    calibrated setting for this direction (if any), then over the model's default, then over the project defaults.
    """
    if options is not None:
        chosen, sources = replace(options, **overrides).validate(), {name: "given" for name in options.record()}
    else:
        chosen, sources = resolve_options(getattr(model, "manifest", None), source, target, overrides)
    return settled(chosen, model.kind, model.device), sources


def settled(options: TranslateOptions, kind: str, device: torch.device) -> TranslateOptions:
    """The options with every "auto" made what it means for this kind of model on `device` (precision: bf16 where
    the CPU computes it natively; deep cache: the kind's, models.KINDS), so what runs and what is recorded agree."""
    options = settled_precision(options, device)
    if options.deep_cache is None:
        options = replace(options, deep_cache=KINDS[kind].deep_cache if kind in KINDS else 1)
    return options


def iter_translate(
    model: ConditionedModel,
    images: np.ndarray,
    source: str,
    target: str | Sequence[str],
    options: TranslateOptions | None = None,
    *,
    cache: dict | None = None,
    **overrides,
) -> Iterator[TranslateEvent]:
    """Translate step by step, yielding a TranslateEvent after every network step and a final "done" event.

    images: one image (C, Y, X), a stack (N, C, Y, X), or (Y, X) for a one-channel model, in any dtype.
    target: a condition, or a list of conditions (one inversion then serves all of them; the options are those of
    the first direction).
    options: a TranslateOptions, or its fields as keywords (steps, strength, guidance, negative, guidance_interval,
    inversion, eta, seed, batch_size, precision, tiles; see core/options.py). Unset fields take the checkpoint's
    calibrated setting for this direction, else the project defaults.
    cache: a dict the caller keeps between calls: the inversions of these images are kept in it (every level), so
    another target, guidance, seed or a lower strength on the same grid regenerates without inverting again (the
    done event says `reused`). It holds the inversions of one set of images; other images replace them.
    Every option is checked before any work. Closing the generator stops the work between two steps; nothing
    partial is returned.
    """
    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise ConfigError("Give at least one target condition.")
    options, _ = translation_options(model, source, targets[0], options, **overrides)
    dtype = autocast_dtype(options.precision)
    source_index = model.condition_index(source)
    target_indices = [model.condition_index(t) for t in targets]
    keep = kept_channels(model, options.keep_channels)
    assert options.deep_cache is not None  # settled by translation_options
    if options.deep_cache > 1 and isinstance(model, DiffusionModel):
        model.deep_feature_cache()  # refuses a kind that cannot reuse deep features, before any work
    plan = plan_tiles(model, images, options)
    batches = [plan.jobs[i : i + plan.batch_size] for i in range(0, len(plan.jobs), plan.batch_size)]
    direct = is_direct(model)
    inversions = _cached_inversions(cache, model, plan, source_index, options, direct)
    reused = _all_inverted(inversions, len(batches), options)
    total, pace = _step_counts(len(batches), len(plan.jobs), len(targets), options, direct, reused)
    generator = torch.Generator("cpu").manual_seed(options.seed)
    walk = _Walk(source_index, targets, target_indices, options, keep, total, dtype, generator, inversions)
    assembly = Assembly(model, plan, targets, keep)
    done = 0
    for b, batch in enumerate(batches):
        clean = torch.from_numpy(plan.read(batch)).to(model.device)
        work = _mapped_batch(model, walk, clean, done) if direct else _diffusion_batch(model, walk, clean, done, b)
        outs, done = yield from pace.follow(work, len(batch))
        assembly.add(batch, outs)
    results = assembly.finish()
    yield TranslateEvent(
        "done",
        total,
        total,
        result=results if not isinstance(target, str) else results[target],
        reused=reused,
        copied=(len(plan.copied), len(plan.copied) + len(plan.jobs)),
    )


@dataclass(frozen=True)
class _Walk:
    """What every batch of one translation shares: its conditions (the model's indices), options and kept channels,
    the events of the whole run, and the inversions kept in the cache."""

    source: int
    targets: list[str]
    indices: list[int]  # of the targets
    options: TranslateOptions
    keep: list[int]
    total: int
    dtype: torch.dtype | None = None
    generator: torch.Generator | None = None
    inversions: dict | None = None


def _all_inverted(inversions: dict | None, batches: int, options: TranslateOptions) -> bool:
    """Whether the cache holds every batch's inversion, deep enough for this walk: none is run again."""
    depth = network_steps(options)[0]
    return (
        inversions is not None
        and bool(batches)
        and all(inversions.get(b) is not None and inversions[b].depth >= depth for b in range(batches))
    )


def _step_counts(
    batches: int, tiles: int, targets: int, options: TranslateOptions, direct: bool, reused: bool
) -> tuple[int, Pace]:
    """The events a run yields (one per network step of a batch) and the Pace that times them (network steps of
    each phase per tile): a direct model maps each batch once per target; a reused inversion is not run."""
    inverse_steps, forward_steps = network_steps(options)
    total = batches * (targets if direct else (0 if reused else inverse_steps) + forward_steps * targets)
    pace = Pace(
        0 if direct or reused else tiles * inverse_steps,
        tiles * targets * (1 if direct else forward_steps),
        cycle=1 if direct else min(options.deep_cache or 1, forward_steps),
    )
    return total, pace


def _cached_inversions(
    cache: dict | None, model, plan: TilePlan, source: int, options: TranslateOptions, direct: bool
) -> dict | None:
    """The per-batch inversions kept in `cache` for these images and this walk (None: no cache, or nothing to
    invert). The key is everything an inversion depends on; the seed, target and guidance are not."""
    if cache is None or direct:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for field in plan.fields:  # one field at a time: a large stack is not copied whole
        digest.update(np.ascontiguousarray(field).data)
    key = (
        id(model),
        digest.hexdigest(),
        plan.fields.shape,
        str(plan.fields.dtype),
        source,
        options.steps,
        options.inversion,
        options.precision,
        plan.tiles,
        plan.batch_size,
        options.skip_background,
    )
    if cache.get("key") != key:
        cache.clear()
        cache.update(key=key, inversions={})
    return cache["inversions"]


def _diffusion_batch(
    model, walk: _Walk, clean: torch.Tensor, done: int, index: int
) -> Generator[TranslateEvent, None, tuple[dict[str, np.ndarray], int]]:
    """Batch `index` inverted under the source condition (or its inversion taken from the cache), then regenerated
    under each target: yields events, returns ({target: array}, steps done so far)."""
    options, inversions = walk.options, walk.inversions
    inverse_steps, forward_steps = network_steps(options)
    inverted = (inversions or {}).get(index)
    if inverted is None or inverted.depth < inverse_steps:
        with torch.inference_mode():
            start = model.encode(clean)
        inversion = invert(
            model,
            start,
            walk.source,
            options.steps,
            strength=options.strength,
            method=options.inversion,
            dtype=walk.dtype,
            keep=inversions is not None or bool(options.keep_channels),
        )
        inverted = yield from _count(inversion, "invert", done, walk.total, None)
        done += inverse_steps
        if inversions is not None:
            inversions[index] = inverted
    outs: dict[str, np.ndarray] = {}
    for name, target in zip(walk.targets, walk.indices):
        generation = regenerate(
            model, inverted, target, walk.source, options, generator=walk.generator, dtype=walk.dtype
        )
        end = yield from _count(generation, "generate", done, walk.total, name)
        with torch.inference_mode():
            outs[name] = model.decode(end).float().cpu().numpy()
        paste_kept(outs[name], clean, walk.keep)
        done += forward_steps
    return outs, done


def _mapped_batch(
    model, walk: _Walk, clean: torch.Tensor, done: int
) -> Generator[TranslateEvent, None, tuple[dict[str, np.ndarray], int]]:
    """A direct mapping (CycleGAN's generators): one step per target; kept channels are copied from the input."""
    outs: dict[str, np.ndarray] = {}
    for name, target in zip(walk.targets, walk.indices):
        with torch.inference_mode():
            outs[name] = model.map(clean, walk.source, target).float().cpu().numpy()
        paste_kept(outs[name], clean, walk.keep)
        done += 1
        yield TranslateEvent("generate", done, walk.total, name)
    return outs, done


def _count(steps_iter, phase: str, offset: int, total: int, target: str | None):
    """Turn the bare per-step yields of invert/generate into TranslateEvents; pass their return value through."""
    step = offset
    try:
        while True:
            next(steps_iter)
            step += 1
            yield TranslateEvent(phase, step, total, target)
    except StopIteration as stop:
        return stop.value


def negative_label(model, negative: str, source: int) -> int:
    """The condition index of guidance's negative branch."""
    return source if negative == "source" else model.null_condition


def regenerate(
    model,
    inverted: "Inverted",
    target: int,
    source: int,
    options: TranslateOptions,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
):
    """`generate` from an inversion under the target condition with the options' strength, guidance and kept
    channels."""
    return generate(
        model,
        inverted,
        target,
        options.steps,
        strength=options.strength,
        guidance=options.guidance,
        negative=negative_label(model, options.negative, source),
        interval=options.guidance_interval,
        eta=options.eta,
        generator=generator,
        dtype=dtype,
        keep=model.kept_in_walk(kept_channels(model, options.keep_channels)),
        deep_cache=options.deep_cache or 1,
    )


def paste_kept(out: np.ndarray, clean: torch.Tensor, keep: Sequence[int]) -> None:
    """The kept channels of a translation (N, C, H, W) set to the input's, exactly: a pixel-space walk already ends
    there (a no-op); a latent walk with channel slots ends at their own latents, whose decoding this replaces by the
    original; an autoencoder that mixes the channels (Stable Diffusion's) cannot hold them in the walk, so they are
    only pasted after decoding (the other channels were regenerated around the autoencoder's reconstruction of them);
    a direct model copies them."""
    if keep:
        out[:, list(keep)] = clean[:, list(keep)].float().cpu().numpy()


def kept_channels(model: ConditionedModel, names: Sequence[str]) -> list[int]:
    """The indices of the channels a translation keeps, checked against the checkpoint (ConfigError)."""
    if not names:
        return []
    channels = list(model.channel_names)
    unknown = [name for name in names if name not in channels]
    if unknown:
        raise ConfigError(f"keep_channels {', '.join(unknown)}: the checkpoint's channels are {', '.join(channels)}.")
    if len(names) == len(channels):
        raise ConfigError(
            f"keep_channels names every channel ({', '.join(channels)}): nothing would be translated. "
            "Keep only the channels the conditions do not change."
        )
    return [channels.index(name) for name in names]
