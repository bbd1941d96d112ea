"""PhenDiff image-to-image translation: DDIM inversion under the source condition, DDIM generation under the target.

With alpha_t the cumulative product of (1 - beta) up to timestep t and eps(x, t, c) the noise predicted by the
UNet for condition c, one deterministic DDIM step (eta = 0) from noise level t to level t' is

    x0_hat = (x_t - sqrt(1 - alpha_t) * eps(x_t, t, c)) / sqrt(alpha_t)          # the clean image it implies
    x_t'   = sqrt(alpha_t') * x0_hat + sqrt(1 - alpha_t') * eps(x_t, t, c)      # re-noised to level t'

(a v-predicting model gives x0_hat and eps from v the usual way). Generation walks the grid t' = t - T/steps down to
a clean image with c = target (diffusers DDIMScheduler); inversion walks the same grid upwards with c = source
(DDIMInverseScheduler). Regenerating with the target condition keeps what the model does not tie to the condition
(cell positions, shapes, texture) and changes what it does: the phenotype.

Strength s (0 < s <= 1) inverts only the first k = round(s * steps) steps of the grid, to noise level t ~ s * T, and
regenerates from there over the same k steps: s = 1 is the original PhenDiff (DDIB) translation; lower values keep
more of the image. Guidance contrasts the target with a negative branch (both in one network call):

    eps = eps(x, t, negative) + w * (eps(x, t, target) - eps(x, t, negative))        # on v alike

where the negative is the null condition (classifier-free guidance) or the source condition (what differs between
the two conditions), optionally only for noise levels t/T within an interval (Kynkaanniemi et al. 2024).

Exact inversion (BDIA, Zhang et al. 2023) replaces each DDIM step from z_i by an update that also uses the state
before it,  z_{i-1} = z_{i+1} - D(z_i; i -> i+1) + D(z_i; i -> i-1),  with D the DDIM map above from the one network
call at z_i. Solved for z_{i+1} it runs backwards exactly, so inversion followed by regeneration with the source
condition gives the image back up to float rounding, at the cost of plain DDIM.

Fields are translated whole when they fit the device's memory budget and in tiles of the model's size beyond it
(25% overlap, blended with linear ramps), so memory stays bounded for any field (docs/method.md measures seams).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .models.base import ConditionedModel, DiffusionModel, DirectModel
from .errors import ConfigError, DataError, PhenDiffWarning
from .images import check_finite, resize_fields
from .options import TranslateOptions, grid_steps, resolve_options
from .pace import Pace
from .tiling import TILE_OVERLAP, blend_weights, occupied, pad_to, windows as tile_windows

SAMPLE_STEPS = 50  # generating from pure noise (previews, generalization): the full-schedule choice of method.md
# Memory for whole fields: what the network's activations may take. On a GPU half of the free memory; on a CPU a
# fixed budget, because whole fields were faster than tiles on this project's CPU up to 384 px but slower from
# 512 px (docs/benchmarks.md, large_fields and field_memory).
CPU_BUDGET_BYTES = 512 * 2**20
GPU_BUDGET_FRACTION = 0.5


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


def translate(model: ConditionedModel, images: np.ndarray, source: str, target: str | Sequence[str],
              options: TranslateOptions | None = None, *,
              progress: Callable[[TranslateEvent], None] | None = None, cache: dict | None = None, **overrides):
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


def translation_options(model, source: str, target: str, options: TranslateOptions | None = None,
                        **overrides) -> tuple[TranslateOptions, dict[str, str]]:
    """The options a translation runs with, and where each came from ("given", "calibrated", "model default",
    "default").

    A TranslateOptions object is taken as given in full; keyword overrides are laid over the checkpoint's
    calibrated setting for this direction (if any), then over the model's default, then over the project defaults.
    """
    if options is not None:
        return replace(options, **overrides).validate(), {name: "given" for name in options.record()}
    return resolve_options(getattr(model, "manifest", None), source, target, overrides)


def iter_translate(model: ConditionedModel, images: np.ndarray, source: str, target: str | Sequence[str],
                   options: TranslateOptions | None = None, *, cache: dict | None = None,
                   **overrides) -> Iterator[TranslateEvent]:
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
    plan = plan_tiles(model, images, options)
    stack, padded, windows, jobs, copied, batch_size = (plan.stack, plan.padded, plan.windows, plan.jobs,
                                                        plan.copied, plan.batch_size)
    tiles, resized, (height, width) = plan.tiles, plan.resized, plan.size
    batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
    direct = is_direct(model)
    inverse_steps, forward_steps = network_steps(options)
    inversions = _cached_inversions(cache, model, padded, source_index, options, tiles, batch_size, direct)
    reused = inversions is not None and bool(batches) and all(
        inversions.get(b) is not None and inversions[b].depth >= inverse_steps for b in range(len(batches)))
    total = len(batches) * (len(targets) if direct else
                            (0 if reused else inverse_steps) + forward_steps * len(targets))

    pace = Pace(0 if direct or reused else len(jobs) * inverse_steps,
                len(jobs) * len(targets) * (1 if direct else forward_steps))
    ramp = blend_weights(windows[0][2], windows[0][3], tiles)
    canvas = {t: np.zeros(padded.shape, np.float32) for t in targets}
    weight = np.zeros((len(padded), 1) + padded.shape[-2:], np.float32)
    generator = torch.Generator("cpu").manual_seed(options.seed)
    done = 0
    for b, batch in enumerate(batches):
        clean = torch.from_numpy(np.stack([padded[n, :, y:y + h, x:x + w] for n, (y, x, h, w) in batch]))
        clean = clean.to(model.device)
        if direct:
            work = _mapped_batch(model, clean, source_index, targets, target_indices, done, total, keep)
        else:
            work = _diffusion_batch(model, clean, source_index, targets, target_indices, options, done, total,
                                    dtype=dtype, generator=generator, inversions=inversions, index=b)
        outs, done = yield from pace.follow(work, len(batch))
        for name, out in outs.items():
            for tile, (n, (y, x, h, w)) in zip(out, batch):
                canvas[name][n, :, y:y + h, x:x + w] += tile * ramp
        for n, (y, x, h, w) in batch:
            weight[n, :, y:y + h, x:x + w] += ramp
    for n, (y, x, h, w) in copied:
        for name in targets:
            canvas[name][n, :, y:y + h, x:x + w] += padded[n, :, y:y + h, x:x + w] * ramp
        weight[n, :, y:y + h, x:x + w] += ramp
    plan.padded = padded = None  # the normalised input is no longer needed: free it before the outputs are made
    results = {}
    for name in targets:
        blended = canvas.pop(name)  # in place, and freed once cast back: a large field holds one canvas at a time
        blended /= weight
        blended = blended[..., :height, :width]
        if resized:
            blended = resize_fields(blended, stack.shape[-2:])
            blended[:, keep] = model.normalization.forward(stack)[:, keep]  # kept channels: the original's pixels
        results[name] = plan.restore(model.normalization.inverse(blended, stack.dtype))
    yield TranslateEvent("done", total, total, result=results if not isinstance(target, str) else results[target],
                         reused=reused, copied=(len(copied), len(copied) + len(jobs)))


@dataclass
class TilePlan:
    """How a translation cuts its images: the normalised, padded stack (N, C, Y, X), its windows, the tiles it
    translates (`jobs`: (image, window)) and those it copies as background, in batches of `batch_size`."""

    stack: np.ndarray       # the input as a stack, its own dtype
    restore: Callable       # a stack back into the input's shape
    padded: np.ndarray      # normalised (and resized for a resize-trained model), padded to whole tiles
    size: tuple[int, int]   # (height, width) of the normalised field before padding
    resized: bool
    tiles: bool
    windows: list
    jobs: list
    copied: list
    batch_size: int


def plan_tiles(model: ConditionedModel, images: np.ndarray, options: TranslateOptions) -> TilePlan:
    """The tiles and batches a translation of `images` with `options` runs (no network call)."""
    stack, restore = _as_stack(images, model)
    scaled = model.normalization.forward(stack)
    field_size = scaled.shape[-2:]
    resized = trained_on_resized(model) and field_size != (model.image_size, model.image_size)
    if resized:  # the model learned whole images scaled to its size: it is shown them so, and its output scaled back
        if options.tiles:
            raise ConfigError(f"{model.path}: trained on whole images scaled to {model.image_size} px (resize), it "
                              "translates whole images; leave tiles unset.")
        scaled = resize_fields(scaled, (model.image_size, model.image_size))
    tiles = (False if resized else options.tiles if options.tiles is not None
             else not fits_whole(model, scaled.shape, options.batch_size))
    padded, size = pad_to(scaled, model.image_size if tiles else 0, model.size_multiple)
    windows = tile_windows(padded.shape[-2:], model.image_size, tiles)
    jobs = [(n, window) for n in range(len(padded)) for window in windows]
    copied = []
    if tiles and options.skip_background:  # tiles with no cell near them keep the original's pixels
        held = occupied(padded, windows, margin=int(model.image_size * TILE_OVERLAP)).ravel()  # in the jobs' order
        copied = [job for job, cells in zip(jobs, held) if not cells]
        jobs = [job for job, cells in zip(jobs, held) if cells]
    batch_size = options.batch_size or default_batch_size(model, windows[0][2:], tiles)
    return TilePlan(stack, restore, padded, size, resized, tiles, windows, jobs, copied, batch_size)


@dataclass(frozen=True)
class Estimate:
    """How long a translation will take on this computer, before it starts."""

    seconds: float
    tiles: int    # tiles (or whole images) it translates
    copied: int   # tiles it copies as background
    calls: int    # network calls of the whole run
    pixels: int = 0  # pixels of the tiles it translates (tiles x tile area)


def estimate_translation(model: ConditionedModel, images: np.ndarray, source: str, target: str | Sequence[str],
                         options: TranslateOptions | None = None, *, seconds_per_pixel: float | None = None,
                         **overrides) -> Estimate:
    """The seconds `iter_translate` will take with these arguments, from timing the network on one batch of the
    run's own tiles: one call at the shape of a guided step (both branches; the first call of a shape pays set-up
    and is not counted), taken per tile and branch for the inversion and the generation steps of the run, plus
    encoding and decoding. It costs two network calls; benchmarks/laptop_field.py compares it with the measured
    time. `seconds_per_pixel` (an earlier estimate's seconds over its pixels) skips the timing: how a folder's
    other files are estimated. An inversion kept in a cache is not counted."""
    targets = [target] if isinstance(target, str) else list(target)
    options, _ = translation_options(model, source, targets[0], options, **overrides)
    plan = plan_tiles(model, images, options)
    if not plan.jobs:
        return Estimate(0.0, 0, len(plan.copied), 0)
    direct = is_direct(model)
    inverse_steps, forward_steps = network_steps(options)
    batches = -(-len(plan.jobs) // plan.batch_size)
    calls = batches * len(targets) if direct else batches * (inverse_steps + forward_steps * len(targets))
    pixels = len(plan.jobs) * plan.windows[0][2] * plan.windows[0][3]
    if seconds_per_pixel is not None:
        return Estimate(seconds_per_pixel * pixels, len(plan.jobs), len(plan.copied), calls, pixels)
    batch = plan.jobs[:plan.batch_size]
    clean = torch.from_numpy(np.stack([plan.padded[n, :, y:y + h, x:x + w] for n, (y, x, h, w) in batch]))
    clean = clean.to(model.device)
    source_index, target_index = model.condition_index(source), model.condition_index(targets[0])
    with torch.inference_mode():
        if direct:
            model.map(clean, source_index, target_index)  # the first call of a shape pays its set-up: not counted
            started = time.perf_counter()
            model.map(clean, source_index, target_index)
            per_tile = (time.perf_counter() - started) / len(batch) * len(targets)
            return Estimate(per_tile * len(plan.jobs), len(plan.jobs), len(plan.copied), calls, pixels)
        dtype = autocast_dtype(options.precision)
        branches = 2 if options.guidance != 1.0 else 1  # a guided step runs both branches in one call
        labels = torch.full((len(batch) * branches,), source_index, device=model.device)
        started = time.perf_counter()
        x = model.encode(clean)
        model.decode(x)
        coding = time.perf_counter() - started
        x = torch.cat([x] * branches)
        t = torch.tensor(model.scheduler_config["num_train_timesteps"] // 2, device=model.device)
        _predict(model, x, t, labels, dtype)  # the first call of a shape pays its set-up: not counted
        started = time.perf_counter()
        _predict(model, x, t, labels, dtype)
        per_branch = (time.perf_counter() - started) / (len(batch) * branches)  # one tile through the network once
    per_tile = per_branch * (inverse_steps + forward_steps * branches * len(targets)) + coding / len(batch)
    return Estimate(per_tile * len(plan.jobs), len(plan.jobs), len(plan.copied), calls, pixels)


def trained_on_resized(model) -> bool:
    """Whether the checkpoint learned whole images scaled to its image size (`phendiff train --resize`)."""
    return bool(((getattr(model, "manifest", None) or {}).get("training") or {}).get("resize"))


def _cached_inversions(cache: dict | None, model, padded: np.ndarray, source: int, options: TranslateOptions,
                       tiles: bool, batch_size: int, direct: bool) -> dict | None:
    """The per-batch inversions kept in `cache` for these images and this walk (None: no cache, or nothing to
    invert). The key is everything an inversion depends on; the seed, target and guidance are not."""
    if cache is None or direct:
        return None
    digest = hashlib.blake2b(padded.tobytes(), digest_size=16).hexdigest()
    key = (id(model), digest, padded.shape, source, options.steps, options.inversion, options.precision, tiles,
           batch_size, options.skip_background)
    if cache.get("key") != key:
        cache.clear()
        cache.update(key=key, inversions={})
    return cache["inversions"]


def is_direct(model) -> bool:
    """A direct mapping between conditions (CycleGAN's generators) rather than a diffusion model."""
    return isinstance(model, DirectModel)


def _diffusion_batch(model, clean: torch.Tensor, source: int, targets: list[str], indices: list[int],
                     options: TranslateOptions, done: int, total: int, dtype: torch.dtype | None = None,
                     generator: torch.Generator | None = None, inversions: dict | None = None, index: int = 0):
    """Invert one batch under the source condition (or take its inversion from `inversions`), regenerate it under
    each target: yields events, returns ({target: array}, steps done so far)."""
    inverse_steps, forward_steps = network_steps(options)
    inverted = (inversions or {}).get(index)
    if inverted is None or inverted.depth < inverse_steps:
        with torch.inference_mode():
            start = model.encode(clean)
        inversion = invert(model, start, source, options.steps, strength=options.strength, method=options.inversion,
                           dtype=dtype, keep=inversions is not None or bool(options.keep_channels))
        inverted = yield from _count(inversion, "invert", done, total, None)
        done += inverse_steps
        if inversions is not None:
            inversions[index] = inverted
    outs = {}
    for name, index in zip(targets, indices):
        generation = regenerate(model, inverted, index, source, options, generator=generator, dtype=dtype)
        end = yield from _count(generation, "generate", done, total, name)
        with torch.inference_mode():
            outs[name] = model.decode(end).float().cpu().numpy()
        paste_kept(outs[name], clean, kept_channels(model, options.keep_channels))
        done += forward_steps
    return outs, done


def _mapped_batch(model, clean: torch.Tensor, source: int, targets: list[str], indices: list[int], done: int,
                  total: int, keep: Sequence[int] = ()):
    """A direct mapping (CycleGAN's generators): one step per target; kept channels are copied from the input."""
    outs = {}
    for name, index in zip(targets, indices):
        with torch.inference_mode():
            outs[name] = model.map(clean, source, index).float().cpu().numpy()
        paste_kept(outs[name], clean, keep)
        done += 1
        yield TranslateEvent("generate", done, total, name)
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


def regenerate(model, inverted: "Inverted", target: int, source: int, options: TranslateOptions,
               generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
    """`generate` from an inversion under the target condition with the options' strength, guidance and kept
    channels."""
    return generate(model, inverted, target, options.steps, strength=options.strength, guidance=options.guidance,
                    negative=negative_label(model, options.negative, source), interval=options.guidance_interval,
                    eta=options.eta, generator=generator, dtype=dtype,
                    keep=model.kept_in_walk(kept_channels(model, options.keep_channels)))


def paste_kept(out: np.ndarray, clean: torch.Tensor, keep: Sequence[int]) -> None:
    """The kept channels of a translation (N, C, H, W) set to the input's, exactly: a pixel-space walk already ends
    there (a no-op); a latent model's autoencoder mixes the channels, so they are pasted after decoding (the other
    channels were regenerated around the autoencoder's reconstruction of them); a direct model copies them."""
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
        raise ConfigError(f"keep_channels names every channel ({', '.join(channels)}): nothing would be translated. "
                          "Keep only the channels the conditions do not change.")
    return [channels.index(name) for name in names]


# --- the DDIM walk ------------------------------------------------------------------------------------------------

@dataclass
class Inverted:
    """Where an inversion ended: the noisy state after each of its steps (index 0: the clean start).

    `start(k)` gives what regeneration over the last k steps of the grid starts from: the state after k inversion
    steps (DDIM), or that state and the one before it (BDIA needs both).
    """

    states: list[torch.Tensor]
    method: str
    steps: int

    @property
    def depth(self) -> int:
        return len(self.states) - 1

    def start(self, k: int):
        """(state, upper) for a regeneration over the last k grid steps; upper is the state one level above,
        which BDIA's update needs (None for DDIM, and for a one-step BDIA walk, whose only step is plain DDIM)."""
        if not 1 <= k <= self.depth:
            raise ConfigError(f"This inversion went {self.depth} step(s) deep; it cannot start a regeneration of "
                              f"{k} steps. Invert with a higher strength.")
        if self.method == "bdia" and k >= 2:
            return self.states[k - 1], self.states[k]
        return self.states[k], None


def network_steps(options: TranslateOptions) -> tuple[int, int]:
    """Network calls of one inversion and of one regeneration (BDIA's regeneration starts one level lower, from
    the last two inverted states, so it needs one call fewer)."""
    k = options.run_steps
    return k, (max(1, k - 1) if options.inversion == "bdia" else k)


@torch.inference_mode()
def invert(model: DiffusionModel, x: torch.Tensor, condition: int, steps: int, *, strength: float = 1.0,
           method: str = "ddim", dtype: torch.dtype | None = None, keep: bool = False):
    """Invert clean images x (normalised, B,C,H,W) under `condition` over the first strength x steps of the grid.

    Yields after every step and returns an Inverted. keep=True keeps every intermediate state, so one inversion
    also serves every lower strength on the same grid (sweeps, morphs); otherwise only the last two are kept.
    """
    depth = grid_steps(steps, strength)
    scheduler = DDIMInverseScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=x.device)
    labels = torch.full((x.shape[0],), condition, device=x.device)
    states = [x]
    if method == "ddim":
        for t in scheduler.timesteps[:depth]:
            eps = _predict(model, x, t, labels, dtype)
            x = scheduler.step(eps, t, x).prev_sample
            states.append(x)
            if not keep:
                states[:-2] = [None] * (len(states) - 2)
            yield
    elif method == "bdia":
        grid = _Grid(model.scheduler_config, steps, x.device)
        # z_0 from the clean image: one plain DDIM inversion step (its accuracy does not matter for exactness)
        eps = _predict(model, x, grid.timesteps[0], labels, dtype)
        x = grid.ddim(x, eps, -1, 0)
        states.append(x)
        yield
        for i in range(depth - 1):  # z_{i+1} = z_{i-1} - D(z_i; i -> i-1) + D(z_i; i -> i+1)
            eps = _predict(model, x, grid.timesteps[i], labels, dtype)
            x = states[-2] - grid.ddim(x, eps, i, i - 1) + grid.ddim(x, eps, i, i + 1)
            states.append(x)
            if not keep:
                states[:-2] = [None] * (len(states) - 2)
            yield
    else:
        raise ConfigError(f"Unknown inversion {method!r}.")
    return Inverted(states, method, steps)


@torch.inference_mode()
def generate(model: DiffusionModel, start: Inverted | torch.Tensor, condition: int, steps: int, *,
             strength: float = 1.0, guidance: float | None = None, negative: int | None = None,
             interval: tuple[float, float] = (0.0, 1.0), eta: float = 0.0,
             generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
             keep: Sequence[int] = ()):
    """DDIM generation under `condition` over the last strength x steps of the grid; returns x_0.

    start: an Inverted (from `invert`, at least as deep) or plain noise x_T (strength 1).
    guidance: scale w (None or 1: none); negative: the condition index of the negative branch (default: null).
    interval: guidance only where t / T lies within it.
    keep: channels replaced after every step by the inversion's state at the same level (an Inverted with every
    state kept), so they end as the original's and the other channels are generated around them. This is the
    replacement method of conditional sampling (Song et al. 2021, "Score-based generative modeling through SDEs",
    imputation); written here because diffusers' schedulers have no channel replacement.
    """
    depth = grid_steps(steps, strength)
    keep = list(keep)
    if keep and (not isinstance(start, Inverted) or start.method != "ddim"
                 or any(s is None for s in start.states[:depth + 1])):
        raise ConfigError("Keeping channels needs a DDIM inversion that kept every state (invert(..., keep=True)).")
    if isinstance(start, Inverted):
        x, upper = start.start(depth)
        method = start.method
    else:
        x, upper, method = start, None, "ddim"
    batch = x.shape[0]
    labels = torch.full((batch,), condition, device=x.device)
    negative = model.null_condition if negative is None else negative
    guided = guidance is not None and guidance != 1.0
    both = torch.cat([labels, torch.full((batch,), negative, device=x.device)]) if guided else None
    total = model.scheduler_config["num_train_timesteps"]
    low, high = interval

    def prediction(x, t):
        if guided and low <= float(t) / total <= high:
            eps_target, eps_negative = _predict(model, torch.cat([x, x]), t, both, dtype).chunk(2)
            return eps_negative + guidance * (eps_target - eps_negative)
        return _predict(model, x, t, labels, dtype)

    if method == "bdia":
        grid = _Grid(model.scheduler_config, steps, x.device)
        if upper is None:  # a one-step walk: plain DDIM from level 0 to the clean image
            x = grid.ddim(x, prediction(x, grid.timesteps[0]), 0, -1)
            yield
            return x
        for i in range(depth - 2, -1, -1):  # z_{i-1} = z_{i+1} - D(z_i; i -> i+1) + D(z_i; i -> i-1)
            eps = prediction(x, grid.timesteps[i])
            x, upper = upper - grid.ddim(x, eps, i, i + 1) + grid.ddim(x, eps, i, i - 1), x
            yield
        return x
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=x.device)
    for i, t in enumerate(scheduler.timesteps[len(scheduler.timesteps) - depth:]):
        eps = prediction(x, t)
        variance_noise = None
        if eta > 0:
            variance_noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=variance_noise).prev_sample
        if keep:
            x[:, keep] = start.states[depth - 1 - i][:, keep]
        yield
    return x


