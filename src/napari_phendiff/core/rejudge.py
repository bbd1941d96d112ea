"""`phendiff rejudge`: an earlier calibration's sweep judged again by other bars, without translating again.

A calibration writes every setting's scores into its folder (calibration.json), and the rule (calibration_rule.py
`choose`) needs nothing else: a user who accepts a partial move that calibrate declined (calibration_bars.
partial_move), or wants the nuclei kept more strictly, gets the rule's verdict at their bars at once, from the same
scores, instead of a new sweep. The verdict goes into a new folder like calibrate's and, when it calibrates, into the
checkpoint the sweep was made with, which must still hold the same weights (its path may be given anew: a folder
moved or copied).
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from .calibration_bars import check_bars
from .calibration_rule import bars, choose, setting_of
from .calibration_store import calibration_locks, check_storable, judged, store_choice
from .checkpoint import claim_new_folder, resolve_checkpoint
from .errors import CheckpointError, DataError
from .features import CLASSIFIER_FOLDER
from .frontier import write_frontier
from .models import read_manifest
from .options import direction_of
from .writing import atomic_folder

SAVED = ("direction", "chosen", "rules", "rows", "baseline_untranslated")  # what a calibration's folder must hold
RECORDED = ("checkpoint", "weights_sha256", "unaffected", "keep_channels", "classifier_trusted")  # and its record


def rejudge(
    calibration: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    reached_min: float | None = None,
    kept_tolerance: float | None = None,
    store: bool = True,
    saved: dict | None = None,
) -> dict:
    """Judge the sweep of the calibration in folder `calibration` by the bars given (None: the rule's own, not the
    earlier calibration's), write the frontier and the verdict into the new folder `out` and (store=True) store a
    setting that calibrates in the checkpoint the sweep was made with (`checkpoint`: where it is now, if not where the
    calibration recorded it), as calibrate would have; returns the verdict's record. `saved`: that folder's
    calibration.json as read_calibration read it, when the caller has it already."""
    check_bars(reached_min=reached_min, kept_tolerance=kept_tolerance)
    calibration = Path(calibration)
    saved = saved if saved is not None else read_calibration(calibration)
    old, rules = saved["chosen"], saved["rules"]
    classifier = calibration / CLASSIFIER_FOLDER
    path = _checked_checkpoint(old, calibration, checkpoint, classifier) if store else Path(old["checkpoint"])
    out = claim_new_folder(out, "the calibration")
    source, target = direction_of(saved["direction"])
    default = setting_of(rules["default"]) if rules.get("default") else None
    rows = [
        {**r, "guidance_interval": tuple(r["guidance_interval"])} if "guidance_interval" in r else r
        for r in saved["rows"]
    ]
    unaffected = [c for c in old["unaffected"] if c not in old["keep_channels"]]
    with calibration_locks(out, path, store):
        if store:  # again under the lock: nothing trained into it meanwhile
            _checked_checkpoint(old, calibration, path, classifier)
        choice = choose(rows, unaffected, tolerance=kept_tolerance, reached_min=reached_min, default=default)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        record = {**old, **judged(choice), "checkpoint": str(path), "judged_again_from": str(calibration.resolve())}
        record.update(date=now, swept=old.get("swept", old.get("date")))
        copied = (lambda folder: _copy(classifier, folder)) if classifier.is_dir() else None
        write_frontier(
            out,
            rows,
            choice,
            record,
            saved["baseline_untranslated"],
            source,
            target,
            {**rules, **bars(choice)},
            default,
            copied,
        )
        if store and choice.status == "calibrated":
            store_choice(path, source, target, record, copied if old["classifier_trusted"] else None)
        return record


def read_calibration(folder: str | Path) -> dict:
    """A calibration folder's calibration.json, checked to hold what judging it again needs."""
    where = Path(folder) / "calibration.json"
    try:
        saved = json.loads(where.read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: has no calibration.json; give a folder `phendiff calibrate` wrote.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: cannot be read ({exc}); give a folder `phendiff calibrate` wrote.") from exc
    chosen = saved.get("chosen") if isinstance(saved.get("chosen"), dict) else {}
    missing = [k for k in SAVED if k not in saved] + [k for k in RECORDED if chosen.get(k) is None]
    if missing:
        raise DataError(
            f"{where}: lacks {', '.join(missing)} (written by an older napari-phendiff, or edited); calibrate again "
            "(phendiff calibrate) to judge its sweep by other bars."
        )
    return saved


def _checked_checkpoint(record: dict, folder: Path, given: str | Path | None, classifier: Path) -> Path:
    """The checkpoint to store in (`given`, else the one the calibration recorded), refused unless it holds the
    weights the sweep translated with, and unless the classifier the calibration trusted is there to go with it."""
    where = given if given is not None else record["checkpoint"]
    try:
        path = resolve_checkpoint(where)
        now = read_manifest(path).get("weights_sha256")
    except (CheckpointError, OSError) as exc:
        raise CheckpointError(
            f"{folder}: its sweep was made with the checkpoint {where}, which cannot be read here ({exc}); give where "
            "that checkpoint is now (--checkpoint), or judge without storing (--no-store)."
        ) from exc
    if now != record["weights_sha256"]:
        raise CheckpointError(
            f"{folder}: its sweep was made with other weights than {path} holds (trained again since, or another "
            "checkpoint?); its scores say nothing of these: calibrate again, or judge without storing (--no-store)."
        )
    check_storable(  # not a shipped checkpoint, and writable; a copy holds the same weights, so the sweep holds for it
        where,
        path,
        "give the copy (--checkpoint), which holds the weights the sweep was made with; or judge without storing "
        "(--no-store).",
    )
    if record["classifier_trusted"] and not classifier.is_dir():
        raise DataError(
            f"{folder}: the condition classifier this calibration trusted ({CLASSIFIER_FOLDER}) is missing, and a "
            "stored choice needs it (reveal scores masks with it): calibrate again, or judge without storing "
            "(--no-store)."
        )
    return path


def _copy(classifier: Path, into: Path) -> None:
    """The saved condition classifier into `into`, all at once."""
    with atomic_folder(into / CLASSIFIER_FOLDER) as copy:
        shutil.copytree(classifier, copy, dirs_exist_ok=True)
