"""PhenDiff image-to-image translation: DDIM inversion under the source condition, DDIM generation under the target.

With alpha_t the cumulative product of (1 - beta) up to timestep t and eps(x, t, c) the noise predicted by the
UNet for condition c, one deterministic DDIM step (eta = 0) from noise level t to level t' is

    x0_hat = (x_t - sqrt(1 - alpha_t) * eps(x_t, t, c)) / sqrt(alpha_t)          # the clean image it implies
    x_t'   = sqrt(alpha_t') * x0_hat + sqrt(1 - alpha_t') * eps(x_t, t, c)      # re-noised to level t'

Generation walks t' = t - T/steps down to a clean image with c = target (diffusers DDIMScheduler). Inversion walks
the same grid upwards with c = source (DDIMInverseScheduler), so it ends at the noise x_T from which the source
condition would regenerate the image. Regenerating x_T with the target condition keeps what the model does not tie
to the condition (cell positions, shapes, texture) and changes what it does: the phenotype.

Images larger than the model are cut into tiles of the model's size with 25% overlap, translated in batches and
blended with linear ramps, so memory is bounded by the tile batch, not the field (docs/method.md measures seams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .checkpoint import PhenDiffModel
from .errors import DataError
from .images import check_finite

DEFAULT_STEPS = 50
TILE_OVERLAP = 0.25


@dataclass(frozen=True)
class TranslateEvent:
    """Progress of a translation: `phase` is "invert", "generate" or "done"; the "done" event carries `result`."""

    phase: str
    step: int
    total: int
    target: str | None = None
    result: Any = None


def translate(model: PhenDiffModel, images: np.ndarray, source: str, target: str | Sequence[str], *,
              progress: Callable[[TranslateEvent], None] | None = None, **options):
    """Translate images from `source` to `target`; see `iter_translate` for the options.

    Returns an array of the input's shape and dtype, or {target: array} when `target` is a list.
    `progress`, if given, is called with every TranslateEvent (e.g. to advance a progress bar).
    """
    for event in iter_translate(model, images, source, target, **options):
        if progress is not None:
            progress(event)
        if event.phase == "done":
            return event.result
    raise RuntimeError("translation stopped before it finished")  # unreachable unless the generator is broken


def iter_translate(model: PhenDiffModel, images: np.ndarray, source: str, target: str | Sequence[str], *,
                   steps: int = DEFAULT_STEPS, seed: int = 0, guidance: float | None = None,
                   batch_size: int | None = None, eta: float = 0.0, tiles: bool = True,
                   precision: str = "fp32") -> Iterator[TranslateEvent]:
    """Translate step by step, yielding a TranslateEvent after every UNet step and a final "done" event.

    images: one image (C, Y, X), a stack (N, C, Y, X), or (Y, X) for a one-channel model, in any dtype.
    target: a condition, or a list of conditions (one inversion then serves all of them).
    steps: DDIM steps for inversion and again for generation.
    guidance: classifier-free guidance scale for generation (None or 1: none).
    eta: 0 gives the deterministic DDIM; > 0 adds noise drawn from `seed` during generation.
    tiles: False runs the fully convolutional UNet on the whole field at once (more memory).
    precision: "fp32", or "bf16"/"fp16" to run the network under autocast (faster on GPUs; the DDIM arithmetic
    stays in float32). docs/benchmarks.md measures how far the result moves.
    Closing the generator stops the work between two steps; nothing partial is returned.
    """
    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise ValueError("Give at least one target condition.")
    dtype = autocast_dtype(precision)
    source_index = model.condition_index(source)
    target_indices = [model.condition_index(t) for t in targets]
    stack, restore = _as_stack(images, model)
    scaled = model.normalization.forward(stack)
    padded, (height, width) = _pad(scaled, model.image_size if tiles else 0, model.size_multiple)
    windows = _windows(padded.shape[-2:], model.image_size, tiles)
    jobs = [(n, window) for n in range(len(padded)) for window in windows]
    batch_size = batch_size or default_batch_size(model.device)
    batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
    direct = model.kind == "cyclegan"  # a direct mapping: one step per target, no inversion
    total = len(batches) * (len(targets) if direct else steps * (1 + len(targets)))

    ramp = _blend_weights(windows[0][2], windows[0][3], tiles)
    canvas = {t: np.zeros(padded.shape, np.float32) for t in targets}
    weight = np.zeros((len(padded), 1) + padded.shape[-2:], np.float32)
    generator = torch.Generator("cpu").manual_seed(seed)
    done = 0
    for batch in batches:
        clean = torch.from_numpy(np.stack([padded[n, :, y:y + h, x:x + w] for n, (y, x, h, w) in batch]))
        clean = clean.to(model.device)
        if direct:
            work = _mapped_batch(model, clean, source_index, targets, target_indices, done, total)
        else:
            work = _diffusion_batch(model, clean, source_index, targets, target_indices, steps, done, total,
                                    dtype=dtype, guidance=guidance, eta=eta, generator=generator)
        outs, done = yield from work
        for name, out in outs.items():
            for tile, (n, (y, x, h, w)) in zip(out, batch):
                canvas[name][n, :, y:y + h, x:x + w] += tile * ramp
        for n, (y, x, h, w) in batch:
            weight[n, :, y:y + h, x:x + w] += ramp
    results = {}
    for name in targets:
        blended = (canvas[name] / weight)[..., :height, :width]
        results[name] = restore(model.normalization.inverse(blended, stack.dtype))
    yield TranslateEvent("done", total, total, result=results if not isinstance(target, str) else results[target])


def _diffusion_batch(model, clean: torch.Tensor, source: int, targets: list[str], indices: list[int], steps: int,
                     done: int, total: int, dtype: torch.dtype | None = None, **generation_options):
    """Invert one batch under the source condition, regenerate it under each target: yields events, returns
    ({target: array}, steps done so far)."""
    with torch.inference_mode():
        start = model.encode(clean)
    noise = yield from _count(invert(model, start, source, steps, dtype=dtype), "invert", done, total, None)
    done += steps
    outs = {}
    for name, index in zip(targets, indices):
        generation = generate(model, noise, index, steps, dtype=dtype, **generation_options)
        end = yield from _count(generation, "generate", done, total, name)
        with torch.inference_mode():
            outs[name] = model.decode(end).float().cpu().numpy()
        done += steps
    return outs, done


def _mapped_batch(model, clean: torch.Tensor, source: int, targets: list[str], indices: list[int], done: int,
                  total: int):
    """A direct mapping (CycleGAN's generators): one step per target."""
    outs = {}
    for name, index in zip(targets, indices):
        with torch.inference_mode():
            outs[name] = model.map(clean, source, index).float().cpu().numpy()
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


@torch.inference_mode()
def invert(model: PhenDiffModel, x: torch.Tensor, condition: int, steps: int, dtype: torch.dtype | None = None):
    """DDIM inversion of clean images x (normalised, B,C,H,W) under `condition`; yields per step, returns x_T."""
    scheduler = DDIMInverseScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=x.device)
    labels = torch.full((x.shape[0],), condition, device=x.device)
    for t in scheduler.timesteps:
        eps = _predict(model, x, t, labels, dtype)
        x = scheduler.step(eps, t, x).prev_sample
        yield
    return x


