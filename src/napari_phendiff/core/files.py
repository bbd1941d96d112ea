"""Which files a folder run translates and where each result goes: inputs (files, or folders searched recursively
with their layout kept) planned into Jobs, two writers of one output refused, and the condition a file or folder is
named after (never guessed for the user: see `named_condition`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DataError
from .export import safe_name
from .images import IMAGE_SUFFIXES, is_image_file


@dataclass
class Job:
    """One input file and where its translations go."""

    path: Path
    out_dir: Path

    def output(self, target: str, extra: str = "") -> Path:
        """The translation's file, or one of its extras: "morph", "std", "reveal" (.tif) or "cells", "reveal_cells"
        (.csv)."""
        suffix = {
            "": ".tif",
            "morph": "_morph.tif",
            "std": "_std.tif",
            "cells": "_cells.csv",
            "reveal": "_reveal.tif",
            "reveal_cells": "_reveal.csv",
        }[extra]
        return self.out_dir / f"{self.path.stem}_to_{safe_name(target)}{suffix}"

    def outputs(self, targets: list[str], extras: list[str]) -> list[Path]:
        return [self.output(t, e) for t in targets for e in ["", *extras]]


def plan_jobs(inputs: list[Path], out: Path, targets: Sequence[str] = ()) -> list[Job]:
    """Files given directly go to `out`; folders are searched recursively and keep their layout under `out`.

    Refuses an `out` inside an input folder (a second run would translate its own outputs) and two inputs or two
    targets that would write the same output file."""
    jobs, missing = [], []
    for item in map(Path, inputs):
        if item.is_dir() and (Path(out).resolve() == item.resolve() or item.resolve() in Path(out).resolve().parents):
            raise DataError(
                f"The output folder {out} is inside the input folder {item}: a later run would translate these "
                "outputs too. Choose an output folder outside it."
            )
        if item.is_dir():
            jobs += [Job(p, out / p.parent.relative_to(item)) for p in images_in(item)]
        elif item.is_file():
            jobs.append(Job(item, out))
        else:
            missing.append(str(item))
    if missing:
        raise DataError(f"Input(s) not found: {', '.join(missing[:5])}. Give image files or folders of images.")
    if not jobs:
        raise DataError(f"No images (.tif, .tiff, .png, .jpg) found in {', '.join(map(str, inputs))}.")
    _refuse_collisions(jobs, targets)
    return jobs


def images_in(folder: Path) -> list[Path]:
    """The image files under `folder`, searched recursively, hidden files and folders left out."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def named_condition(path: str | Path, conditions: list[str]) -> tuple[str, str] | None:
    """The condition an image file or folder is named after: (condition, "name") when its own name (a file's without
    the extension) is one of `conditions`, else (condition, "folder") when its parent folder's name is; whole names,
    case-insensitive (`untreated/field7.tif` names untreated; `TNFa_high_0003.tif` names nothing). None otherwise:
    the condition is then the user's to say, never guessed."""
    path = Path(path)
    by_name = {c.lower(): c for c in conditions}
    own = path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name
    for where, text in (("name", own), ("folder", path.parent.name)):
        if text.lower() in by_name:
            return by_name[text.lower()], where
    return None


def inputs_named_otherwise(inputs: list[Path], source: str, conditions: list[str]) -> list[tuple[Path, str, str]]:
    """(path, condition, "name" | "folder") for each input, and each folder of images inside an input folder, named
    after another condition than `source` (see `named_condition`): images that are probably not in `source`."""
    places = []
    for item in map(Path, inputs):
        places.append(item)
        if item.is_dir():
            places += sorted({p.parent for p in images_in(item)} - {item})
    found = ((place, named_condition(place, conditions)) for place in places)
    return [(place, *named) for place, named in found if named is not None and named[0] != source]


def _refuse_collisions(jobs: list[Job], targets: Sequence[str]) -> None:
    """Never write two results to one path: name both inputs (or targets) and say how to avoid it."""
    names: dict[str, str] = {}
    for target in targets:
        other = names.setdefault(safe_name(target), target)
        if other != target:
            raise DataError(
                f"Targets {other!r} and {target!r} would write the same files (*_to_{safe_name(target)}"
                ".tif). Translate them into different --out folders."
            )
    writers: dict[Path, Path] = {}
    for job in jobs:
        for target in targets or [""]:
            first = writers.setdefault(job.output(target).resolve(), job.path)
            if first != job.path:
                raise DataError(
                    f"{first} and {job.path} would both be written to {job.output(target)}. Translate "
                    "them into different --out folders, or give their common folder instead of the "
                    "files (the folder layout is kept)."
                )
