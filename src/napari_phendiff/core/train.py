"""Train a PhenDiff diffusion model on a labelled folder: ONE loop, yielding events.

The loop is the same for both diffusion models; what differs is a small "trainable" object: PixelTrainable (the
pixel UNet, trained from scratch, below) or models.latent.LatentTrainable (Phen-LDiff: an adapter on a pre-trained
Stable Diffusion, trained in its VAE's latent space). It provides the denoiser, the parameters to train, the
encoding of clean images, and the checkpoint writer. The CycleGAN baseline has its own loop (train_cyclegan.py).

The same loop runs on one CPU, one GPU, or several GPUs/nodes (`accelerate launch --multi_gpu -m
napari_phendiff.cli train ...`, or `torchrun --nproc_per_node N -m napari_phendiff.cli train ...`).
Each process draws its own batches, so the global batch is batch_size x processes; only the main process writes.
The loss is the usual denoising objective: noise a clean image (or its latents) to a random timestep t and regress the
added noise (or v), with the condition dropped to the null class 10% of the time so classifier-free guidance is
possible. A batch may be run through the denoiser in several passes (the latent model does, to bound memory); their
gradients add up to the whole batch's.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from .checkpoint import (MANIFEST, atomic_folder, load_training_state, read_manifest, save_training_state,
                         write_checkpoint)
from .dataset import LabelledImages, SampleStream, TrainingSamples, load_folder
from .device import get_device
from .errors import CheckpointError, DataError
from .images import Normalization
from .models.adapters import ADAPTERS
from .models.pixel import PRESETS, SCHEDULE_DEFAULTS, build_unet


MODELS = ("pixel", "latent", "cyclegan")
# Peak learning rates: training from scratch (pixel, CycleGAN as in its paper); fine-tuning a pre-trained Stable
# Diffusion, by what is trained (few new parameters take larger steps; all of its weights need small ones).
DEFAULT_LR = {"pixel": 2e-4, "cyclegan": 2e-4, "lora": 1e-4, "svdiff": 1e-3, "attention": 1e-5, "full": 1e-5}


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's manifest."""

    data: Path
    out: Path
    model: str = "pixel"                   # pixel (PhenDiff) | latent (Phen-LDiff) | cyclegan (baseline)
    preset: str = "tiny"
    image_size: int | None = None          # None: the preset's default (latent: the base model's own size)
    steps: int = 5000
    batch_size: int = 16
    lr: float | None = None                # None: DEFAULT_LR for the model (and adapter)
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999               # 0: no averaging
    condition_dropout: float = 0.1
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"          # auto | no | bf16 | fp16 (auto: bf16/fp16 on CUDA, none elsewhere)
    resize: bool = False                   # scale whole images to the model size instead of random crops
    resume: bool = False
    num_workers: int = 0
    channel_names: list[str] | None = None
    base: str | None = None                # latent: the pre-trained Stable Diffusion folder or hub id
    adapter: str = "lora"                  # latent: lora | svdiff | attention | full
    rank: int = 4                          # latent: LoRA rank
    gradient_checkpointing: bool = False   # latent: trade compute for memory
    schedule: dict = field(default_factory=dict)   # overrides of models.pixel.SCHEDULE_DEFAULTS
    metadata: dict = field(default_factory=dict)   # free-form, copied into the manifest (e.g. how data was made)

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}: choose one of {', '.join(MODELS)}.")
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}.")
        if self.model == "latent":
            if not self.base:
                raise CheckpointError("The latent model fine-tunes a pre-trained Stable Diffusion: give its folder or "
                                      "hub id with --base (docs/latent.md says how to download one).")
            if self.adapter not in ADAPTERS:
                raise ValueError(f"Unknown adapter {self.adapter!r}: choose one of {', '.join(ADAPTERS)}.")
        elif self.image_size is None:
            self.image_size = PRESETS[self.preset]["default_size"]
        if self.lr is None:
            self.lr = DEFAULT_LR[self.adapter if self.model == "latent" else self.model]
        for name in ("steps", "batch_size", "checkpoint_every", "image_size", "rank"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")


@dataclass(frozen=True)
class TrainEvent:
    """kind: "start", "step", "checkpoint" or "done"; `path` is set for checkpoints."""

    kind: str
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    path: Path | None = None
    message: str = ""


def train(config: TrainConfig) -> Path:
    """Run training to the end (no progress display) and return the checkpoint folder."""
    for _ in iter_train(config):
        pass
    return config.out


def iter_train(config: TrainConfig) -> Iterator[TrainEvent]:
    """Train step by step. Closing the generator (a Stop button, Ctrl-C) saves a resumable checkpoint first."""
    if config.model == "cyclegan":
        from .train_cyclegan import iter_train_cyclegan

        yield from iter_train_cyclegan(config)
        return
    from accelerate import Accelerator

    device = get_device(config.device)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision, device),
                              cpu=device.type == "cpu")
    resume_from = _check_out_folder(config)
    if config.model == "latent" and config.image_size is None:
        from .models.latent import native_image_size

        config = replace(config, image_size=native_image_size(config.base))
    data, normalization, channel_names = load_training_data(config, resume_from)

    torch.manual_seed(config.seed)  # same initial weights for the same seed
    trainable = _trainable(config, data, accelerator)
    named = trainable.named_parameters()
    params = [p for _, p in named]
    noise_scheduler = DDPMScheduler.from_config(trainable.schedule)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # The LR schedule is stepped by hand once per step (not through accelerate, which would step it once per
    # process), so its length is in optimisation steps whatever the number of processes.
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    ema = EMAModel(params, decay=config.ema_decay) if config.ema_decay > 0 else None
    start = 0
    if resume_from:
        weights, state = load_training_state(config.out / "training", optimizer, lr_scheduler)
        trainable.load_raw_weights(weights)
        start = int(state["step"])
        if ema is not None:
            average = _read_average(config.out / "training" / AVERAGE_FILE)
            ema.shadow_params = [average[name].to(p.device, torch.float32) for name, p in named]
            ema.optimization_step = int(state["ema_step"])
    denoiser, optimizer = accelerator.prepare(trainable.denoiser, optimizer)
    if ema is not None:
        ema.to(accelerator.device)

    samples = TrainingSamples(data, normalization, config.image_size, resize=config.resize, seed=config.seed)
    stream = SampleStream(samples, start, config.steps, accelerator.process_index, config.batch_size)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.num_workers,
                                         pin_memory=accelerator.device.type == "cuda")
    manifest = {**_manifest(config, data, normalization, channel_names, trainable.schedule), **trainable.manifest()}
    null = len(data.conditions)
    micro_batch = trainable.micro_batch or config.batch_size

    def save(step: int) -> Path:
        if accelerator.is_main_process:
            with atomic_folder(config.out) as folder:
                with _averaged(ema, params):
                    trainable.write(folder, {**manifest, "trained_steps": step})
                save_training_state(folder / "training", trainable.raw_weights(), optimizer, lr_scheduler,
                                    {"step": step, "ema_step": ema.optimization_step if ema else 0})
                if ema is not None:
                    save_file({name: a.detach().contiguous().cpu() for (name, _), a in zip(named, ema.shadow_params)},
                              folder / "training" / AVERAGE_FILE)
        accelerator.wait_for_everyone()
        return config.out

    yield TrainEvent("start", start, config.steps, message=_start_message(config, data, start, accelerator, trainable))
    step = start
    try:
        denoiser.train()
        for clean, labels in loader:
            step_seed = np.random.SeedSequence([config.seed, step, accelerator.process_index, 1]).generate_state(1)
            generator = torch.Generator().manual_seed(int(step_seed[0]))
            clean = trainable.encode(clean.to(accelerator.device, non_blocking=True))
            labels = labels.to(accelerator.device)
            noise = torch.randn(clean.shape, generator=generator).to(accelerator.device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],),
                                      generator=generator).to(accelerator.device)
            dropped = (torch.rand(clean.shape[0], generator=generator) < config.condition_dropout).to(labels.device)
            labels = torch.where(dropped, torch.full_like(labels, null), labels)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(clean, noise, timesteps)
            else:
                target = noise
            loss = _backward(accelerator, denoiser, noisy, timesteps, labels, target, micro_batch)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(params)
            step += 1
            yield TrainEvent("step", step, config.steps, loss=float(loss), lr=lr_scheduler.get_last_lr()[0])
            if step % config.checkpoint_every == 0 and step < config.steps:
                yield TrainEvent("checkpoint", step, config.steps, path=save(step))
    except GeneratorExit:
        if step > start:
            save(step)  # Stop: keep what was learned, resumable
        raise
    yield TrainEvent("done", step, config.steps, path=save(step))