@torch.inference_mode()
def generate(model: PhenDiffModel, noise: torch.Tensor, condition: int, steps: int, *, guidance: float | None = None,
             eta: float = 0.0, generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
    """DDIM generation from x_T under `condition`, with optional classifier-free guidance; returns x_0."""
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=noise.device)
    batch = noise.shape[0]
    labels = torch.full((batch,), condition, device=noise.device)
    guided = guidance is not None and guidance != 1.0
    if guided:
        labels = torch.cat([labels, torch.full((batch,), model.null_condition, device=noise.device)])
    x = noise
    for t in scheduler.timesteps:
        if guided:
            eps_cond, eps_null = _predict(model, torch.cat([x, x]), t, labels, dtype).chunk(2)
            eps = eps_null + guidance * (eps_cond - eps_null)
        else:
            eps = _predict(model, x, t, labels, dtype)
        variance_noise = None
        if eta > 0:
            variance_noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=variance_noise).prev_sample
        yield
    return x


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def _predict(model, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None):
    """The network's prediction, under autocast when a lower precision was asked for; always float32 out."""
    if dtype is None:
        return model.predict(x, t, labels)
    with torch.autocast(x.device.type, dtype=dtype):
        return model.predict(x, t, labels).float()


def sample(model: PhenDiffModel, condition: str, n: int = 4, *, steps: int = DEFAULT_STEPS, seed: int = 0,
           guidance: float | None = None) -> np.ndarray:
    """Generate n new images of `condition` from random noise, (n, C, S, S) in the training data's dtype.

    What the model has learned a condition looks like: used for training previews, not for translation.
    """
    if model.kind == "cyclegan":
        raise ValueError("A CycleGAN maps images between conditions; it cannot generate new ones from noise.")
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(model.noise_shape(n), generator=generator).to(model.device)
    latent = _finish(generate(model, noise, model.condition_index(condition), steps, guidance=guidance))
    with torch.inference_mode():
        clean = model.decode(latent)
    return model.normalization.inverse(clean.float().cpu().numpy(), model.normalization.dtype)


