"""Translate many files (whole folders, plates) on one or several processes, resumably.

One process: `phendiff translate MODEL FOLDER ...`. Several (GPUs of a node, nodes of a cluster, or CPU processes):
`torchrun --nproc_per_node N -m napari_phendiff.cli translate ...` or `accelerate launch -m napari_phendiff.cli
translate ...`. The files are dealt round-robin over the processes; each translates and writes its own share.
Outputs already on disk are skipped (every file is written atomically, so one that exists is complete), so a run
that was stopped continues where it was. At the end the main process writes one summary.json for the whole run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .checkpoint import load_checkpoint, read_manifest
from .errors import DataError
from .export import provenance, safe_name, write_translation
from .images import is_image_file, read_image
from .translate import DEFAULT_STEPS, TranslateEvent, translate

SUMMARY = "summary.json"


@dataclass
class Job:
    """One input file and where its translations go."""

    path: Path
    out_dir: Path

    def output(self, target: str) -> Path:
        return self.out_dir / f"{self.path.stem}_to_{safe_name(target)}.tif"


@dataclass
class BatchResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def plan_jobs(inputs: list[Path], out: Path) -> list[Job]:
    """Files given directly go to `out`; folders are searched recursively and keep their layout under `out`."""
    jobs, missing = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            jobs += [Job(p, out / p.parent.relative_to(item)) for p in found]
        elif item.is_file():
            jobs.append(Job(item, out))
        else:
            missing.append(str(item))
    if missing:
        raise DataError(f"Input(s) not found: {', '.join(missing[:5])}. Give image files or folders of images.")
    if not jobs:
        raise DataError(f"No images (.tif, .tiff, .png, .jpg) found in {', '.join(map(str, inputs))}.")
    return jobs


def translate_files(checkpoint, inputs: list[Path], source: str, targets: list[str], out: str | Path, *,
                    steps: int = DEFAULT_STEPS, seed: int = 0, guidance: float | None = None,
                    batch_size: int | None = None, device: str = "auto", precision: str = "fp32",
                    overwrite: bool = False,
                    progress: Callable[[str], Callable[[TranslateEvent], None]] | None = None,
                    report: Callable[[Path], None] | None = None) -> BatchResult:
    """Translate every input (this process's share of them) to every target; returns what this process did.

    `progress(description)` gives the per-event callback for each file; `report(path)` is called per written file.
    """
    from accelerate import PartialState

    out = Path(out)
    read_manifest(checkpoint)  # a wrong checkpoint fails before the inputs are searched
    jobs = plan_jobs(inputs, out)
    state = PartialState(cpu=str(device) == "cpu")
    mine = jobs[state.process_index::state.num_processes]
    todo = [job for job in mine if overwrite or not all(job.output(t).is_file() for t in targets)]
    result = BatchResult(skipped=[job.path for job in mine if job not in todo])
    started = time.perf_counter()
    if todo:
        model = load_checkpoint(checkpoint, device=state.device if state.num_processes > 1 else device)
        for name in [source, *targets]:
            model.condition_index(name)  # an unknown condition fails before any work
        for job in todo:
            image = read_image(job.path)
            callback = progress(job.path.name) if progress else None
            results = translate(model, image, source, targets, steps=steps, seed=seed, guidance=guidance,
                                batch_size=batch_size, precision=precision, progress=callback)
            job.out_dir.mkdir(parents=True, exist_ok=True)
            for target, translated in results.items():
                meta = provenance(model, source, target, steps, seed, guidance, job.path)
                written = write_translation(job.out_dir, job.path.stem, target, translated, model, meta)
                result.written.append(written)
                if report:
                    report(written)
    result.seconds = time.perf_counter() - started
    _write_shard(out, state.process_index, result)
    state.wait_for_everyone()
    if state.is_main_process:
        _merge_summary(out, state.num_processes, dict(checkpoint=str(checkpoint), source=source, targets=targets,
                                                      steps=steps, seed=seed, guidance=guidance, inputs=len(jobs)))
    return result


def _write_shard(out: Path, rank: int, result: BatchResult) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shard = {"rank": rank, "written": [str(p) for p in result.written], "skipped": [str(p) for p in result.skipped],
             "seconds": round(result.seconds, 2)}
    (out / f".shard-{rank}.json").write_text(json.dumps(shard))


def _merge_summary(out: Path, processes: int, settings: dict) -> None:
    shards = [json.loads((out / f".shard-{rank}.json").read_text()) for rank in range(processes)]
    summary = {**settings, "processes": processes,
               "written": sum(len(s["written"]) for s in shards),
               "skipped_inputs": sum(len(s["skipped"]) for s in shards),
               "per_process": [{k: (len(v) if isinstance(v, list) else v) for k, v in s.items()} for s in shards],
               "files": sorted(p for s in shards for p in s["written"])}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    for rank in range(processes):
        (out / f".shard-{rank}.json").unlink()
