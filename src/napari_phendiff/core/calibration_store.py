"""What a calibration stores in a checkpoint: its record (calibration.json's "chosen", and the manifest's entry for
the direction), written atomically, and the check, before any work, that the checkpoint can take it."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from .calibration_rule import Choice
from .checkpoint import MANIFEST, check_writable, is_shipped, output_lock, resolve_checkpoint
from .errors import CheckpointError
from .options import CALIBRATED_FIELDS, TranslateOptions, direction_key
from .witnesses import Witnesses

NO_STORE = " (or calibrate with store=False, --no-store)"  # the command line's way out (a dock leaves it out)


def check_storable(checkpoint, path: Path, copy: str = "") -> None:
    """Refuse, before any work, to store a choice in a shipped checkpoint or in one that cannot be written; `copy`:
    what the caller's user does with a copy of it (default: calibrate the copy, or calibrate without storing)."""
    copy = copy or f"calibrate the copy{NO_STORE}."
    if is_shipped(path):  # named, or a loaded model's folder
        name = str(checkpoint) if isinstance(checkpoint, (str, Path)) else Path(path).name
        raise CheckpointError(
            f"{name!r} is a shipped checkpoint and cannot be changed; copy its folder ({path}) and {copy}"
        )
    try:
        check_writable(path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint cannot be written, so the choice could not be stored in it; make it writable, "
            f"or copy its folder and {copy}"
        ) from exc


def calibration_record(
    choice: Choice,
    witnesses: Witnesses,
    base: TranslateOptions,
    unaffected: list[str],
    data,
    images: int,
    checkpoint: Path,
    manifest: dict,
) -> dict:
    """What a calibration found: the setting the rule took (or the closest), why, its scores and where they came
    from, the checkpoint's weights included (calibration.json's "chosen", and what store_calibration writes into the
    manifest)."""
    return {
        **judged(choice),
        "keep_channels": list(base.keep_channels),
        "real_target_moved": witnesses.real_moved,
        "steps": base.steps,
        "unaffected": unaffected,
        "data": str(Path(data).resolve()),
        "images": images,
        "classifier_accuracy": witnesses.classifier.accuracy,
        "classifier_trusted": witnesses.trusted,
        "checkpoint": str(Path(checkpoint).resolve()),
        "weights_sha256": manifest.get("weights_sha256"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def judged(choice: Choice) -> dict:
    """What of a calibration's record the rule's verdict decides: the setting it took (or the closest), its scores,
    the status and reason, and the bars it was judged by."""
    shown = choice.best
    return {
        **{k: shown[k] for k in ("strength", "guidance", "negative", "inversion", "guidance_interval")},
        "status": choice.status,
        "reason": choice.reason,
        **{k: shown[k] for k in ("reached", "moved", "cells_moved", "kept", "kept_control")},
        "keeps_cells": choice.status != "not kept",
        "reached_min": choice.reached_min,  # the bars it was judged by: the user may have set their own
        "kept_tolerance": choice.kept_tolerance,
        "overshot_measurements": shown.get("overshot_measurements", []),
    }


def overshoot_warning(record: dict, target: str) -> str:
    """A sentence, where the setting a calibration chose (or the closest, where it stored nothing) exaggerates what
    differs between the real conditions (record's overshot_measurements); empty where it does not."""
    if not record["overshot_measurements"]:
        return ""
    listed = ", ".join(f"{m['measurement']} {m['moved']:.1f}x" for m in record["overshot_measurements"][:5])
    which = "this choice" if record["status"] == "calibrated" else "this setting"
    return (
        f"At this setting the translations went far past the real {target} cells ({listed} of the way; 1x = all the "
        f"way): the model exaggerates these, and 'reached' may overrate the translation. Look at the translations "
        f"before trusting {which}."
    )


@contextlib.contextmanager
def calibration_locks(out: Path, checkpoint: Path, store: bool) -> Iterator[None]:
    """One writer per output: the calibration folder and, when the choice is to be stored, the checkpoint."""
    with contextlib.ExitStack() as locks:
        locks.enter_context(output_lock(out, "a calibration"))
        if store:
            locks.enter_context(output_lock(checkpoint, "a calibration that will store its choice"))
        yield


def store_choice(
    path: Path, source: str, target: str, record: dict, classifier: Callable[[Path], object] | None
) -> None:
    """A calibrating choice into the checkpoint: `classifier(path)` first writes the condition classifier it trusted
    (for reveal's masks, core/reveal_classifier.py), then the manifest entry, so that a stored choice never sits
    beside another calibration's classifier."""
    if classifier is not None:
        classifier(path)
    store_calibration(path, source, target, record)


def store_calibration(checkpoint: str | Path, source: str, target: str, record: dict) -> None:
    """Write the chosen setting into the manifest (atomically: a new file renamed over the old one)."""
    manifest_path = resolve_checkpoint(checkpoint) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    entry = {k: record[k] for k in CALIBRATED_FIELDS if k in record}
    entry.update({k: v for k, v in record.items() if k not in entry})
    manifest.setdefault("calibration", {})[direction_key(source, target)] = entry
    tmp = manifest_path.with_name(f".{MANIFEST}.writing")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, manifest_path)
