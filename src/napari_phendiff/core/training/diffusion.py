"""The optimisation step of the diffusion kinds (pixel PhenDiff, latent Phen-LDiff), on accelerate.

What differs between the two is a small "trainable" object (models.pixel.PixelTrainable, models.latent.
LatentTrainable): the denoiser, the parameters to train, the encoding of clean images, and the checkpoint writer.

The same step runs on one CPU, one GPU, or several GPUs/nodes (`accelerate launch --multi_gpu -m
napari_phendiff.cli train ...`, or `torchrun --nproc_per_node N -m napari_phendiff.cli train ...`).
Each process draws its own batches, so the global batch is batch_size x processes; only the main process writes.
The loss is the usual denoising objective: noise a clean image (or its latents) to a random timestep t and regress the
added noise (or v), optionally weighted per noise level (min-SNR-gamma) and with a per-image, per-channel constant added to the noise
(noise offset, as diffusers' training examples: it lets a model shift an image's mean brightness), with the condition dropped to the null class
10% of the time so classifier-free guidance is possible. A batch may be run through the denoiser in several passes
(the latent model does, to bound memory); their gradients add up to the whole batch's.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file

from ..checkpoint import load_training_state, save_training_state
from ..dataset import SampleStream, TrainingSamples
from ..device import get_device
from ..errors import CheckpointError, ConfigError
from ..options import TrainConfig

AVERAGE_FILE = "average.safetensors"  # the EMA weights of the trained parameters, by name, to resume averaging


class DiffusionTrainer:
    """What core/training/run.py drives for a diffusion kind; a kind gives `make_trainable`."""

    def __init__(self, config: TrainConfig, data, normalization):
        from accelerate import Accelerator

        assert config.lr is not None and config.steps is not None  # TrainConfig sets both when made
        device = get_device(config.device)
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision(config.mixed_precision, device), cpu=device.type == "cpu"
        )
        self.config, self.data, self.normalization = config, data, normalization
        torch.manual_seed(config.seed)  # same initial weights for the same seed
        self.trainable = self.make_trainable(config, data)
        self.named = self.trainable.named_parameters()
        self.params = [p for _, p in self.named]
        self.noise_scheduler = DDPMScheduler.from_config(self.trainable.schedule)
        self.optimizer = make_optimizer(config, self.params)
        # The LR schedule is stepped by hand once per step (not through accelerate, which would step it once per
        # process), so its length is in optimisation steps whatever the number of processes.
        self.lr_scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, config.steps)
        self.ema = EMAModel(self.params, decay=config.ema_decay) if config.ema_decay > 0 else None
        self.micro_batch = self.trainable.micro_batch or config.batch_size

    def make_trainable(self, config: TrainConfig, data):
        raise NotImplementedError

    @classmethod
    def prepare(cls, config: TrainConfig) -> TrainConfig:
        mixed_precision(config.mixed_precision, get_device(config.device))  # refuse bf16 on a CPU before any work
        if config.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(
                "The 8-bit optimizer (adamw8bit) needs bitsandbytes, which is not installed: pip install "
                "bitsandbytes, or choose the optimizer adamw."
            )
        return config

    @classmethod
    def resume_problems(cls, manifest: dict, config: TrainConfig) -> list[str]:
        return []

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.params

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def load_state(self, folder: Path) -> int:
        weights, state = load_training_state(folder, self.optimizer, self.lr_scheduler)
        self.trainable.load_raw_weights(weights)
        if self.ema is not None:
            average = _read_average(folder / AVERAGE_FILE)
            self.ema.shadow_params = [average[name].to(p.device, torch.float32) for name, p in self.named]
            self.ema.optimization_step = int(state["ema_step"])
        return int(state["step"])

    def batches(self, start: int):
        """The batches of steps start, start + 1, ... (each process its own), on the training device."""
        accelerator, config = self.accelerator, self.config
        assert config.image_size is not None and config.steps is not None  # set when made, or by the kind's prepare
        self.denoiser, self.optimizer = accelerator.prepare(self.trainable.denoiser, self.optimizer)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        samples = TrainingSamples(
            self.data, self.normalization, config.image_size, resize=config.resize, seed=config.seed
        )
        stream = SampleStream(samples, start, config.steps, accelerator.process_index, config.batch_size)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=config.num_workers, pin_memory=accelerator.device.type == "cuda"
        )
        self.denoiser.train()
        yield from loader

    def step(self, batch, step: int) -> tuple[float, float, str]:
        accelerator, config = self.accelerator, self.config
        clean, labels = batch
        step_seed = np.random.SeedSequence([config.seed, step, accelerator.process_index, 1]).generate_state(1)
        generator = torch.Generator().manual_seed(int(step_seed[0]))
        clean = self.trainable.encode(clean.to(accelerator.device, non_blocking=True))
        labels = labels.to(accelerator.device)
        noise = torch.randn(clean.shape, generator=generator)
        if config.noise_offset:  # drawn only when asked, so runs without it keep their noise
            noise += config.noise_offset * torch.randn((*clean.shape[:2], 1, 1), generator=generator)
        noise = noise.to(accelerator.device)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator
        ).to(accelerator.device)
        dropped = (torch.rand(clean.shape[0], generator=generator) < config.condition_dropout).to(labels.device)
        labels = torch.where(dropped, torch.full_like(labels, len(self.data.conditions)), labels)  # null class
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        weights = loss_weights(self.noise_scheduler, timesteps, config.snr_gamma)
        loss = _backward(accelerator, self.denoiser, noisy, timesteps, labels, target, weights, self.micro_batch)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        return float(loss), self.lr_scheduler.get_last_lr()[0], ""

    def write(self, folder: Path, manifest: dict) -> None:
        with _averaged(self.ema, self.params):
            self.trainable.write(folder, manifest)

    @contextlib.contextmanager
    def live_model(self, channel_names: list[str]):
        """The model being trained as a loaded model of its kind (models.<kind>.load's class): the networks in memory with the moving-average weights a checkpoint holds, in eval mode and the run's
        precision. No second copy is loaded; the raw weights and train mode come back afterwards."""
        denoiser = self.trainable.denoiser
        fields = dict(
            conditions=list(self.data.conditions),
            channel_names=list(channel_names),
            image_size=self.config.image_size,
            normalization=self.normalization,
        )
        with _averaged(self.ema, self.params), self.accelerator.autocast():
            denoiser.eval()
            try:
                yield self.trainable.as_model(fields)
            finally:
                denoiser.train()

    def save_state(self, folder: Path, step: int) -> None:
        save_training_state(
            folder,
            self.trainable.raw_weights(),
            self.optimizer,
            self.lr_scheduler,
            {"step": step, "ema_step": self.ema.optimization_step if self.ema else 0},
        )
        if self.ema is not None:
            save_file(
                {name: a.detach().contiguous().cpu() for (name, _), a in zip(self.named, self.ema.shadow_params)},
                folder / AVERAGE_FILE,
            )

    def manifest(self) -> dict:
        return {"schedule": self.trainable.schedule, **self.trainable.manifest()}

    def describe(self) -> str:
        return self.trainable.describe()

    def hardware(self) -> str:
        accelerator = self.accelerator
        return (
            f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
            f"{accelerator.mixed_precision}, global batch {self.config.batch_size * accelerator.num_processes}"
        )


def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, or with config.optimizer "adamw8bit" bitsandbytes' AdamW8bit (Dettmers et al. 2022: each moment
    quantised blockwise to 8 bits; weights under 4096 elements keep 32-bit moments)."""
    assert config.lr is not None  # TrainConfig sets it when made
    if config.optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def loss_weights(noise_scheduler: DDPMScheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """Each sample's weight in the loss: 1, or with snr_gamma > 0 the min-SNR-gamma weighting (Hang et al. 2023,
    "Efficient diffusion training via min-SNR weighting strategy"), written for the prediction the model makes.

    With SNR(t) = alpha_bar / (1 - alpha_bar), the paper's weight on the noise-prediction loss is min(SNR, gamma) / SNR;
    a v-prediction loss equals (SNR + 1) times the noise-prediction loss, hence min(SNR, gamma) / (SNR + 1) there.
    """
    if snr_gamma == 0:
        return torch.ones(len(timesteps), device=timesteps.device)
    snr = compute_snr(noise_scheduler, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return torch.clamp(snr, max=snr_gamma) / (snr + 1)
    return torch.clamp(snr_gamma / snr, max=1.0)  # min(SNR, gamma) / SNR, also where SNR is 0


def _backward(accelerator, denoiser, noisy, timesteps, labels, target, weights, micro_batch: int) -> float:
    """Back-propagate the batch's (weighted) mean squared error in passes of at most `micro_batch` samples; return
    the loss.

    Each pass's loss is weighted by its share of the batch, so the accumulated gradient is the whole batch's.
    """
    n = len(noisy)
    total = 0.0
    for first in range(0, n, micro_batch):
        part = slice(first, first + micro_batch)
        last = first + micro_batch >= n
        with contextlib.nullcontext() if last else accelerator.no_sync(denoiser):  # one gradient all-reduce
            with accelerator.autocast():
                prediction = denoiser(noisy[part], timesteps[part], labels[part])
            error = F.mse_loss(prediction.float(), target[part].float(), reduction="none")
            loss = (error.flatten(1).mean(1) * weights[part]).mean() * (len(prediction) / n)
            accelerator.backward(loss)
        total += float(loss.detach())
    return total


def _read_average(path: Path) -> dict[str, torch.Tensor]:
    written_before = path.parent.parent / "unet" / "diffusion_pytorch_model.safetensors"
    if not path.is_file() and written_before.is_file():
        # A pixel checkpoint from before average.safetensors existed: its unet/ holds the moving average.
        return load_file(written_before)
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent}: cannot resume, {path.name} (the weights' moving average) is missing: "
            "the checkpoint was written by an older napari-phendiff or trained with ema_decay 0. "
            "Start a new training run into another folder."
        )
    return load_file(path)


@contextlib.contextmanager
def _averaged(ema: EMAModel | None, params: list[torch.nn.Parameter]):
    """The EMA weights in the model while a checkpoint is written, the raw ones back afterwards."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def mixed_precision(choice: str, device: torch.device) -> str:
    """The precision accelerate trains in: `choice`, or for "auto" bf16/fp16 on CUDA and none elsewhere."""
    if choice != "auto":
        if choice != "no" and device.type != "cuda":
            raise ConfigError(
                f"Mixed precision {choice!r} needs a CUDA GPU; use mixed precision 'no' "
                f"(--mixed-precision no) on {device}."
            )
        return choice
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
