"""Train the CycleGAN baseline on the same labelled folder as PhenDiff: ONE loop, yielding the same events.

The objective is the original one (Zhu et al. 2017), with A = conditions[0] and B = conditions[1]:

    generators:      LSGAN  (D_b(G_ab(a)) - 1)^2 + (D_a(G_ba(b)) - 1)^2
                   + cycle  10 * (|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b|)
                   + identity 0.5 * 10 * (|G_ab(b) - b| + |G_ba(a) - a|)
    discriminators:  0.5 * ((D(real) - 1)^2 + D(translated from the pool of 50)^2), for D_a and D_b

Adam (lr 2e-4, betas 0.5 and 0.999) for both pairs, the learning rate constant for the first half of the steps and
then decaying linearly to 0. The unpaired batches of step s are a pure function of (seed, s), and the image pools
are saved with the checkpoint, so a resumed run continues exactly as if it had not stopped. One device, full
precision; the original uses batches of 1, and 1-4 is usual (the batch size is used as given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .checkpoint import atomic_folder, load_training_state, save_training_state
from .dataset import LabelledImages, TrainingSamples, scan_folder
from .device import get_device
from .errors import DataError
from .models.cyclegan import (ImagePool, architecture, build_discriminators, build_generators, check_image_size,
                              write_cyclegan)
from .train import TrainConfig, TrainEvent, _check_out_folder, _manifest, load_training_data

LAMBDA_CYCLE = 10.0
LAMBDA_IDENTITY = 0.5    # times LAMBDA_CYCLE
POOL_SIZE = 50
BETAS = (0.5, 0.999)
OBJECTIVE = {"gan": "lsgan", "lambda_cycle": LAMBDA_CYCLE, "lambda_identity": LAMBDA_IDENTITY,
             "pool_size": POOL_SIZE, "optimizer": "adam", "betas": list(BETAS),
             "lr_schedule": "constant for the first half of the steps, then linear decay to 0"}


def iter_train_cyclegan(config: TrainConfig) -> Iterator[TrainEvent]:
    """Train step by step; the "step" loss is the generators' loss. Closing the generator (a Stop button, Ctrl-C)
    saves a resumable checkpoint first."""
    folder = scan_folder(config.data)
    if len(folder.conditions) != 2:
        raise DataError(f"{config.data}: the CycleGAN maps between exactly two conditions, but the folder has "
                        f"{len(folder.conditions)} ({', '.join(folder.conditions)}). Give a folder with two "
                        "subfolders, e.g. one holding links to the untreated and one to the treated images.")
    if config.mixed_precision not in ("auto", "no"):
        raise ValueError(f"The CycleGAN baseline trains in full precision; leave out --mixed-precision "
                         f"{config.mixed_precision} (or give 'no').")
    check_image_size(config.image_size)
    device = get_device(config.device)
    resume_from = _check_out_folder(config)
    data, normalization, channel_names = load_training_data(config, resume_from)

    arch = architecture(config.preset, data.channels)
    torch.manual_seed(config.seed)  # same initial weights for the same seed
    generators, discriminators = build_generators(arch).to(device), build_discriminators(arch).to(device)
    opt_g = torch.optim.Adam(generators.parameters(), lr=config.lr, betas=BETAS)
    opt_d = torch.optim.Adam(discriminators.parameters(), lr=config.lr, betas=BETAS)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, _linear_decay(config.steps))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, _linear_decay(config.steps))
    pools = {"a": ImagePool(POOL_SIZE), "b": ImagePool(POOL_SIZE)}
    start = 0
    if resume_from:
        weights, state = load_training_state(config.out / "training" / "generators", opt_g, sched_g)
        generators.load_state_dict(weights)
        weights, _ = load_training_state(config.out / "training" / "discriminators", opt_d, sched_d)
        discriminators.load_state_dict(weights)
        for key, stacked in load_file(config.out / "training" / "pools.safetensors").items():
            pools[key].load(stacked, device)
        start = int(state["step"])

    samples = [TrainingSamples(_one_condition(data, c), normalization, config.image_size, resize=config.resize,
                               seed=config.seed) for c in (0, 1)]
    manifest = {k: v for k, v in _manifest(config, data, normalization, channel_names, None).items()
                if k != "schedule"}
    manifest.update(kind="cyclegan", architecture=arch, objective=OBJECTIVE)

    def save(step: int) -> Path:
        with atomic_folder(config.out) as out:
            write_cyclegan(out, generators, {**manifest, "trained_steps": step})
            save_training_state(out / "training" / "generators", generators.state_dict(), opt_g, sched_g,
                                {"step": step})
            save_training_state(out / "training" / "discriminators", discriminators.state_dict(), opt_d, sched_d,
                                {"step": step})
            save_file({k: p.state().contiguous().cpu() for k, p in pools.items()},
                      out / "training" / "pools.safetensors")
        return config.out

    yield TrainEvent("start", start, config.steps, message=_start_message(config, data, start, device))
    step = start
    generators.train()
    discriminators.train()
    try:
        while step < config.steps:
            # Condition A's batch is stream 0 and B's is stream 1 of the step; the pools draw from stream 2.
            real_a = samples[0].batch(step, 0, config.batch_size)[0].to(device)
            real_b = samples[1].batch(step, 1, config.batch_size)[0].to(device)
            rng = np.random.default_rng([config.seed, step, 2])
            loss_g, loss_d = _step(generators, discriminators, opt_g, opt_d, pools, real_a, real_b, rng)
            sched_g.step()
            sched_d.step()
            step += 1
            yield TrainEvent("step", step, config.steps, loss=loss_g, lr=sched_g.get_last_lr()[0],
                             message=f"discriminators {loss_d:.4f}")
            if step % config.checkpoint_every == 0 and step < config.steps:
                yield TrainEvent("checkpoint", step, config.steps, path=save(step))
    except GeneratorExit:
        if step > start:
            save(step)  # Stop: keep what was learned, resumable
        raise
    yield TrainEvent("done", step, config.steps, path=save(step))


def _step(generators, discriminators, opt_g, opt_d, pools, real_a, real_b, rng) -> tuple[float, float]:
    """One optimisation step of the generators, then one of the discriminators; returns both losses."""
    g_ab, g_ba, d_a, d_b = generators["ab"], generators["ba"], discriminators["a"], discriminators["b"]
    fake_b, fake_a = g_ab(real_a), g_ba(real_b)

    discriminators.requires_grad_(False)  # the generators' loss must not train the discriminators
    loss_g = (_lsgan(d_b(fake_b), True) + _lsgan(d_a(fake_a), True)
              + LAMBDA_CYCLE * (F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b))
              + LAMBDA_CYCLE * LAMBDA_IDENTITY * (F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a)))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    discriminators.requires_grad_(True)
    pooled_b, pooled_a = pools["b"].query(fake_b, rng), pools["a"].query(fake_a, rng)
    loss_d = 0.5 * (_lsgan(d_b(real_b), True) + _lsgan(d_b(pooled_b), False)
                    + _lsgan(d_a(real_a), True) + _lsgan(d_a(pooled_a), False))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return float(loss_g.detach()), float(loss_d.detach())


def _lsgan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: the patch map is pushed towards 1 (real) or 0 (translated)."""
    return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if real else 0.0))


def _linear_decay(steps: int):
    """LR factor: 1 for the first half of the steps, then linearly down to 0 at the last step."""
    half = steps // 2

    def factor(step: int) -> float:
        return 1.0 - max(0, step - half) / max(1, steps - half)

    return factor


def _one_condition(data: LabelledImages, condition: int) -> LabelledImages:
    """The images of one condition, as a one-condition folder (so TrainingSamples draws from it alone)."""
    keep = [i for i, label in enumerate(data.labels) if label == condition]
    return LabelledImages(root=data.root, conditions=[data.conditions[condition]],
                          images=[data.images[i] for i in keep], labels=[0] * len(keep),
                          paths=[data.paths[i] for i in keep])


def _start_message(config: TrainConfig, data: LabelledImages, start: int, device: torch.device) -> str:
    counts = ", ".join(f"{c}: {sum(1 for l in data.labels if l == i)}" for i, c in enumerate(data.conditions))
    what = f"resuming at step {start}" if start else "starting"
    return (f"{what}: CycleGAN {config.preset}, {config.image_size} px, {data.channels} channel(s), images {counts} "
            f"({data.conditions[0]} <-> {data.conditions[1]}); {device}, batch {config.batch_size} per condition")
