"""The DDIM walk of a PhenDiff translation: inversion under the source condition, generation under the target.

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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .errors import ConfigError
from .models.base import DiffusionModel, is_direct
from .models.deep_features import DeepFeatureCache
from .options import TranslateOptions, grid_steps

SAMPLE_STEPS = 50  # generating from pure noise (previews, generalization): the full-schedule choice of method.md


@dataclass
class Inverted:
    """Where an inversion ended: the noisy state after each of its steps (index 0: the clean start).

    `start(k)` gives what regeneration over the last k steps of the grid starts from: the state after k inversion
    steps (DDIM), or that state and the one before it (BDIA needs both).
    """

    states: list[torch.Tensor | None]  # None: a state not kept (invert(..., keep=False) keeps the last two)
    method: str
    steps: int

    @property
    def depth(self) -> int:
        return len(self.states) - 1

    def start(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(state, upper) for a regeneration over the last k grid steps; upper is the state one level above,
        which BDIA's update needs (None for DDIM, and for a one-step BDIA walk, whose only step is plain DDIM)."""
        if not 1 <= k <= self.depth:
            raise ConfigError(
                f"This inversion went {self.depth} step(s) deep; it cannot start a regeneration of "
                f"{k} steps. Invert with a higher strength."
            )
        if self.method == "bdia" and k >= 2:
            state, upper = self.states[k - 1], self.states[k]
        else:
            state, upper = self.states[k], None
        if state is None:
            raise ConfigError(
                f"This inversion kept only its last two states; it cannot start a regeneration of {k} "
                "steps. Invert with keep=True to regenerate at lower strengths."
            )
        return state, upper


def network_steps(options: TranslateOptions) -> tuple[int, int]:
    """Network calls of one inversion and of one regeneration (BDIA's regeneration starts one level lower, from
    the last two inverted states, so it needs one call fewer)."""
    k = options.run_steps
    return k, (max(1, k - 1) if options.inversion == "bdia" else k)


def whole_steps(steps: int, deep_cache: int) -> int:
    """Steps of a regeneration of `steps` that run the whole network with this deep cache: its first and every
    deep_cache-th after it (the others reuse deep features; what `generate` does)."""
    return -(-steps // deep_cache)


@torch.inference_mode()
def invert(
    model: DiffusionModel,
    x: torch.Tensor,
    condition: int,
    steps: int,
    *,
    strength: float = 1.0,
    method: str = "ddim",
    dtype: torch.dtype | None = None,
    keep: bool = False,
):
    """Invert clean images x (normalised, B,C,H,W) under `condition` over the first strength x steps of the grid.

    Yields after every step and returns an Inverted. keep=True keeps every intermediate state, so one inversion
    also serves every lower strength on the same grid (sweeps, morphs); otherwise only the last two are kept.
    """
    depth = grid_steps(steps, strength)
    scheduler = DDIMInverseScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=x.device)
    labels = torch.full((x.shape[0],), condition, device=x.device)
    states: list[torch.Tensor | None] = [x]
    if method == "ddim":
        for t in scheduler.timesteps[:depth]:
            eps = predict(model, x, t, labels, dtype)
            x = scheduler.step(eps, t, x).prev_sample
            states.append(x)
            if not keep:
                states[:-2] = [None] * (len(states) - 2)
            yield
    elif method == "bdia":
        grid = _Grid(model.scheduler_config, steps, x.device)
        # z_0 from the clean image: one plain DDIM inversion step (its accuracy does not matter for exactness)
        eps = predict(model, x, grid.timesteps[0], labels, dtype)
        below, x = x, grid.ddim(x, eps, -1, 0)
        states.append(x)
        yield
        for i in range(depth - 1):  # z_{i+1} = z_{i-1} - D(z_i; i -> i-1) + D(z_i; i -> i+1)
            eps = predict(model, x, grid.timesteps[i], labels, dtype)
            below, x = x, below - grid.ddim(x, eps, i, i - 1) + grid.ddim(x, eps, i, i + 1)
            states.append(x)
            if not keep:
                states[:-2] = [None] * (len(states) - 2)
            yield
    else:
        raise ConfigError(f"Unknown inversion {method!r}.")
    return Inverted(states, method, steps)


@torch.inference_mode()
def generate(
    model: DiffusionModel,
    start: Inverted | torch.Tensor,
    condition: int,
    steps: int,
    *,
    strength: float = 1.0,
    guidance: float | None = None,
    negative: int | None = None,
    interval: tuple[float, float] = (0.0, 1.0),
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    keep: Sequence[int] = (),
    deep_cache: int = 1,
):
    """DDIM generation under `condition` over the last strength x steps of the grid; returns x_0.

    start: an Inverted (from `invert`, at least as deep) or plain noise x_T (strength 1).
    guidance: scale w (None or 1: none); negative: the condition index of the negative branch (default: null).
    interval: guidance only where t / T lies within it.
    keep: channels replaced after every step by the inversion's state at the same level (an Inverted with every
    state kept), so they end as the original's and the other channels are generated around them. This is the
    replacement method of conditional sampling (Song et al. 2021, "Score-based generative modeling through SDEs",
    imputation); written here because diffusers' schedulers have no channel replacement.
    deep_cache: N > 1 runs the whole network on the first step and every N-th after it, and only its outermost
    level on the steps between, on the deep features of the last whole step (models/deep_features.py).
    """
    depth = grid_steps(steps, strength)
    keep = list(keep)
    kept = _kept_states(start, depth) if keep else []
    if isinstance(start, Inverted):
        x, upper = start.start(depth)
        method = start.method
    else:
        x, upper, method = start, None, "ddim"
    cache = model.deep_feature_cache() if deep_cache > 1 else None
    prediction = _guided(model, condition, x.shape[0], x.device, guidance, negative, interval, dtype, cache)
    if method == "bdia":
        return (yield from _bdia_generate(model, prediction, x, upper, steps, depth, deep_cache))
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps, device=x.device)
    for i, t in enumerate(scheduler.timesteps[len(scheduler.timesteps) - depth :]):
        eps = prediction(x, t, i % deep_cache == 0)
        variance_noise = None
        if eta > 0:
            variance_noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=variance_noise).prev_sample
        if keep:
            x[:, keep] = kept[depth - 1 - i][:, keep]
        yield
    return x