class _Grid:
    """The DDIM grid of diffusers' schedulers, written out for BDIA, which needs the DDIM map between any two
    neighbouring levels (diffusers' schedulers step only one way).

    Level i >= 0 is timestep timesteps[i] of the ascending grid; level -1 is the clean image (alpha = 1).
    """

    def __init__(self, config: dict, steps: int, device: torch.device):
        inverse = DDIMInverseScheduler.from_config(config)
        inverse.set_timesteps(steps, device=device)
        self.timesteps = inverse.timesteps
        self.alphas = DDIMScheduler.from_config(config).alphas_cumprod.to(device)
        self.prediction_type = config.get("prediction_type", "epsilon")

    def alpha(self, i: int) -> torch.Tensor:
        if i < 0:
            return torch.ones((), dtype=self.alphas.dtype, device=self.alphas.device)
        return self.alphas[self.timesteps[min(i, len(self.timesteps) - 1)]]

    def ddim(self, x: torch.Tensor, output: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """D(x; i -> j): the clean image and noise that `output` (the network's, at level i) implies, re-noised
        to level j."""
        a, a_next = self.alpha(i), self.alpha(j)
        if self.prediction_type == "v_prediction":
            x0 = a.sqrt() * x - (1 - a).sqrt() * output
            eps = a.sqrt() * output + (1 - a).sqrt() * x
        elif self.prediction_type == "epsilon":
            x0, eps = (x - (1 - a).sqrt() * output) / a.sqrt(), output
        else:
            raise ConfigError(f"BDIA inversion supports epsilon and v prediction, not {self.prediction_type!r}.")
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def _predict(model, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None):
    """The network's prediction, under autocast when a lower precision was asked for; always float32 out."""
    if dtype is None:
        return model.predict(x, t, labels)
    with torch.autocast(x.device.type, dtype=dtype):
        return model.predict(x, t, labels).float()


def sample(model: DiffusionModel, condition: str, n: int = 4, *, steps: int = SAMPLE_STEPS, seed: int = 0,
           guidance: float | None = None) -> np.ndarray:
    """Generate n new images of `condition` from random noise, (n, C, S, S) in the training data's dtype.

    What the model has learned a condition looks like: used for training previews, not for translation.
    """
    if is_direct(model):
        raise ConfigError("A CycleGAN maps images between conditions; it cannot generate new ones from noise.")
    noise = starting_noise(model, n, seed).to(model.device)
    latent = _finish(generate(model, noise, model.condition_index(condition), steps, guidance=guidance))
    with torch.inference_mode():
        clean = model.decode(latent)
    return model.normalization.inverse(clean.float().cpu().numpy(), model.normalization.dtype)


def starting_noise(model, n: int, seed: int) -> torch.Tensor:
    """The noise `sample` starts n images from (on the CPU, reproducible from the seed)."""
    return torch.randn(model.noise_shape(n), generator=torch.Generator("cpu").manual_seed(seed))


def _finish(steps_iter):
    """Run a per-step generator (invert/generate) to its end and return its result."""
    while True:
        try:
            next(steps_iter)
        except StopIteration as stop:
            return stop.value


# --- memory: whole fields or tiles --------------------------------------------------------------------------------

def bytes_per_pixel(model) -> int:
    """Estimated peak activation memory per pixel of one image in one network call (the model's own estimate)."""
    return int(model.bytes_per_pixel)


def memory_budget(device: torch.device) -> int:
    """Bytes the network's activations may take on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_FRACTION)
    return CPU_BUDGET_BYTES


def fits_whole(model, shape: tuple[int, ...], batch_size: int | None = None, budget: int | None = None) -> bool:
    """Whether one network call on whole fields of `shape` (N, C, Y, X) fits the memory budget: the largest of
    `batch_size` fields (default one) at a time."""
    per_field = bytes_per_pixel(model) * shape[-2] * shape[-1]
    budget = memory_budget(model.device) if budget is None else budget
    return per_field * min(batch_size or 1, shape[0]) <= budget


def default_batch_size(model, window: tuple[int, int] | None = None, tiles: bool = True) -> int:
    """Tiles per call: 8 on a CPU, 32 on a GPU; whole fields: as many as the memory budget allows (at least 1)."""
    fixed = 32 if model.device.type == "cuda" else 8
    if tiles or window is None:
        return fixed
    per_field = bytes_per_pixel(model) * window[0] * window[1]
    return max(1, min(fixed, memory_budget(model.device) // per_field))


def check_fits(model: ConditionedModel, images, where: str = "the image") -> None:
    """Raise DataError unless `images` can be translated by `model` (shape, channels, dtype, finite values), and warn
    (PhenDiffWarning) when they look unlike the training images."""
    _as_stack(images, model, where)


def _as_stack(images, model: ConditionedModel, where: str = "the image"):
    """(N, C, Y, X) view of the input and a function giving results the input's own shape back."""
    if hasattr(images, "detach"):  # a torch tensor, possibly tracking gradients
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    kind = array.dtype.kind
    if kind not in "uif":
        what = {"b": "true/false values (a mask?)", "c": "complex numbers", "O": "Python objects (a ragged list?)"}
        raise DataError(f"{where}: holds {what.get(kind, f'values of type {array.dtype}')}, not intensities. Give "
                        "an integer or floating-point image (e.g. the microscope's uint8/uint16, or float32).")
    if array.ndim == 2 and model.channels == 1:
        stack, restore = array[None, None], (lambda out: out[0, 0])
    elif array.ndim == 3:
        stack, restore = array[None], (lambda out: out[0])
    elif array.ndim == 4:
        stack, restore = array, (lambda out: out)
    else:
        raise DataError(f"Images of shape {array.shape} cannot be translated: give (C, Y, X) or (N, C, Y, X)"
                        + (" or (Y, X)" if model.channels == 1 else "") + ".")
    if stack.shape[1] != model.channels:
        raise DataError(
            f"{where}: has {stack.shape[1]} channel(s) (shape {array.shape}, channels first) but checkpoint "
            f"{model.path or ''} was trained on {model.channels}: {', '.join(model.channel_names)}. "
            "Give the same channels in the same order."
        )
    check_finite(stack, where)
    _warn_if_unlike_training(stack, model, where)
    return stack, restore


def _warn_if_unlike_training(stack: np.ndarray, model: ConditionedModel, where: str) -> None:
    """A different dtype or an intensity range far from the training images' is translated, but said."""
    normalization = model.normalization
    if str(stack.dtype) != normalization.dtype and np.dtype(normalization.dtype).kind in "ui":
        warnings.warn(f"{where}: is {stack.dtype} but the model was trained on {normalization.dtype} images; "
                      "intensities are read on the training images' scale, so the translation may be clipped or "
                      f"dim. Convert the image to {normalization.dtype} as the training images were.",
                      PhenDiffWarning, stacklevel=3)
        return
    seen = (model.manifest or {}).get("training_images") or {}
    if seen.get("nucleus_diameter_px") and seen.get("nuclear_channel") in model.channel_names:
        from .cells import median_nucleus_diameter

        channel = model.channel_names.index(seen["nuclear_channel"])
        diameter = median_nucleus_diameter(list(stack[:2]), channel, max_images=2)
        # on the simulator, fields of the training cells' size measured 0.8-1.17 of the training median, fields of
        # 28-px cells (20 px trained) 1.0-1.65
        if diameter and not 0.7 < diameter / seen["nucleus_diameter_px"] < 1.3:
            warnings.warn(f"{where}: its nuclei measure about {diameter:.0f} px across, the training images' "
                          f"{seen['nucleus_diameter_px']:.0f} px; a model translates cells of the size it learnt and "
                          "may invent or merge nuclei at another. Rescale the image by "
                          f"{seen['nucleus_diameter_px'] / diameter:.2f} first.", PhenDiffWarning, stacklevel=3)
    scaled = normalization.forward(stack[:, :, ::4, ::4])
    high = np.percentile(scaled, 99, axis=(0, 2, 3))
    for name, value in zip(model.channel_names, high):
        if not -3 < value < 5:  # the training images' 99.5th percentile is at +1
            warnings.warn(f"{where}: channel {name!r} is far brighter or dimmer than in the training images "
                          f"(99th percentile at {value:.1f} on the scale where training images reach 1). Check the "
                          "channel order and the acquisition settings.", PhenDiffWarning, stacklevel=3)
