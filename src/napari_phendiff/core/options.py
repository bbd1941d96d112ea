"""Translation and training options: the one place the rest of the tree reads them from, with their defaults,
choices, checks and help texts. The translation options are defined here; the training options (TrainConfig) in
train_options.py, and the checks both go through in checks.py, read out again below.

No torch here, so the command line can build its parser from it without importing the engine. A new translation
option is one field of TranslateOptions (with its Flag, core/option_flag.py: help and command-line shape; its check
in `validate`) plus its use in core/translate.py or core/walk.py; a new training option is one field of TrainConfig
(with its check and its words in TRAIN_HELP) plus its use in core/training/. The CLI, the docks, batch, demo,
evaluate and the provenance of written files read them from here.

Defaults come in four layers, the first that has a value wins, and `resolve_options` says which one each value came
from: what the user gave, the checkpoint's own calibrated setting for this direction (`phendiff calibrate` stores it
in the manifest), the model's default (a fine-tune of the shipped base records the setting its fine-tunes were
measured to translate at, from the base's base.json), and the project defaults below, chosen on the simulator's
ground truth (docs/method.md, benchmarks/translation_frontier.py).
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .checks import finite_number, whole_number
from .errors import CheckpointError, ConfigError
from .option_flag import Flag, option

# Defined beside this module, read from here like every option: the count check and the training options.
from .checks import check_count  # noqa: F401
from .train_options import (
    ADAPTER_LR,  # noqa: F401
    ADAPTERS,  # noqa: F401
    DEFAULT_STEPS_TRAINING,  # noqa: F401
    DEVICES,  # noqa: F401
    MIXED_PRECISIONS,  # noqa: F401
    OPTIMIZERS,  # noqa: F401
    PRESET_SIZES,  # noqa: F401
    TRAIN_CHOICES,  # noqa: F401
    TRAIN_DEFAULTS,  # noqa: F401
    TRAIN_HELP,  # noqa: F401
    TrainConfig,  # noqa: F401
    default_lr,  # noqa: F401
    default_steps,  # noqa: F401
)

NEGATIVES = ("null", "source")
INVERSIONS = ("ddim", "bdia")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_STEPS = 1000  # the training schedule's length: a DDIM grid cannot be finer

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

# Held-out source images `phendiff calibrate` (and the Translate dock's Calibrate) translates at every setting.
CALIBRATION_IMAGES = 16

# How a morph goes from the original to the translation (core/explore.py; compared in docs/benchmarks.md morph_path).
MORPH_PATHS = ("strength", "embedding")

# The settings `phendiff calibrate` may store per direction in the checkpoint manifest.
CALIBRATED_FIELDS = ("strength", "guidance", "negative", "guidance_interval", "inversion", "keep_channels")
# A model's own defaults (translation_defaults in its manifest) may also set the DDIM steps its walk needs.
MODEL_DEFAULT_FIELDS = (*CALIBRATED_FIELDS, "steps")


@dataclass(frozen=True)
class TranslateOptions:
    """How a translation is run. Every field has a default and a Flag (its help and command-line shape); `validate`
    explains a bad value before any work. `record` and `from_record` are its one conversion to and from JSON."""

    steps: int = option(
        DEFAULT_STEPS, Flag("DDIM steps of the whole noise schedule; at strength s, s x steps are run each way", int)
    )
    strength: float = option(
        DEFAULT_STRENGTH,
        Flag(
            "how far the image is taken apart before it is rebuilt, 0 < s <= 1: low keeps every cell, high lets the "
            "condition change more; 1 inverts to pure noise (the original PhenDiff translation)",
            float,
        ),
    )
    guidance: float = option(
        DEFAULT_GUIDANCE,
        Flag("guidance scale w: eps = eps(negative) + w x (eps(target) - eps(negative)); 1 = none", float),
    )
    negative: str = option(
        DEFAULT_NEGATIVE,
        Flag(
            "what guidance contrasts the target with: 'source' (the source condition: what differs between the "
            "conditions) or 'null' (classic classifier-free guidance)",
            choices=NEGATIVES,
        ),
    )
    guidance_interval: tuple[float, float] = option(
        (0.0, 1.0),
        Flag(
            "apply guidance only at noise levels t/T within LOW HIGH (fractions of the schedule, 0 = clean, 1 = pure "
            "noise)",
            float,
            nargs=2,
            metavar=("LOW", "HIGH"),
            shown="0 1: everywhere",
        ),
    )
    inversion: str = option(
        "ddim",
        Flag(
            "'ddim' (plain DDIM inversion) or 'bdia' (exact inversion, Zhang et al. 2023; same cost)",
            choices=INVERSIONS,
        ),
    )
    keep_channels: tuple[str, ...] = option(
        (),
        Flag(
            "channels the conditions do not change (e.g. DNA; 'none' for none): they stay the original's exactly, and "
            "the other channels are regenerated around them (a latent model whose autoencoder mixes the channels, as "
            "Stable Diffusion's: pasted after decoding); a fine-tune of the shipped base keeps its DNA channel by default",
            nargs="+",
            metavar="CHANNEL",
            shown="none",
        ),
    )
    eta: float = option(
        0.0, Flag("0 = deterministic DDIM; > 0 adds noise drawn from the seed during regeneration", float)
    )
    seed: int = option(0, Flag("random seed (matters only for eta > 0); recorded with the result", int))
    deep_cache: int | None = option(
        None,
        Flag(
            "regeneration runs the whole network every N-th step and only its outermost level on the deep features "
            "of the last whole step between them (DeepCache, Ma et al. 2024; pixel checkpoints); 1 = off",
            int,
            metavar="N",
            shown="2 on pixel checkpoints, else off",
        ),
    )
    batch_size: int | None = option(None, Flag("tiles or fields per network call", int, shown="by device memory"))
    precision: str = option(
        "auto",
        Flag(
            "network precision: auto (bf16 on a CPU that computes it natively, about 2x faster there at the same "
            "result; else fp32), fp32, bf16 or fp16 (see docs/benchmarks.md)",
            choices=PRECISIONS,
        ),
    )
    tiles: bool | None = option(
        None,
        Flag(
            "whole fields when they fit the device's memory budget, tiles of the model's size beyond it (auto); "
            "'whole' or 'tiles' forces either",
            words={"auto": None, "whole": False, "tiles": True},
            shown="",
        ),
    )
    # on: a sparse 384-px field took 5.3 s instead of 29.2 with the same transfer, dense fields lost nothing (no
    # tile was copied); docs/benchmarks.md laptop_field
    skip_background: bool = option(
        True,
        Flag(
            "in tiles, copy the tiles with no cell within a quarter tile of them (the channels' mean below the field's "
            "Otsu threshold) instead of translating them",
            boolean=True,
            shown="on",
        ),
    )

    def validate(self) -> "TranslateOptions":
        """Return self with normalised types, or raise ConfigError naming the option and the allowed values."""
        steps = whole_number("steps", self.steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ConfigError(
                f"steps must be between 1 and {MAX_STEPS} (the training schedule's length), not {self.steps}."
            )
        strength = finite_number("strength", self.strength)
        if not 0 < strength <= 1:
            raise ConfigError(
                f"strength must be in (0, 1] (how far the image is inverted: 1 = to pure noise), not {self.strength}."
            )
        guidance = finite_number("guidance", 1.0 if self.guidance is None else self.guidance)
        if guidance < 0:
            raise ConfigError(f"guidance must be >= 0 (1 = no guidance), not {self.guidance}.")
        if self.negative not in NEGATIVES:
            raise ConfigError(f"negative must be one of {', '.join(NEGATIVES)}, not {self.negative!r}.")
        low, high = _checked_interval(self.guidance_interval)
        if self.inversion not in INVERSIONS:
            raise ConfigError(f"inversion must be one of {', '.join(INVERSIONS)}, not {self.inversion!r}.")
        keep = _checked_kept(self.keep_channels, self.inversion)
        eta = finite_number("eta", self.eta)
        if eta < 0:
            raise ConfigError(f"eta must be >= 0 (0 = deterministic DDIM), not {self.eta}.")
        if eta > 0 and self.inversion == "bdia":
            raise ConfigError("inversion 'bdia' is exact only for deterministic generation: use eta 0 with it.")
        seed = whole_number("seed", self.seed)
        deep_cache = None if self.deep_cache is None else whole_number("deep_cache", self.deep_cache)
        if deep_cache is not None and deep_cache < 1:
            raise ConfigError(f"deep_cache must be at least 1 (1 = off), not {self.deep_cache}.")
        batch = None if self.batch_size is None else whole_number("batch_size", self.batch_size)
        if batch is not None and batch < 1:
            raise ConfigError(f"batch_size must be at least 1 (or left out for the device's default), not {batch}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        if self.tiles not in (None, True, False):
            raise ConfigError(f"tiles must be True, False or None (by memory), not {self.tiles!r}.")
        if self.skip_background not in (True, False):
            raise ConfigError(f"skip_background must be True or False, not {self.skip_background!r}.")
        return replace(
            self,
            steps=steps,
            strength=strength,
            guidance=guidance,
            guidance_interval=(low, high),
            keep_channels=keep,
            eta=eta,
            seed=seed,
            deep_cache=deep_cache,
            batch_size=batch,
        )

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
        given: dict[str, Any] = {
            name: tuple(value) if isinstance(value, list) else value for name, value in values.items()
        }
        return cls(**given).validate()


def _checked_interval(given) -> tuple[float, float]:
    """guidance_interval as (low, high) fractions of the noise schedule (None: everywhere), or ConfigError."""
    interval = tuple(given) if given is not None else (0.0, 1.0)
    if len(interval) != 2:
        raise ConfigError(f"guidance_interval must be two numbers (low, high), not {given!r}.")
    low, high = (finite_number("guidance_interval", v) for v in interval)
    if not 0 <= low <= high <= 1:
        raise ConfigError(
            f"guidance_interval must satisfy 0 <= low <= high <= 1 (fractions of the noise schedule), not {given!r}."
        )
    return low, high


def _checked_kept(given, inversion: str) -> tuple[str, ...]:
    """keep_channels as a tuple of distinct names (one name alone is one channel), or ConfigError: an exact (bdia)
    walk cannot keep channels."""
    keep = (given,) if isinstance(given, str) else tuple(given or ())
    if keep == ("none",):  # said on purpose, e.g. to undo a checkpoint's default of keeping its DNA
        return ()
    if any(not isinstance(name, str) or not name for name in keep) or len(set(keep)) < len(keep):
        raise ConfigError(f"keep_channels must be distinct channel names, not {given!r}.")
    if keep and inversion == "bdia":
        raise ConfigError(
            "keep_channels replaces the kept channels by the inversion's own at every step, "
            "which an exact (bdia) walk cannot follow: use inversion 'ddim' with it."
        )
    return keep


def flags() -> dict[str, Flag]:
    """Each translation option's Flag, by field name (read when asked, so every field of the class is there)."""
    return {f.name: f.metadata["flag"] for f in fields(TranslateOptions)}


