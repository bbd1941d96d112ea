"""`phendiff rejudge`: an earlier calibration's sweep judged again by other bars, without translating again.

A calibration writes every setting's scores into its folder (calibration.json), and the rule (calibration_rule.py
`choose`) needs nothing else: a user who accepts a partial move that calibrate declined (calibration_bars.
partial_move), or wants the nuclei kept more strictly, gets the rule's verdict at their bars at once, from the same
scores, instead of a new sweep. The verdict goes into a new folder beside the old one (frontier, scores, choice) and,
when it calibrates, into the checkpoint the sweep was made with, which must still hold the same weights.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
from pathlib import Path

from .calibration_bars import check_bars
from .calibration_rule import bars, choose, setting_of
from .calibration_store import check_storable, judged, store_calibration
from .checkpoint import claim_new_folder, output_lock, resolve_checkpoint
from .errors import CheckpointError, DataError
from .features import CLASSIFIER_FOLDER
from .frontier import write_frontier
from .models import read_manifest
from .writing import atomic_folder

SAVED = ("direction", "chosen", "rules", "rows", "baseline_untranslated")  # what a calibration's folder must hold


def rejudge(
    calibration: str | Path,
    out: str | Path,
    *,
    reached_min: float | None = None,
    kept_tolerance: float | None = None,
    store: bool = True,
) -> dict:
    """Judge the sweep of the calibration in folder `calibration` by the bars given (None: the rule's own), write
    the frontier and the verdict into the new folder `out` and (store=True) store a setting that calibrates in the
    checkpoint the sweep was made with, as calibrate would have; returns the verdict's record."""
    check_bars(reached_min=reached_min, kept_tolerance=kept_tolerance)
    saved = read_calibration(calibration)
    path = _same_weights(saved["chosen"], Path(calibration))
    if store:
        check_storable(path, path)
    out = claim_new_folder(out, "the calibration")
    source, target = saved["direction"].split("->")
    old, rules = saved["chosen"], saved["rules"]
    default = setting_of(rules["default"]) if rules.get("default") else None
    unaffected = [c for c in old["unaffected"] if c not in old["keep_channels"]]
    with contextlib.ExitStack() as locks:
        locks.enter_context(output_lock(out, "a calibration"))
        if store:
            locks.enter_context(output_lock(path, "a calibration that will store its choice"))
        choice = choose(saved["rows"], unaffected, tolerance=kept_tolerance, reached_min=reached_min, default=default)
        record = {
            **old,
            **judged(choice),
            "judged_again_from": str(Path(calibration).resolve()),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        judged_by = {**rules, **bars(choice)}
        write_frontier(
            out, saved["rows"], choice, record, saved["baseline_untranslated"], source, target, judged_by, default
        )
        classifier = Path(calibration) / CLASSIFIER_FOLDER
        if classifier.is_dir():  # kept for reveal's masks, as calibrate keeps it
            shutil.copytree(classifier, out / CLASSIFIER_FOLDER)
        if store and choice.status == "calibrated":
            store_calibration(path, source, target, record)
            if old["classifier_trusted"] and classifier.is_dir():
                with atomic_folder(path / CLASSIFIER_FOLDER) as copy:
                    shutil.copytree(classifier, copy, dirs_exist_ok=True)
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
    missing = [k for k in SAVED if k not in saved] + [
        k for k in ("checkpoint", "weights_sha256") if not saved.get("chosen", {}).get(k)
    ]
    if missing:
        raise DataError(
            f"{where}: lacks {', '.join(missing)} (written by an older napari-phendiff, or edited); calibrate again "
            "(phendiff calibrate) to judge its sweep by other bars."
        )
    return saved


def _same_weights(record: dict, folder: Path) -> Path:
    """The checkpoint the sweep was made with, refused unless it still holds the weights the sweep translated with."""
    try:
        path = resolve_checkpoint(record["checkpoint"])
        now = read_manifest(path).get("weights_sha256")
    except (CheckpointError, OSError) as exc:
        raise CheckpointError(
            f"{folder}: its sweep was made with the checkpoint {record['checkpoint']}, which cannot be read ({exc}); "
            "calibrate again with the checkpoint you have."
        ) from exc
    if now != record["weights_sha256"]:
        raise CheckpointError(
            f"{folder}: its sweep was made with other weights than {path} holds now (trained again since?); its "
            "scores say nothing of these: calibrate again."
        )
    return path
