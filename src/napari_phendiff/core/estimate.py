"""How long a translation will take on this computer, before it starts: the run's own tiles planned as
`iter_translate` plans them, the network timed on one batch of them (benchmarks/laptop_field.py compares the
estimate with the measured time)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .models.base import ConditionedModel, DiffusionModel, DirectModel, is_direct
from .options import TranslateOptions
from .tiling import plan_tiles
from .translate import translation_options
from .walk import autocast_dtype, network_steps, predict, whole_steps


@dataclass(frozen=True)
class Estimate:
    """How long a translation will take on this computer, before it starts."""

    seconds: float
    tiles: int  # tiles (or whole images) it translates
    copied: int  # tiles it copies as background
    calls: int  # network calls of the whole run
    pixels: int = 0  # pixels of the tiles it translates (tiles x tile area)


def estimate_translation(
    model: ConditionedModel,
    images: np.ndarray,
    source: str,
    target: str | Sequence[str],
    options: TranslateOptions | None = None,
    *,
    seconds_per_pixel: float | None = None,
    **overrides,
) -> Estimate:
    """The seconds `iter_translate` will take with these arguments, from timing the network on one batch of the
    run's own tiles: one call at the shape of a guided step (both branches; the first call of a shape pays set-up
    and is not counted), taken per tile and branch for the inversion and the generation steps of the run, plus
    encoding and decoding. It costs two network calls (three with deep features reused);
    benchmarks/laptop_field.py compares it with the measured time. `seconds_per_pixel` (an earlier estimate's
    seconds over its pixels) skips the timing: how a folder's other files are estimated. An inversion kept in a
    cache is not counted."""
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
    batch = plan.jobs[: plan.batch_size]
    clean = torch.from_numpy(plan.read(batch)).to(model.device)
    source_index, target_index = model.condition_index(source), model.condition_index(targets[0])
    with torch.inference_mode():
        if isinstance(model, DirectModel):
            model.map(clean, source_index, target_index)  # the first call of a shape pays its set-up: not counted
            started = time.perf_counter()
            model.map(clean, source_index, target_index)
            per_tile = (time.perf_counter() - started) / len(batch) * len(targets)
            return Estimate(per_tile * len(plan.jobs), len(plan.jobs), len(plan.copied), calls, pixels)
        assert isinstance(model, DiffusionModel)  # every kind is either direct or a diffusion model
        started = time.perf_counter()
        x = model.encode(clean)
        model.decode(x)
        coding = time.perf_counter() - started
        per_tile = _walk_seconds(model, x, source_index, options, len(targets)) + coding / len(batch)
    return Estimate(per_tile * len(plan.jobs), len(plan.jobs), len(plan.copied), calls, pixels)


def _walk_seconds(model: DiffusionModel, x: torch.Tensor, label: int, options: TranslateOptions, targets: int) -> float:
    """Seconds of the network per tile for the whole walk: inversion, and regeneration to each target (with deep
    features reused: the whole network on every deep_cache-th step, only the outermost level on the others, timed
    by a third call). x: one batch of encoded tiles."""
    inverse_steps, forward_steps = network_steps(options)
    dtype = autocast_dtype(options.precision)
    branches = 2 if options.guidance != 1.0 else 1  # a guided step runs both branches in one call
    tiles = x.shape[0]
    x = torch.cat([x] * branches)
    labels = torch.full((tiles * branches,), label, device=model.device)
    t = torch.tensor(model.scheduler_config["num_train_timesteps"] // 2, device=model.device)
    assert options.deep_cache is not None  # settled by translation_options
    cache = model.deep_feature_cache() if options.deep_cache > 1 else None
    predict(model, x, t, labels, dtype, cache)  # the first call of a shape pays its set-up: not counted
    started = time.perf_counter()
    predict(model, x, t, labels, dtype, cache)
    per_branch = (time.perf_counter() - started) / (tiles * branches)  # one tile through the network once
    whole = whole_steps(forward_steps, options.deep_cache)
    regeneration = per_branch * whole
    if cache is not None and forward_steps > whole:
        started = time.perf_counter()
        predict(model, x, t, labels, dtype, cache, refresh=False)
        regeneration += (time.perf_counter() - started) / (tiles * branches) * (forward_steps - whole)
    return per_branch * inverse_steps + regeneration * branches * targets
