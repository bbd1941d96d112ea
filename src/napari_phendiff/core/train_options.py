"""Training options: TrainConfig, checked when made, with its defaults, choices and help texts (the CLI's `train` and
`generalization` flags and the Train dock are made from these). No torch here.

core/options.py holds the translation options and reads these out again: consumers import both from there.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .checks import check_choice, finite_number, whole_number
from .errors import ConfigError
from .models import KINDS
from .models.bases import DEFAULT_BASE

DEVICES = ("auto", "cuda", "mps", "cpu")  # where to run: training, and translation's --device (core/device.py)
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit")  # adamw8bit: bitsandbytes' AdamW with 8-bit moments (diffusion kinds)
# Model sizes of the kinds trained from scratch (models/pixel.py and models/cyclegan.py give each its layers), with
# the crop side each trains on by default.
PRESET_SIZES = {"tiny": 64, "small": 64, "paper": 128}
ADAPTERS = ("lora", "svdiff", "attention", "full")  # what a fine-tuned kind trains (models/adapters.py)
# Peak learning rates of fine-tuning a pre-trained Stable Diffusion, by what is trained (few new parameters take
# larger steps; all of its weights need small ones). A kind trained from scratch carries its own (models.Kind.lr).
ADAPTER_LR = {"lora": 1e-4, "svdiff": 1e-3, "attention": 1e-5, "full": 1e-5}


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's manifest. Checked when made (ConfigError)."""

    data: Path
    out: Path
    model: str = "pixel"  # a kind of models.KINDS: pixel (PhenDiff) | latent | cyclegan
    preset: str = "tiny"
    image_size: int | None = None  # None: the preset's default (fine-tuned kinds: the base model's own)
    steps: int | None = None  # None: default_steps for the model and base
    minutes: float | None = None  # a time budget: steps set from a timed probe (training.run.fit_budget)
    batch_size: int = 16
    lr: float | None = None  # None: default_lr for the model (and adapter and base)
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0: no averaging
    condition_dropout: float = 0.1
    snr_gamma: float = 0.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain squared error
    noise_offset: float = 0.0  # a per-image, per-channel constant added to the training noise (Guttenberg 2023)
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes: the two moments in 8 bits, 6 bytes per weight less)
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16 (auto: bf16/fp16 on CUDA, none elsewhere)
    resize: bool = False  # scale whole images to the model size instead of random crops
    resume: bool = False
    num_workers: int = 0
    channel_names: list[str] | None = None
    base: str | None = None  # fine-tuned kinds: the shipped base's name, a Stable Diffusion folder or
    # hub id (None: the shipped base, models.bases.DEFAULT_BASE)
    start_from: str | None = None  # kinds trained from scratch: a checkpoint (or "demo") whose weights start
    # this run, its condition rows renamed to the folder's conditions
    adapter: str = "lora"  # fine-tuned kinds: lora | svdiff | attention | full
    rank: int = 4  # LoRA rank
    gradient_checkpointing: bool = False  # fine-tuned kinds: trade compute for memory
    schedule: dict = field(default_factory=dict)  # overrides of models.pixel.SCHEDULE_DEFAULTS
    metadata: dict = field(default_factory=dict)  # free-form, copied into the manifest (e.g. how data was made)

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        check_choice("model", self.model, tuple(KINDS))
        check_choice("preset", self.preset, tuple(PRESET_SIZES))
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("device", str(self.device).split(":")[0], DEVICES)  # cuda:1 is a cuda device
        self._settle_model()
        self._check_counts()
        self._check_reals()

    def _settle_model(self) -> None:
        """The kind's own settings: a fine-tuned kind's base and adapter, a kind trained from scratch's image size,
        the checkpoint a run starts from; then the learning rate and steps they imply when none were given."""
        kind = KINDS[self.model]
        if kind.fine_tunes:
            self.base = str(self.base).strip() if self.base and str(self.base).strip() else DEFAULT_BASE
            check_choice("adapter", self.adapter, ADAPTERS)
            if self.start_from:
                raise ConfigError(
                    f"The {self.model} model starts from its base model: give the checkpoint's base "
                    "as the base model (--base) instead of a checkpoint to start from (--start-from)."
                )
        elif self.image_size is None:
            self.image_size = PRESET_SIZES[self.preset]
        if self.start_from is not None and not str(self.start_from).strip():
            self.start_from = None
        if self.start_from and not kind.fine_tunes and not kind.starts_from:
            raise ConfigError(
                f"The {self.model} model cannot start from a checkpoint yet; train it from scratch "
                "(leave the checkpoint to start from empty)."
            )
        if self.lr is None:
            self.lr = default_lr(self.model, self.adapter, self.base)
        if self.steps is None:
            self.steps = default_steps(self.model, self.base)

    def _check_counts(self) -> None:
        """The whole-number settings, each at least its lowest value (ConfigError)."""
        for name, low in (
            ("steps", 1),
            ("batch_size", 1),
            ("checkpoint_every", 1),
            ("image_size", 1),
            ("rank", 1),
            ("warmup_steps", 0),
            ("num_workers", 0),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if value is not None:
                value = whole_number(name, value)
                if value < low:
                    raise ConfigError(f"{name} must be at least {low}, not {value}.")
                setattr(self, name, value)

    def _check_reals(self) -> None:
        """The time budget, the learning rate and the other real-number settings, each in its range (ConfigError)."""
        if self.minutes is not None:
            self.minutes = finite_number("minutes", self.minutes)
            if not self.minutes > 0:
                raise ConfigError(f"minutes (the training time budget) must be above 0, not {self.minutes}.")
            if self.resume:
                raise ConfigError(
                    "A time budget (minutes) sets the steps of a new run; a resumed run continues "
                    "to its steps: resume without minutes, with the steps to reach."
                )
        self.lr = finite_number("lr", self.lr)
        if not self.lr > 0:
            raise ConfigError(f"lr (the learning rate) must be above 0, not {self.lr}.")
        for name, low, high in (
            ("weight_decay", 0, math.inf),
            ("grad_clip", 0, math.inf),
            ("ema_decay", 0, 1),
            ("condition_dropout", 0, 1),
            ("snr_gamma", 0, math.inf),
            ("noise_offset", 0, 1),
        ):
            value = finite_number(name, getattr(self, name))
            if not low <= value < high or (name == "grad_clip" and value == 0):
                raise ConfigError(
                    f"{name} must be in [{low}, {high}){' and above 0' if name == 'grad_clip' else ''}, not {value}."
                )
            setattr(self, name, value)

    @property
    def kind(self):
        """The model kind's registry entry (models.KINDS)."""
        return KINDS[self.model]


DEFAULT_STEPS_TRAINING = 5000  # a run's steps when none are given, unless its base says otherwise


def default_steps(model: str, base: str | None = None) -> int:
    """The steps a run gets when none are given: a shipped base's own fine-tuning steps (base.json: what fits in
    minutes on a laptop CPU, docs/benchmarks.md), else DEFAULT_STEPS_TRAINING."""
    if not KINDS[model].fine_tunes:
        return DEFAULT_STEPS_TRAINING
    from .models.bases import shipped_base_info

    return int(shipped_base_info(base or DEFAULT_BASE).get("fine_tune_steps", DEFAULT_STEPS_TRAINING))


def default_lr(model: str, adapter: str = "lora", base: str | None = None) -> float:
    """The peak learning rate a run gets when none is given: a shipped base's own for each adapter (its base.json
    says which it was fine-tuned with in the benchmarks), else ADAPTER_LR for the adapter, or the kind's own."""
    if not KINDS[model].fine_tunes:
        return KINDS[model].lr
    from .models.bases import shipped_base_info

    rates = shipped_base_info(base or DEFAULT_BASE).get("learning_rates", {})
    return float(rates.get(adapter, ADAPTER_LR[adapter]))


# The choices of the TrainConfig fields that have them (the CLI and the Train dock offer exactly these).
TRAIN_CHOICES = {
    "model": KINDS.keys(),
    "preset": tuple(PRESET_SIZES),
    "adapter": ADAPTERS,
    "mixed_precision": MIXED_PRECISIONS,
    "optimizer": OPTIMIZERS,
    "device": DEVICES,
}

TRAIN_HELP = {
    "model": "; ".join(f"{name}: {kind.help}" for name, kind in KINDS.items()),
    "preset": "model size: pixel tiny (4M parameters, CPU), small (16M), paper (63M, GPU); cyclegan "
    "tiny/small/paper = 16/32/64 filters (paper: the original; use batch size 1-4)",
    "base": f"fine-tuned models: the pre-trained base: '{DEFAULT_BASE}' (shipped, offline; the default), a Stable "
    "Diffusion folder (diffusers layout) or a hub id",
    "start_from": "pixel models: a checkpoint (or 'demo') whose weights this run starts from instead of "
    "random ones; the folder's conditions take its condition rows (same names keep theirs)",
    "adapter": "fine-tuned models: what to fine-tune",
    "rank": "LoRA rank",
    "gradient_checkpointing": "fine-tuned models: less memory, slower steps",
    "image_size": "crop side in pixels (default: the preset's, 64 or 128; fine-tuned models: the base model's own, "
    "e.g. 512 for SD 2.1-base)",
    "steps": "optimisation steps (a resumed run continues up to this number; default: 5000, or the shipped base's "
    "own fine-tuning steps)",
    "minutes": "train for about this many minutes instead of a number of steps: 8 steps are timed on this "
    "computer first and the run gets the steps that fit (loading, checkpoints and previews come on top)",
    "batch_size": "images per step and process",
    "lr": "peak learning rate (default: pixel and cyclegan 2e-4; latent on the shipped base its own, base.json: "
    "lora 3e-3, svdiff 1e-3, attention and full 1e-4; on a Stable Diffusion base lora 1e-4, svdiff 1e-3, "
    "attention and full 1e-5)",
    "resize": "scale whole images to the model size instead of cropping",
    "channel_names": "names of the channels, in order (e.g. DNA reporter)",
    "mixed_precision": "auto: bf16 or fp16 on a CUDA GPU, none elsewhere",
    "num_workers": "data loader worker processes",
    "seed": "random seed of the initial weights and of the batches",
    "device": "where to train: auto takes the best available (cuda > mps > cpu)",
    "condition_dropout": "share of training images shown with the null condition (what guidance against 'null' "
    "contrasts with)",
    "snr_gamma": "min-SNR-gamma loss weighting (Hang et al. 2023; 5 is the paper's value); 0: every noise level "
    "weighted as plain mean squared error",
    "noise_offset": "a random constant per image and channel added to the training noise, times this (0.1 is "
    "common; lets a model learn overall brightness, such as dark fluorescence backgrounds); 0: none",
    "optimizer": "adamw, or adamw8bit: AdamW with its two moments in 8 bits (bitsandbytes, pip install "
    "bitsandbytes; CPU or GPU): 2 instead of 8 bytes per trained weight, for a full fine-tune that does not fit",
    "checkpoint_every": "save a checkpoint every N steps",
    "resume": "continue the training saved in the output folder",
}
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.init and f.default is not MISSING}
