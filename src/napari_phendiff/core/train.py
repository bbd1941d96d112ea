"""Train PhenDiff's class-conditional pixel diffusion model on a labelled folder: ONE loop, yielding events.

The same loop runs on one CPU, one GPU, or several GPUs/nodes (`accelerate launch --multi_gpu -m
napari_phendiff.cli train ...`, or `torchrun --nproc_per_node N -m napari_phendiff.cli train ...`).
Each process draws its own batches, so the global batch is batch_size x processes; only the main process writes.
The loss is the usual denoising objective: noise a clean image to a random timestep t and regress the added noise
(or v), with the condition dropped to the null class 10% of the time so classifier-free guidance is possible.
"""

from __future__ import annotations

import copy
import datetime
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from .checkpoint import (MANIFEST, atomic_folder, load_training_state, read_manifest, save_training_state,
                         write_checkpoint)
from .dataset import SampleStream, TrainingSamples, load_folder
from .device import get_device
from .errors import CheckpointError, DataError
from .images import Normalization
from .models.pixel import PRESETS, SCHEDULE_DEFAULTS, build_unet


MODELS = ("pixel", "latent", "cyclegan")


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's manifest."""

    data: Path
    out: Path
    model: str = "pixel"                   # pixel (PhenDiff) | latent (Phen-LDiff) | cyclegan (baseline)
    preset: str = "tiny"
    image_size: int | None = None          # None: the preset's default
    steps: int = 5000
    batch_size: int = 16
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999
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
        if self.image_size is None:
            self.image_size = PRESETS[self.preset]["default_size"]
        for name in ("steps", "batch_size", "checkpoint_every", "image_size"):
            if getattr(self, name) < 1:
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

    torch.manual_seed(config.seed)  # same initial weights for the same seed
    unet = build_unet(config.preset, data.channels, len(data.conditions), config.image_size)
    schedule = {**SCHEDULE_DEFAULTS, **config.schedule}
    noise_scheduler = DDPMScheduler(**{k: v for k, v in schedule.items() if k != "set_alpha_to_one"})
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The LR schedule is stepped by hand once per step (not through accelerate, which would step it once per
    # process), so its length is in optimisation steps whatever the number of processes.
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    start = 0
    if resume_from:
        weights, state = load_training_state(config.out / "training", optimizer, lr_scheduler)
        unet.load_state_dict(weights)
        start = int(state["step"])
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    if resume_from:
        ema_unet = UNet2DModel.from_pretrained(config.out / "unet", use_safetensors=True)
        ema.shadow_params = [p.detach().clone().float() for p in ema_unet.parameters()]
        ema.optimization_step = int(state["ema_step"])
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)

    samples = TrainingSamples(data, normalization, config.image_size, resize=config.resize, seed=config.seed)
    stream = SampleStream(samples, start, config.steps, accelerator.process_index, config.batch_size)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.num_workers,
                                         pin_memory=accelerator.device.type == "cuda")
    manifest = _manifest(config, data, normalization, channel_names, schedule)
    null = len(data.conditions)

    def save(step: int) -> Path:
        if accelerator.is_main_process:
            _save(config.out, accelerator.unwrap_model(unet), ema, optimizer, lr_scheduler, schedule,
                  {**manifest, "trained_steps": step}, step)
        accelerator.wait_for_everyone()
        return config.out

    yield TrainEvent("start", start, config.steps, message=_start_message(config, data, start, accelerator))
    step = start
    try:
        unet.train()
        for clean, labels in loader:
            step_seed = np.random.SeedSequence([config.seed, step, accelerator.process_index, 1]).generate_state(1)
            generator = torch.Generator().manual_seed(int(step_seed[0]))
            clean = clean.to(accelerator.device, non_blocking=True)
            labels = labels.to(accelerator.device)
            noise = torch.randn(clean.shape, generator=generator).to(accelerator.device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],),
                                      generator=generator).to(accelerator.device)
            dropped = (torch.rand(clean.shape[0], generator=generator) < config.condition_dropout).to(labels.device)
            labels = torch.where(dropped, torch.full_like(labels, null), labels)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            if schedule["prediction_type"] == "v_prediction":
                target = noise_scheduler.get_velocity(clean, noise, timesteps)
            else:
                target = noise
            with accelerator.autocast():
                prediction = unet(noisy, timesteps, class_labels=labels).sample
            loss = F.mse_loss(prediction.float(), target.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            step += 1
            yield TrainEvent("step", step, config.steps, loss=float(loss.detach()), lr=lr_scheduler.get_last_lr()[0])
            if step % config.checkpoint_every == 0 and step < config.steps:
                yield TrainEvent("checkpoint", step, config.steps, path=save(step))
    except GeneratorExit:
        if step > start:
            save(step)  # Stop: keep what was learned, resumable
        raise
    yield TrainEvent("done", step, config.steps, path=save(step))


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


def _check_resume_fits(manifest: dict, data, config: TrainConfig) -> None:
    saved = manifest["training"]
    problems = [f"{name}: checkpoint {saved[name]!r}, now {value!r}"
                for name, value in (("preset", config.preset), ("image_size", config.image_size))
                if saved[name] != value]
    if manifest["conditions"] != data.conditions:
        problems.append(f"conditions: checkpoint {manifest['conditions']}, folder {data.conditions}")
    if len(manifest["channel_names"]) != data.channels:
        problems.append(f"channels: checkpoint {len(manifest['channel_names'])}, images {data.channels}")
    if int(manifest["trained_steps"]) >= config.steps:
        problems.append(f"already trained {manifest['trained_steps']} steps; ask for more with --steps")
    if problems:
        raise CheckpointError(f"{config.out}: cannot resume with these settings ({'; '.join(problems)}).")


def _manifest(config, data, normalization, channel_names, schedule) -> dict:
    from .. import __version__

    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {
        "kind": "pixel",
        "preset": config.preset,
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


def _save(out: Path, unet, ema: EMAModel, optimizer, lr_scheduler, schedule: dict, manifest: dict, step: int):
    ema_unet = copy.deepcopy(unet).float()
    ema.copy_to(ema_unet.parameters())
    with atomic_folder(out) as folder:
        write_checkpoint(folder, ema_unet, schedule, manifest)
        save_training_state(folder / "training", unet.state_dict(), optimizer, lr_scheduler,
                            {"step": step, "ema_step": ema.optimization_step})


def _start_message(config: TrainConfig, data, start: int, accelerator) -> str:
    counts = ", ".join(f"{c}: {sum(1 for l in data.labels if l == i)}" for i, c in enumerate(data.conditions))
    what = f"resuming at step {start}" if start else "starting"
    return (f"{what}: {config.preset} model, {config.image_size} px, {data.channels} channel(s), images {counts}; "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
            f"{accelerator.mixed_precision}, global batch {config.batch_size * accelerator.num_processes}")
