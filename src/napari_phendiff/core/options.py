"""Training and translation options: the one place that names them, their defaults, choices, checks and help texts.

No torch here, so the command line can build its parser from it without importing the engine. A new translation
option is one field of TranslateOptions (with its Flag: help and command-line shape; its check in `validate`) plus
its use in core/translate.py or core/walk.py; a new training option is one field of TrainConfig (with its check and
its words in TRAIN_HELP) plus its use in core/training/. The CLI, the docks, batch, demo, evaluate and the provenance
of written files read them from here.

Defaults come in four layers, the first that has a value wins, and `resolve_options` says which one each value came
from: what the user gave, the checkpoint's own calibrated setting for this direction (`phendiff calibrate` stores it
in the manifest), the model's default (a fine-tune of the shipped base records the setting its fine-tunes were
measured to translate at, from the base's base.json), and the project defaults below, chosen on the simulator's
ground truth (docs/method.md, benchmarks/translation_frontier.py).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from .errors import CheckpointError, ConfigError
from .models import KINDS
from .models.bases import DEFAULT_BASE

NEGATIVES = ("null", "source")
INVERSIONS = ("ddim", "bdia")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_STEPS = 1000  # the training schedule's length: a DDIM grid cannot be finer
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
# Model sizes of the kinds trained from scratch (models/pixel.py and models/cyclegan.py give each its layers), with
# the crop side each trains on by default.
PRESET_SIZES = {"tiny": 64, "small": 64, "paper": 128}
ADAPTERS = ("lora", "svdiff", "attention", "full")  # what a fine-tuned kind trains (models/adapters.py)
# Peak learning rates: training from scratch (pixel, CycleGAN as in its paper); fine-tuning a pre-trained Stable
# Diffusion, by what is trained (few new parameters take larger steps; all of its weights need small ones).
DEFAULT_LR = {"pixel": 2e-4, "cyclegan": 2e-4, "lora": 1e-4, "svdiff": 1e-3, "attention": 1e-5, "full": 1e-5}

# Project defaults, measured on the simulator's ground truth (benchmarks/translation_frontier.py, docs/method.md):
# inverting the whole schedule (strength 1) throws the cells away; guidance contrasted with the source condition
# moves the phenotype. Over the demo model and three simulated phenotypes (both directions each), strength 0.3 with
# guidance 4 came closest to keeping nuclei at 0.9 of the segmentation's ceiling while moving most cells; a 20-step
# grid did as well as 50 at partial strength, at 2.5x less time. `phendiff calibrate` picks per checkpoint.
DEFAULT_STEPS = 20
DEFAULT_STRENGTH = 0.3
DEFAULT_GUIDANCE = 4.0
DEFAULT_NEGATIVE = "source"

# Fields per condition `phendiff demo` simulates. Its medians over 3 fields were too noisy to read: the real untreated
# median alone came out 0.56 on 3 fields, 0.58 on 8 and 0.62 on 20; 8 fields take about twice the time of 3.
DEMO_FIELDS = 8

# How a morph goes from the original to the translation (core/explore.py; compared in docs/benchmarks.md morph_path).
MORPH_PATHS = ("strength", "embedding")

# The settings `phendiff calibrate` may store per direction in the checkpoint manifest.
CALIBRATED_FIELDS = ("strength", "guidance", "negative", "guidance_interval", "inversion", "keep_channels")


@dataclass(frozen=True)
class Flag:
    """How a TranslateOptions field reads on the command line and in tooltips: its help, and the shape of its flag
    (`--name-with-dashes`). The CLI turns each into an argparse argument (cli.py), so a new option needs no CLI code."""

    help: str
    type: type | None = None
    choices: tuple = ()
    nargs: int | str | None = None
    metavar: str | tuple | None = None
    shown: str | None = None          # the default as the help shows it (None: the field's default; "": not shown)
    words: dict | None = None         # flag word -> field value, for a field whose values are not words (tiles)
    boolean: bool = False             # --name / --no-name

    def argument(self, name: str, default) -> dict:
        """The keyword arguments of argparse's add_argument for field `name` (its value unset: None)."""
        shown = self.shown if self.shown is not None else (f"{default:g}" if isinstance(default, float) else
                                                            str(default))
        kwargs = dict(help=self.help + (f" (default {shown})" if shown else ""), default=None)
        if self.words:
            kwargs.update(choices=list(self.words), default=next(w for w, v in self.words.items() if v == default))
        for key in ("type", "nargs", "metavar"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.choices:
            kwargs["choices"] = list(self.choices)
        return kwargs

    def value(self, given):
        """The field's value from what argparse parsed (None: not given)."""
        if given is None:
            return None
        if self.words:
            return self.words[given]
        return tuple(given) if isinstance(given, list) else given


def option(default, flag: Flag):
    """A TranslateOptions field: its default and its Flag."""
    return field(default=default, metadata={"flag": flag})


@dataclass(frozen=True)
class TranslateOptions:
    """How a translation is run. Every field has a default and a Flag (its help and command-line shape); `validate`
    explains a bad value before any work. `record` and `from_record` are its one conversion to and from JSON."""

    steps: int = option(DEFAULT_STEPS, Flag(
        "DDIM steps of the whole noise schedule; at strength s, s x steps are run each way", int))
    strength: float = option(DEFAULT_STRENGTH, Flag(
        "how far the image is taken apart before it is rebuilt, 0 < s <= 1: low keeps every cell, high lets the "
        "condition change more; 1 inverts to pure noise (the original PhenDiff translation)", float))
    guidance: float = option(DEFAULT_GUIDANCE, Flag(
        "guidance scale w: eps = eps(negative) + w x (eps(target) - eps(negative)); 1 = none", float))
    negative: str = option(DEFAULT_NEGATIVE, Flag(
        "what guidance contrasts the target with: 'source' (the source condition: what differs between the "
        "conditions) or 'null' (classic classifier-free guidance)", choices=NEGATIVES))
    guidance_interval: tuple[float, float] = option((0.0, 1.0), Flag(
        "apply guidance only at noise levels t/T within LOW HIGH (fractions of the schedule, 0 = clean, 1 = pure "
        "noise)", float, nargs=2, metavar=("LOW", "HIGH"), shown="0 1: everywhere"))
    inversion: str = option("ddim", Flag(
        "'ddim' (plain DDIM inversion) or 'bdia' (exact inversion, Zhang et al. 2023; same cost)",
        choices=INVERSIONS))
    keep_channels: tuple[str, ...] = option((), Flag(
        "channels the conditions do not change (e.g. DNA): they stay the original's exactly, and the other channels "
        "are regenerated around them (latent models: pasted after decoding)", nargs="+", metavar="CHANNEL",
        shown="none"))
    eta: float = option(0.0, Flag(
        "0 = deterministic DDIM; > 0 adds noise drawn from the seed during regeneration", float))
    seed: int = option(0, Flag("random seed (matters only for eta > 0); recorded with the result", int))
    batch_size: int | None = option(None, Flag(
        "tiles or fields per network call", int, shown="by device memory"))
    precision: str = option("fp32", Flag(
        "network precision: fp32, bf16 or fp16 (faster on GPUs, see docs/benchmarks.md)", choices=PRECISIONS))
    tiles: bool | None = option(None, Flag(
        "whole fields when they fit the device's memory budget, tiles of the model's size beyond it (auto); "
        "'whole' or 'tiles' forces either", words={"auto": None, "whole": False, "tiles": True}, shown=""))
    # on: a sparse 384-px field took 5.3 s instead of 29.2 with the same transfer, dense fields lost nothing (no
    # tile was copied); docs/benchmarks.md laptop_field
    skip_background: bool = option(True, Flag(
        "in tiles, copy the tiles with no cell within a quarter tile of them (the channels' mean below the field's "
        "Otsu threshold) instead of translating them", boolean=True, shown="on"))

    def validate(self) -> "TranslateOptions":
        """Return self with normalised types, or raise ConfigError naming the option and the allowed values."""
        steps = _integer("steps", self.steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ConfigError(f"steps must be between 1 and {MAX_STEPS} (the training schedule's length), "
                              f"not {self.steps}.")
        strength = _number("strength", self.strength)
        if not 0 < strength <= 1:
            raise ConfigError(f"strength must be in (0, 1] (how far the image is inverted: 1 = to pure noise), "
                              f"not {self.strength}.")
        guidance = _number("guidance", 1.0 if self.guidance is None else self.guidance)
        if guidance < 0:
            raise ConfigError(f"guidance must be >= 0 (1 = no guidance), not {self.guidance}.")
        if self.negative not in NEGATIVES:
            raise ConfigError(f"negative must be one of {', '.join(NEGATIVES)}, not {self.negative!r}.")
        interval = tuple(self.guidance_interval) if self.guidance_interval is not None else (0.0, 1.0)
        if len(interval) != 2:
            raise ConfigError(f"guidance_interval must be two numbers (low, high), not {self.guidance_interval!r}.")
        low, high = (_number("guidance_interval", v) for v in interval)
        if not 0 <= low <= high <= 1:
            raise ConfigError(f"guidance_interval must satisfy 0 <= low <= high <= 1 (fractions of the noise "
                              f"schedule), not {self.guidance_interval!r}.")
        if self.inversion not in INVERSIONS:
            raise ConfigError(f"inversion must be one of {', '.join(INVERSIONS)}, not {self.inversion!r}.")
        keep = (self.keep_channels,) if isinstance(self.keep_channels, str) else tuple(self.keep_channels or ())
        if any(not isinstance(name, str) or not name for name in keep) or len(set(keep)) < len(keep):
            raise ConfigError(f"keep_channels must be distinct channel names, not {self.keep_channels!r}.")
        if keep and self.inversion == "bdia":
            raise ConfigError("keep_channels replaces the kept channels by the inversion's own at every step, "
                              "which an exact (bdia) walk cannot follow: use inversion 'ddim' with it.")
        eta = _number("eta", self.eta)
        if eta < 0:
            raise ConfigError(f"eta must be >= 0 (0 = deterministic DDIM), not {self.eta}.")
        if eta > 0 and self.inversion == "bdia":
            raise ConfigError("inversion 'bdia' is exact only for deterministic generation: use eta 0 with it.")
        seed = _integer("seed", self.seed)
        batch = None if self.batch_size is None else _integer("batch_size", self.batch_size)
        if batch is not None and batch < 1:
            raise ConfigError(f"batch_size must be at least 1 (or left out for the device's default), not {batch}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        if self.tiles not in (None, True, False):
            raise ConfigError(f"tiles must be True, False or None (by memory), not {self.tiles!r}.")
        if self.skip_background not in (True, False):
            raise ConfigError(f"skip_background must be True or False, not {self.skip_background!r}.")
        return replace(self, steps=steps, strength=strength, guidance=guidance, guidance_interval=(low, high),
                       keep_channels=keep, eta=eta, seed=seed, batch_size=batch)

    @property
    def run_steps(self) -> int:
        """Network steps run each way: strength x steps, at least one."""
        return grid_steps(self.steps, self.strength)

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def record(self) -> dict:
        """The settings as plain JSON values, for provenance."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_record(cls, values: dict) -> "TranslateOptions":
        """Options from `record`'s JSON values (lists back to tuples), checked."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value
                      for name, value in values.items()}).validate()


def flags() -> dict[str, Flag]:
    """Each translation option's Flag, by field name (read when asked, so every field of the class is there)."""
    return {f.name: f.metadata["flag"] for f in fields(TranslateOptions)}


HELP = {name: flag.help for name, flag in flags().items()}  # the words of each option: CLI help, dock tooltips


def grid_steps(steps: int, strength: float) -> int:
    """How many steps of a `steps`-step grid a translation at `strength` runs each way (at least one)."""
    return max(1, round(strength * steps))


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


def check_count(name: str, value, allow_none: bool = False) -> int | None:
    """How many of something (images, steps): a whole number of at least 1 (None where `allow_none`: all)."""
    if value is None and allow_none:
        return None
    value = _integer(name, value)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}.")
    return value


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, not {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value}.")
    return float(value)