AVERAGE_FILE = "average.safetensors"  # the EMA weights of the trained parameters, by name, to resume averaging


class PixelTrainable:
    """PhenDiff's pixel UNet, trained from scratch: every weight, on the normalised images themselves."""

    micro_batch = None  # the whole batch in one pass

    def __init__(self, config: TrainConfig, conditions: list[str], channels: int):
        self.unet = build_unet(config.preset, channels, len(conditions), config.image_size)
        self.denoiser = _ClassConditional(self.unet)
        self.schedule = {**SCHEDULE_DEFAULTS, **config.schedule}
        self.preset = config.preset

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.unet.named_parameters())

    def encode(self, clean: torch.Tensor) -> torch.Tensor:
        return clean

    def raw_weights(self) -> dict[str, torch.Tensor]:
        return self.unet.state_dict()

    def load_raw_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.unet.load_state_dict(weights)

    def manifest(self) -> dict:
        return {"kind": "pixel"}

    def write(self, folder: Path, manifest: dict) -> None:
        write_checkpoint(folder, self.unet, self.schedule, manifest)

    def describe(self) -> str:
        return f"{self.preset} pixel model"


class _ClassConditional(torch.nn.Module):
    """The pixel UNet called as the loop calls every denoiser: (noisy, t, condition labels) -> prediction."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, t, class_labels=labels).sample


def _trainable(config: TrainConfig, data, accelerator):
    if config.model == "latent":
        from .models.latent import LatentTrainable

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
        return LatentTrainable(config, data.conditions, data.channels, accelerator.device, dtype)
    return PixelTrainable(config, data.conditions, data.channels)


def _backward(accelerator, denoiser, noisy, timesteps, labels, target, micro_batch: int) -> float:
    """Back-propagate the batch's mean squared error in passes of at most `micro_batch` samples; return the loss.

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
            loss = F.mse_loss(prediction.float(), target[part].float()) * (len(prediction) / n)
            accelerator.backward(loss)
        total += float(loss.detach())
    return total