def _kept_states(start: Inverted | torch.Tensor, depth: int) -> list[torch.Tensor]:
    """The inversion's states up to `depth`, which a walk that keeps channels copies them from (ConfigError unless
    a DDIM inversion kept every one)."""
    if isinstance(start, Inverted) and start.method == "ddim":
        states = start.states[: depth + 1]
        kept = [state for state in states if state is not None]
        if len(kept) == len(states):
            return kept
    raise ConfigError("Keeping channels needs a DDIM inversion that kept every state (invert(..., keep=True)).")


def _guided(
    model: DiffusionModel,
    condition: int,
    batch: int,
    device,
    guidance: float | None,
    negative: int | None,
    interval: tuple[float, float],
    dtype: torch.dtype | None,
    cache: DeepFeatureCache | None = None,
) -> Callable:
    """prediction(x, t, refresh=True): the noise predicted under `condition`, classifier-free guided where t / T lies
    within `interval` (eps = eps(negative) + w x (eps(condition) - eps(negative)); negative None: the null
    condition). With a `cache`, refresh False reuses the deep features of its last whole call."""
    labels = torch.full((batch,), condition, device=device)
    negative = model.null_condition if negative is None else negative
    guided = guidance is not None and guidance != 1.0
    both = torch.cat([labels, torch.full((batch,), negative, device=device)]) if guided else None
    total = model.scheduler_config["num_train_timesteps"]
    low, high = interval

    def prediction(x, t, refresh=True):
        if guided and low <= float(t) / total <= high:
            eps_target, eps_negative = predict(model, torch.cat([x, x]), t, both, dtype, cache, refresh).chunk(2)
            return eps_negative + guidance * (eps_target - eps_negative)
        return predict(model, x, t, labels, dtype, cache, refresh)

    return prediction


def _bdia_generate(
    model: DiffusionModel,
    prediction: Callable,
    x: torch.Tensor,
    upper: torch.Tensor | None,
    steps: int,
    depth: int,
    deep_cache: int = 1,
):
    """The exact BDIA walk down from an Inverted's two top states; yields per network step, returns x_0."""
    grid = _Grid(model.scheduler_config, steps, x.device)
    if upper is None:  # a one-step walk: plain DDIM from level 0 to the clean image
        x = grid.ddim(x, prediction(x, grid.timesteps[0]), 0, -1)
        yield
        return x
    for i in range(depth - 2, -1, -1):  # z_{i-1} = z_{i+1} - D(z_i; i -> i+1) + D(z_i; i -> i-1)
        eps = prediction(x, grid.timesteps[i], (depth - 2 - i) % deep_cache == 0)
        x, upper = upper - grid.ddim(x, eps, i, i + 1) + grid.ddim(x, eps, i, i - 1), x
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


def predict(
    model,
    x: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    dtype: torch.dtype | None,
    cache: DeepFeatureCache | None = None,
    refresh: bool = True,
):
    """The network's prediction, under autocast when a lower precision was asked for; always float32 out. With a
    deep-feature `cache`, through it (refresh False: on the deep features of its last whole call)."""
    network = model.predict if cache is None else functools.partial(cache.predict, refresh=refresh)
    if dtype is None:
        return network(x, t, labels)
    with torch.autocast(x.device.type, dtype=dtype):
        return network(x, t, labels).float()


def sample(
    model: DiffusionModel,
    condition: str,
    n: int = 4,
    *,
    steps: int = SAMPLE_STEPS,
    seed: int = 0,
    guidance: float | None = None,
) -> np.ndarray:
    """Generate n new images of `condition` from random noise, (n, C, S, S) in the training data's dtype.

    What the model has learned a condition looks like: used for training previews, not for translation.
    """
    if is_direct(model):
        raise ConfigError("A CycleGAN maps images between conditions; it cannot generate new ones from noise.")
    noise = starting_noise(model, n, seed).to(model.device)
    latent = finish(generate(model, noise, model.condition_index(condition), steps, guidance=guidance))
    with torch.inference_mode():
        clean = model.decode(latent)
    return model.normalization.inverse(clean.float().cpu().numpy(), model.normalization.dtype)


def starting_noise(model, n: int, seed: int) -> torch.Tensor:
    """The noise `sample` starts n images from (on the CPU, reproducible from the seed)."""
    return torch.randn(model.noise_shape(n), generator=torch.Generator("cpu").manual_seed(seed))


def finish(steps_iter):
    """Run a per-step generator (invert/generate) to its end and return its result."""
    while True:
        try:
            next(steps_iter)
        except StopIteration as stop:
            return stop.value