FIELD_NAMES = tuple(f.name for f in fields(TranslateOptions))


def condition_name(name: str) -> str:
    """A condition's name in one Unicode form (NFC): a folder named 'traité' on macOS (decomposed, NFD) and the same
    name typed on a command line (composed) look the same and must be the same condition."""
    return unicodedata.normalize("NFC", name)


def direction_key(source: str, target: str) -> str:
    return f"{condition_name(source)}->{condition_name(target)}"


def calibrated_settings(manifest: dict | None, source: str, target: str) -> dict:
    """The checkpoint's calibrated settings for source -> target (empty when it was not calibrated for it).

    An entry that is not a valid setting (edited by hand) raises CheckpointError naming it, rather than failing
    later as if the user had typed it."""
    key = direction_key(source, target)
    calibration = (manifest or {}).get("calibration") or {}
    where = f"The checkpoint's calibrated setting for {source} -> {target} (calibration[{key!r}] in its phendiff.json)"
    if not isinstance(calibration, dict):
        raise _invalid_setting(where, f"is inside a {type(calibration).__name__}, not a table of directions")
    return _checked_setting(calibration.get(key) or {}, manifest, where)


def model_defaults(manifest: dict | None) -> dict:
    """The settings the model itself translates at unless calibrated (`translation_defaults` in its manifest: a
    fine-tune of the shipped base takes them from the base's base.json, where they were measured); {} for none."""
    where = "The checkpoint's default setting (translation_defaults in its phendiff.json)"
    return _checked_setting((manifest or {}).get("translation_defaults") or {}, manifest, where)


