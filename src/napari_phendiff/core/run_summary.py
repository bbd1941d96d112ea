"""The record of a translation run (core/batch.py): what each process did (BatchResult, written as a shard) and,
merged by the main process, the run's summary.json, which keeps the record of earlier runs into the same folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

SUMMARY = "summary.json"


@dataclass
class BatchResult:
    """What one process of a translation run did: the files it wrote, the inputs it skipped or could not do."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)  # input -> why it could not be translated
    seconds: float = 0.0
    settings: str = ""  # the translation's settings and where each came from


def write_shard(out: Path, rank: int, result: BatchResult) -> None:
    """What this process did, as `.shard-RANK.json` in `out` for the main process to merge."""
    out.mkdir(parents=True, exist_ok=True)
    shard = {
        "rank": rank,
        "written": [str(p) for p in result.written],
        "skipped": [str(p) for p in result.skipped],
        "failed": {str(p): why for p, why in result.failed.items()},
        "seconds": round(result.seconds, 2),
    }
    (out / f".shard-{rank}.json").write_text(json.dumps(shard))


def finish_run(out: Path, processes: int, inputs: int, settings: dict) -> None:
    """The main process merges the processes' shards into summary.json and fails naming the files that failed."""
    failed = _merge_summary(out, processes, settings)
    if failed:  # each reason names its file once (read errors start with the path already)
        listed = "; ".join(
            why if why.startswith(str(path)) else f"{path}: {why}" for path, why in list(failed.items())[:10]
        )
        more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
        which = (
            f"None of the {inputs} input(s) could be translated"
            if len(failed) == inputs
            else f"{len(failed)} of {inputs} input(s) could not be translated (the others were)"
        )
        raise DataError(f"{which}; see {out / SUMMARY}: {listed}{more}")


def _merge_summary(out: Path, processes: int, settings: dict) -> dict[str, str]:
    """Write summary.json for this run, keeping the record of earlier runs into the same folder (`earlier_runs`,
    and every file any run wrote in `files`); return the inputs that failed in this run."""
    shards = [json.loads((out / f".shard-{rank}.json").read_text()) for rank in range(processes)]
    failed = {p: why for s in shards for p, why in s["failed"].items()}
    summary = {
        **settings,
        "processes": processes,
        "written": sum(len(s["written"]) for s in shards),
        "skipped_inputs": sum(len(s["skipped"]) for s in shards),
        "failed": failed,
        "per_process": [{k: (len(v) if isinstance(v, (list, dict)) else v) for k, v in s.items()} for s in shards],
        "files": sorted(p for s in shards for p in s["written"]),
    }
    try:
        before = json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError):
        before = None
    if isinstance(before, dict):
        earlier = before.pop("earlier_runs", [])
        summary["files"] = sorted(set(summary["files"]) | set(before.pop("files", [])))
        summary["earlier_runs"] = [*earlier, before]
    tmp = out / f".{SUMMARY}.writing"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / SUMMARY)
    for rank in range(processes):
        (out / f".shard-{rank}.json").unlink()
    return failed
