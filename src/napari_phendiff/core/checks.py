"""The checks every typed setting goes through, training and translation options alike: each raises ConfigError
naming the setting and what it accepts."""

from __future__ import annotations

import math

from .errors import ConfigError


def whole_number(name: str, value) -> int:
    """`value` as an int, when it is a whole number (3 or 3.0; not True, not 3.5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


def finite_number(name: str, value) -> float:
    """`value` as a float, when it is a finite number (not True, not NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, not {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value}.")
    return float(value)


def check_count(name: str, value, allow_none: bool = False) -> int | None:
    """How many of something (images, steps): a whole number of at least 1 (None where `allow_none`: all)."""
    if value is None and allow_none:
        return None
    value = whole_number(name, value)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}.")
    return value


def check_choice(name: str, value, choices: tuple) -> None:
    """Raise ConfigError unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")