def _read_average(path: Path) -> dict[str, torch.Tensor]:
    written_before = path.parent.parent / "unet" / "diffusion_pytorch_model.safetensors"
    if not path.is_file() and written_before.is_file():
        # A pixel checkpoint from before average.safetensors existed: its unet/ holds the moving average.
        return load_file(written_before)
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: cannot resume, {path.name} (the weights' moving average) is missing: "
                              "the checkpoint was written by an older napari-phendiff or trained with ema_decay 0. "
                              "Start a new training run into another folder.")
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


def _mixed_precision(choice: str, device: torch.device) -> str:
    if choice != "auto":
        if choice != "no" and device.type != "cuda":
            raise ValueError(f"Mixed precision {choice!r} needs a CUDA GPU; use --mixed-precision no on {device}.")
        return choice
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _check_out_folder(config: TrainConfig) -> bool:
    """True when resuming from an existing checkpoint; refuse to overwrite anything else."""
    out = config.out
    has_checkpoint = (out / MANIFEST).is_file()
    if config.resume:
        if has_checkpoint and not (out / "training").is_dir():
            raise CheckpointError(f"{out}: this checkpoint holds no training state, so it cannot be resumed.")
        return has_checkpoint
    if out.exists() and any(out.iterdir()):
        what = "a checkpoint" if has_checkpoint else "files"
        raise CheckpointError(f"{out}: already holds {what}. Add --resume to continue that training, or choose "
                              "another output folder.")
    return False


