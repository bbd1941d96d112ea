"""How a translation option reads on the command line and in tooltips: its Flag (help and the shape of its flag),
and `option`, the TranslateOptions field that carries its default and its Flag (core/options.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flag:
    """How a TranslateOptions field reads on the command line and in tooltips: its help, and the shape of its flag
    (`--name-with-dashes`). The CLI turns each into an argparse argument (cli/parser.py), so a new option needs no
    CLI code."""

    help: str
    type: type | None = None
    choices: tuple = ()
    nargs: int | str | None = None
    metavar: str | tuple | None = None
    shown: str | None = None  # the default as the help shows it (None: the field's default; "": not shown)
    words: dict | None = None  # flag word -> field value, for a field whose values are not words (tiles)
    boolean: bool = False  # --name / --no-name

    def argument(self, name: str, default) -> dict:
        """The keyword arguments of argparse's add_argument for field `name` (its value unset: None)."""
        shown = (
            self.shown if self.shown is not None else (f"{default:g}" if isinstance(default, float) else str(default))
        )
        kwargs: dict[str, Any] = dict(help=self.help + (f" (default {shown})" if shown else ""), default=None)
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