HELP = {name: flag.help for name, flag in flags().items()}  # the words of each option: CLI help, dock tooltips


def grid_steps(steps: int, strength: float) -> int:
    """How many steps of a `steps`-step grid a translation at `strength` runs each way (at least one)."""
    return max(1, round(strength * steps))


FIELD_NAMES = tuple(f.name for f in fields(TranslateOptions))


def condition_name(name: str) -> str:
    """A condition's name in one Unicode form (NFC): a folder named 'traité' on macOS (decomposed, NFD) and the same
    name typed on a command line (composed) look the same and must be the same condition."""
    return unicodedata.normalize("NFC", name)


def direction_key(source: str, target: str) -> str:
    return f"{condition_name(source)}->{condition_name(target)}"


def direction_of(key: str) -> tuple[str, str]:
    """The source and target of a direction_key."""
    source, _, target = key.partition("->")
    return source, target


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
    return _checked_setting((manifest or {}).get("translation_defaults") or {}, manifest, where, MODEL_DEFAULT_FIELDS)


def _invalid_setting(where: str, why: str) -> CheckpointError:
    return CheckpointError(f"{where} {why.rstrip('.')}. Calibrate it again (phendiff calibrate) or remove that entry.")


def _checked_setting(entry, manifest: dict | None, where: str, names: tuple[str, ...] = CALIBRATED_FIELDS) -> dict:
    """A stored setting's fields among `names`, checked as the user's would be but blamed on the checkpoint."""
    if not isinstance(entry, dict):
        raise _invalid_setting(where, f"is a {type(entry).__name__}, not a setting")
    settings = {k: entry[k] for k in names if k in entry}
    try:
        TranslateOptions.from_record(settings)
    except (ConfigError, TypeError) as exc:
        raise _invalid_setting(where, f"is not valid: {exc}") from exc
    channels = (manifest or {}).get("channel_names") or []
    absent = [c for c in settings.get("keep_channels", ()) if channels and c not in channels]
    if absent:
        raise _invalid_setting(
            where, f"keeps channel(s) {', '.join(map(str, absent))}, which it does not have ({', '.join(channels)})"
        )
    return settings


def resolve_options(
    manifest: dict | None, source: str, target: str, given: dict | None = None
) -> tuple[TranslateOptions, dict[str, str]]:
    """Options for one direction and where each came from: "given", "calibrated", "model default" or "default".

    `given` holds what the user set (None values count as not set).
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    names = tuple(flags())
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"Unknown translation option(s) {', '.join(unknown)}: the options are {', '.join(names)}.")
    layers = (
        ("given", given),
        ("calibrated", calibrated_settings(manifest, source, target)),
        ("model default", model_defaults(manifest)),
    )
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