def load_training_data(config: TrainConfig, resume_from: bool) -> tuple[LabelledImages, Normalization, list[str]]:
    """The labelled images, their normalisation (the checkpoint's when resuming, so intensities keep their meaning)
    and the channel names, after checking that a resumed run still fits its checkpoint."""
    data = load_folder(config.data, min_size=None if config.resize else config.image_size)
    if resume_from:
        manifest = read_manifest(config.out)
        _check_resume_fits(manifest, data, config)
        normalization = Normalization.from_dict(manifest["normalization"])
    else:
        normalization = Normalization.fit(data.images)
    channel_names = config.channel_names or [f"channel {i + 1}" for i in range(data.channels)]
    if len(channel_names) != data.channels:
        raise DataError(f"{len(channel_names)} channel names given for images with {data.channels} channels.")
    return data, normalization, channel_names


def _check_resume_fits(manifest: dict, data, config: TrainConfig) -> None:
    saved = manifest["training"]
    problems = [f"{name}: checkpoint {saved[name]!r}, now {value!r}"
                for name, value in (("preset", config.preset), ("image_size", config.image_size))
                if saved[name] != value]
    if manifest.get("kind", "pixel") != config.model:
        problems.append(f"model: checkpoint {manifest.get('kind', 'pixel')!r}, now {config.model!r}")
    if config.model == "latent":
        problems += _latent_resume_problems(manifest, config)
    if manifest["conditions"] != data.conditions:
        problems.append(f"conditions: checkpoint {manifest['conditions']}, folder {data.conditions}")
    if len(manifest["channel_names"]) != data.channels:
        problems.append(f"channels: checkpoint {len(manifest['channel_names'])}, images {data.channels}")
    if int(manifest["trained_steps"]) >= config.steps:
        problems.append(f"already trained {manifest['trained_steps']} steps; ask for more with --steps")
    if problems:
        raise CheckpointError(f"{config.out}: cannot resume with these settings ({'; '.join(problems)}).")


def _latent_resume_problems(manifest: dict, config: TrainConfig) -> list[str]:
    from .models.latent import base_configs, config_hash, resolve_base

    saved = manifest["training"]
    problems = [f"{name}: checkpoint {saved[name]!r}, now {getattr(config, name)!r}"
                for name in ("adapter",) + (("rank",) if config.adapter == "lora" else ())
                if saved[name] != getattr(config, name)]
    if config_hash(base_configs(resolve_base(config.base))[0]) != manifest["base"]["unet_config_sha256"]:
        problems.append(f"base: checkpoint {manifest['base']['source']}, now {config.base}, a different model")
    return problems


def _manifest(config, data, normalization, channel_names, schedule) -> dict:
    from .. import __version__

    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {
        "kind": config.model,
        **({} if config.model == "latent" else {"preset": config.preset}),
        "conditions": data.conditions,
        "channel_names": channel_names,
        "image_size": config.image_size,
        "normalization": normalization.to_dict(),
        "schedule": schedule,
        "training": training,
        "metadata": config.metadata,
        "provenance": {
            "napari_phendiff": __version__,
            "torch": torch.__version__,
            "data_folder": str(Path(config.data).resolve()),
            "images_per_condition": {c: int(np.sum(np.asarray(data.labels) == i))
                                     for i, c in enumerate(data.conditions)},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
        },
    }


def _start_message(config: TrainConfig, data, start: int, accelerator, trainable) -> str:
    counts = ", ".join(f"{c}: {sum(1 for l in data.labels if l == i)}" for i, c in enumerate(data.conditions))
    what = f"resuming at step {start}" if start else "starting"
    return (f"{what}: {trainable.describe()}, {config.image_size} px, {data.channels} channel(s), images {counts}; "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
            f"{accelerator.mixed_precision}, global batch {config.batch_size * accelerator.num_processes}")