def _invalid_setting(where: str, why: str) -> CheckpointError:
    return CheckpointError(f"{where} {why.rstrip('.')}. Calibrate it again (phendiff calibrate) or remove that "
                           "entry.")


def _checked_setting(entry, manifest: dict | None, where: str) -> dict:
    """A stored setting's CALIBRATED_FIELDS, checked as the user's would be but blamed on the checkpoint."""
    if not isinstance(entry, dict):
        raise _invalid_setting(where, f"is a {type(entry).__name__}, not a setting")
    settings = {k: entry[k] for k in CALIBRATED_FIELDS if k in entry}
    try:
        TranslateOptions.from_record(settings)
    except (ConfigError, TypeError) as exc:
        raise _invalid_setting(where, f"is not valid: {exc}") from exc
    channels = (manifest or {}).get("channel_names") or []
    absent = [c for c in settings.get("keep_channels", ()) if channels and c not in channels]
    if absent:
        raise _invalid_setting(where, f"keeps channel(s) {', '.join(map(str, absent))}, which it does not have "
                                      f"({', '.join(channels)})")
    return settings


def resolve_options(manifest: dict | None, source: str, target: str, given: dict | None = None
                    ) -> tuple[TranslateOptions, dict[str, str]]:
    """Options for one direction and where each came from: "given", "calibrated", "model default" or "default".

    `given` holds what the user set (None values count as not set).
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    names = tuple(flags())
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"Unknown translation option(s) {', '.join(unknown)}: "
                          f"the options are {', '.join(names)}.")
    layers = (("given", given), ("calibrated", calibrated_settings(manifest, source, target)),
              ("model default", model_defaults(manifest)))
    values, sources = {}, {}
    for name in names:
        origin, value = next(((o, layer[name]) for o, layer in layers if name in layer), ("default", None))
        sources[name] = origin
        if origin != "default":
            values[name] = value
    if values.get("inversion") == "bdia" and sources["keep_channels"] in ("calibrated", "model default"):
        # the user's exact inversion wins over a calibrated channel keeping, which needs a DDIM walk
        del values["keep_channels"]
        sources["keep_channels"] = "default"
    return TranslateOptions.from_record(values), sources


def check_given(given: dict | None) -> None:
    """Check the options a user set, on their own, before anything is loaded (raises ConfigError)."""
    resolve_options(None, "", "", given)


def describe(options: TranslateOptions, sources: dict[str, str], direct: bool = False) -> str:
    """One line naming the settings that shape a translation and where each came from."""
    if direct:
        return "direct mapping (no steps, strength or guidance)"
    names = ("strength", "guidance", "negative", "steps", "inversion")
    parts = [f"{n} {getattr(options, n)} ({sources.get(n, 'default')})" for n in names]
    if options.keep_channels:
        parts.append(f"kept {'+'.join(options.keep_channels)} ({sources.get('keep_channels', 'default')})")
    if options.guidance_interval != (0.0, 1.0):
        parts.append(f"interval {options.guidance_interval[0]:g}-{options.guidance_interval[1]:g} "
                     f"({sources.get('guidance_interval', 'default')})")
    return ", ".join(parts)


def settings_tag(options: TranslateOptions, direct: bool = False) -> str:
    """The settings that shape a translation, short enough for a layer or file name: `s0.3_w4` (strength and
    guidance), then `_null` for classic guidance and `_bdia` for exact inversion when they are used."""
    if direct:
        return ""
    tag = f"s{options.strength:g}_w{options.guidance:g}"
    if options.negative != "source" and options.guidance != 1.0:
        tag += f"_{options.negative}"
    if options.inversion != "ddim":
        tag += f"_{options.inversion}"
    if options.keep_channels:
        tag += "_keep_" + "-".join(options.keep_channels)
    return tag


# --- training ------------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's manifest. Checked when made (ConfigError)."""

    data: Path
    out: Path
    model: str = "pixel"                   # a kind of models.KINDS: pixel (PhenDiff) | latent | cyclegan
    preset: str = "tiny"
    image_size: int | None = None          # None: the preset's default (fine-tuned kinds: the base model's own)
    steps: int | None = None               # None: default_steps for the model and base
    minutes: float | None = None           # a time budget: steps set from a timed probe (training.run.fit_budget)
    batch_size: int = 16
    lr: float | None = None                # None: default_lr for the model (and adapter and base)
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999               # 0: no averaging
    condition_dropout: float = 0.1
    snr_gamma: float = 0.0                 # min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain squared error
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"          # auto | no | bf16 | fp16 (auto: bf16/fp16 on CUDA, none elsewhere)
    resize: bool = False                   # scale whole images to the model size instead of random crops
    resume: bool = False
    num_workers: int = 0
    channel_names: list[str] | None = None
    base: str | None = None                # fine-tuned kinds: the shipped base's name, a Stable Diffusion folder or
                                           # hub id (None: the shipped base, models.bases.DEFAULT_BASE)
    start_from: str | None = None          # kinds trained from scratch: a checkpoint (or "demo") whose weights start
                                           # this run, its condition rows renamed to the folder's conditions
    adapter: str = "lora"                  # fine-tuned kinds: lora | svdiff | attention | full
    rank: int = 4                          # LoRA rank
    gradient_checkpointing: bool = False   # fine-tuned kinds: trade compute for memory
    schedule: dict = field(default_factory=dict)   # overrides of models.pixel.SCHEDULE_DEFAULTS
    metadata: dict = field(default_factory=dict)   # free-form, copied into the manifest (e.g. how data was made)

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        _choice("model", self.model, tuple(KINDS))
        _choice("preset", self.preset, tuple(PRESET_SIZES))
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _choice("device", str(self.device).split(":")[0], DEVICES)  # cuda:1 is a cuda device
        kind = KINDS[self.model]
        if kind.fine_tunes:
            self.base = str(self.base).strip() if self.base and str(self.base).strip() else DEFAULT_BASE
            _choice("adapter", self.adapter, ADAPTERS)
            if self.start_from:
                raise ConfigError(f"The {self.model} model starts from its base model: give the checkpoint's base "
                                  "as the base model (--base) instead of a checkpoint to start from (--start-from).")
        elif self.image_size is None:
            self.image_size = PRESET_SIZES[self.preset]
        if self.start_from is not None and not str(self.start_from).strip():
            self.start_from = None
        if self.start_from and not kind.fine_tunes and not kind.starts_from:
            raise ConfigError(f"The {self.model} model cannot start from a checkpoint yet; train it from scratch "
                              "(leave the checkpoint to start from empty).")
        if self.lr is None:
            self.lr = default_lr(self.model, self.adapter, self.base)
        if self.steps is None:
            self.steps = default_steps(self.model, self.base)
        for name, low in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1), ("image_size", 1), ("rank", 1),
                          ("warmup_steps", 0), ("num_workers", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is not None:
                value = _integer(name, value)
                if value < low:
                    raise ConfigError(f"{name} must be at least {low}, not {value}.")
                setattr(self, name, value)
        if self.minutes is not None:
            self.minutes = _number("minutes", self.minutes)
            if not self.minutes > 0:
                raise ConfigError(f"minutes (the training time budget) must be above 0, not {self.minutes}.")
            if self.resume:
                raise ConfigError("A time budget (minutes) sets the steps of a new run; a resumed run continues "
                                  "to its steps: resume without minutes, with the steps to reach.")
        self.lr = _number("lr", self.lr)
        if not self.lr > 0:
            raise ConfigError(f"lr (the learning rate) must be above 0, not {self.lr}.")
        for name, low, high in (("weight_decay", 0, math.inf), ("grad_clip", 0, math.inf), ("ema_decay", 0, 1),
                                ("condition_dropout", 0, 1), ("snr_gamma", 0, math.inf)):
            value = _number(name, getattr(self, name))
            if not low <= value < high or (name == "grad_clip" and value == 0):
                raise ConfigError(f"{name} must be in [{low}, {high}){' and above 0' if name == 'grad_clip' else ''}, "
                                  f"not {value}.")
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
    says which it was fine-tuned with in the benchmarks), else DEFAULT_LR for the adapter or the model."""
    if not KINDS[model].fine_tunes:
        return DEFAULT_LR[model]
    from .models.bases import shipped_base_info

    rates = shipped_base_info(base or DEFAULT_BASE).get("learning_rates", {})
    return float(rates.get(adapter, DEFAULT_LR[adapter]))


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")


# The choices of the TrainConfig fields that have them (the CLI and the Train dock offer exactly these).
TRAIN_CHOICES = {"model": tuple(KINDS), "preset": tuple(PRESET_SIZES), "adapter": ADAPTERS,
                 "mixed_precision": MIXED_PRECISIONS, "device": DEVICES}

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
    "checkpoint_every": "save a checkpoint every N steps",
    "resume": "continue the training saved in the output folder",
}
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.init and f.default is not MISSING}
