"""Translation options: the one place that names them, their defaults, choices, checks and help texts.

No torch here, so the command line can build its parser from it without importing the engine. A new translation
option is one field of TranslateOptions (with its check in `validate` and its words in HELP) plus its use in
core/translate.py; the CLI, the docks, batch, demo, evaluate and the provenance of written files read it from here.

Defaults come in three layers, the first that has a value wins, and `resolve_options` says which one each value came
from: what the user gave, the checkpoint's own calibrated setting for this direction (`phendiff calibrate` stores it
in the manifest), and the project defaults below, chosen on the simulator's ground truth (docs/method.md,
benchmarks/translation_frontier.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .errors import ConfigError

NEGATIVES = ("null", "source")
INVERSIONS = ("ddim", "bdia")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cuda", "mps", "cpu")
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

# The settings `phendiff calibrate` may store per direction in the checkpoint manifest.
CALIBRATED_FIELDS = ("strength", "guidance", "negative", "guidance_interval", "inversion")


@dataclass(frozen=True)
class TranslateOptions:
    """How a translation is run. Every field has a default; `validate` explains a bad value before any work."""

    steps: int = DEFAULT_STEPS
    strength: float = DEFAULT_STRENGTH
    guidance: float = DEFAULT_GUIDANCE
    negative: str = DEFAULT_NEGATIVE
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    inversion: str = "ddim"
    eta: float = 0.0
    seed: int = 0
    batch_size: int | None = None
    precision: str = "fp32"
    tiles: bool | None = None

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
        return replace(self, steps=steps, strength=strength, guidance=guidance, guidance_interval=(low, high),
                       eta=eta, seed=seed, batch_size=batch)

    @property
    def run_steps(self) -> int:
        """Network steps run each way: strength x steps, at least one."""
        return grid_steps(self.steps, self.strength)

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def record(self) -> dict:
        """The settings as plain JSON values, for provenance."""
        values = asdict(self)
        values["guidance_interval"] = list(self.guidance_interval)
        return values


HELP = {
    "steps": "DDIM steps of the whole noise schedule; at strength s, s x steps are run each way "
             f"(default {DEFAULT_STEPS})",
    "strength": "how far the image is taken apart before it is rebuilt, 0 < s <= 1: low keeps every cell, high lets "
                "the condition change more; 1 inverts to pure noise (the original PhenDiff translation)",
    "guidance": "guidance scale w: eps = eps(negative) + w x (eps(target) - eps(negative)); 1 = none",
    "negative": "what guidance contrasts the target with: 'source' (the source condition: what differs between "
                "the conditions) or 'null' (classic classifier-free guidance)",
    "guidance_interval": "apply guidance only at noise levels t/T within LOW HIGH (fractions of the schedule, "
                         "0 = clean, 1 = pure noise)",
    "inversion": "'ddim' (plain DDIM inversion) or 'bdia' (exact inversion, Zhang et al. 2023; same cost)",
    "eta": "0 = deterministic DDIM; > 0 adds noise drawn from the seed during regeneration",
    "seed": "random seed (matters only for eta > 0); recorded with the result",
    "batch_size": "tiles or fields per network call (default: by device memory)",
    "precision": "network precision: fp32 (default), bf16 or fp16 (faster on GPUs, see docs/benchmarks.md)",
    "tiles": "whole fields when they fit the device's memory budget, tiles of the model's size beyond it",
}


def grid_steps(steps: int, strength: float) -> int:
    """How many steps of a `steps`-step grid a translation at `strength` runs each way (at least one)."""
    return max(1, round(strength * steps))


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, not {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value}.")
    return float(value)


FIELD_NAMES = tuple(f.name for f in fields(TranslateOptions))


def direction_key(source: str, target: str) -> str:
    return f"{source}->{target}"


def calibrated_settings(manifest: dict | None, source: str, target: str) -> dict:
    """The checkpoint's calibrated settings for source -> target (empty when it was not calibrated for it)."""
    entry = ((manifest or {}).get("calibration") or {}).get(direction_key(source, target)) or {}
    settings = {k: entry[k] for k in CALIBRATED_FIELDS if k in entry}
    if "guidance_interval" in settings:
        settings["guidance_interval"] = tuple(settings["guidance_interval"])
    return settings


def resolve_options(manifest: dict | None, source: str, target: str, given: dict | None = None
                    ) -> tuple[TranslateOptions, dict[str, str]]:
    """Options for one direction and where each came from: "given", "calibrated" or "default".

    `given` holds what the user set (None values count as not set).
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"Unknown translation option(s) {', '.join(unknown)}: "
                          f"the options are {', '.join(FIELD_NAMES)}.")
    calibrated = calibrated_settings(manifest, source, target)
    values, sources = {}, {}
    for name in FIELD_NAMES:
        if name in given:
            values[name], sources[name] = given[name], "given"
        elif name in calibrated:
            values[name], sources[name] = calibrated[name], "calibrated"
        else:
            sources[name] = "default"
    return TranslateOptions(**values).validate(), sources


def check_given(given: dict | None) -> None:
    """Check the options a user set, on their own, before anything is loaded (raises ConfigError)."""
    resolve_options(None, "", "", given)


def describe(options: TranslateOptions, sources: dict[str, str], direct: bool = False) -> str:
    """One line naming the settings that shape a translation and where each came from."""
    if direct:
        return "direct mapping (no steps, strength or guidance)"
    names = ("strength", "guidance", "negative", "steps", "inversion")
    parts = [f"{n} {getattr(options, n)} ({sources.get(n, 'default')})" for n in names]
    if options.guidance_interval != (0.0, 1.0):
        parts.append(f"interval {options.guidance_interval[0]:g}-{options.guidance_interval[1]:g} "
                     f"({sources.get('guidance_interval', 'default')})")
    return ", ".join(parts)