def _finish(steps_iter):
    """Run a per-step generator (invert/generate) to its end and return its result."""
    while True:
        try:
            next(steps_iter)
        except StopIteration as stop:
            return stop.value


def default_batch_size(device: torch.device) -> int:
    return 32 if device.type == "cuda" else 8


def _as_stack(images: np.ndarray, model: PhenDiffModel):
    """(N, C, Y, X) view of the input and a function giving results the input's own shape back."""
    array = np.asarray(images)
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
            f"The image has {stack.shape[1]} channel(s) (shape {array.shape}, channels first) but checkpoint "
            f"{model.path or ''} was trained on {model.channels}: {', '.join(model.channel_names)}. "
            "Give the same channels in the same order."
        )
    check_finite(stack, "the image")
    return stack, restore


def _pad(stack: np.ndarray, min_size: int, multiple: int):
    """Reflect-pad so each side is at least min_size and a multiple of `multiple`; returns the original size too."""
    height, width = stack.shape[-2:]
    target_h = max(min_size, math.ceil(height / multiple) * multiple)
    target_w = max(min_size, math.ceil(width / multiple) * multiple)
    if (target_h, target_w) == (height, width):
        return stack, (height, width)
    pad = ((0, 0), (0, 0), (0, target_h - height), (0, target_w - width))
    mode = "reflect" if min(height, width) > max(target_h - height, target_w - width) else "symmetric"
    return np.pad(stack, pad, mode=mode), (height, width)


def _starts(length: int, size: int) -> list[int]:
    """Evenly spread tile starts covering [0, length) with at least TILE_OVERLAP overlap."""
    if length <= size:
        return [0]
    stride = size - int(size * TILE_OVERLAP)
    count = math.ceil((length - size) / stride) + 1
    return sorted({round(i * (length - size) / (count - 1)) for i in range(count)})


def _windows(shape: tuple[int, int], size: int, tiles: bool) -> list[tuple[int, int, int, int]]:
    if not tiles:
        return [(0, 0, shape[0], shape[1])]
    return [(y, x, size, size) for y in _starts(shape[0], size) for x in _starts(shape[1], size)]


def _blend_weights(height: int, width: int, tiles: bool) -> np.ndarray:
    """Linear ramps over the overlap, so neighbouring tiles fade into each other instead of meeting at a seam."""
    if not tiles:
        return np.ones((height, width), np.float32)

    def ramp(n: int) -> np.ndarray:
        edge = max(1, int(n * TILE_OVERLAP))
        distance = np.minimum(np.arange(n) + 1, n - np.arange(n))
        return np.minimum(1.0, distance / (edge + 1)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))
