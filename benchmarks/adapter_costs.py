"""What fine-tuning the shipped microscopy base costs on this computer, per adapter: seconds per step, peak memory and
checkpoint size. The Train dock shows these numbers before the click (data/base/costs.json).

    python benchmarks/adapter_costs.py [--batch-size 8] [--steps 10] [--threads 2]

Each adapter runs in a fresh process (so its peak resident memory is its own): `--steps` training steps of the shipped
base on simulated two-channel cells at the base's native 64 px; seconds per step is the median over the steps after
the first two (warm-up). The checkpoint size counts what a translation needs (not the resumable training state).
Also the pixel `tiny` model from scratch at 48-px crops, for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from report import hardware, table, write_section

ADAPTERS = ("lora", "svdiff", "attention", "full")


def one(adapter: str, batch_size: int, steps: int, threads: int) -> dict:
    import torch

    from napari_phendiff.core.options import TrainConfig
    from napari_phendiff.core.simulate import simulate_dataset
    from napari_phendiff.core.training.run import iter_train

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = simulate_dataset(
            Path(tmp) / "cells", "translocation", n_per_class=8, size=64, seed=0, cell_diameter=20.0
        )
        settings = (
            dict(model="pixel", preset="tiny", image_size=48)
            if adapter == "pixel"
            else dict(model="latent", adapter=adapter)
        )
        out = Path(tmp) / "model"
        stamps = []
        for event in iter_train(
            TrainConfig(
                data=data, out=out, steps=steps, batch_size=batch_size, checkpoint_every=steps, device="cpu", **settings
            )
        ):
            if event.kind == "step":
                stamps.append(time.perf_counter())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and "training" not in f.parts)
    return {
        "seconds_per_step": float(np.median(np.diff(stamps[1:]))),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint_mb": size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one adapter in this process, print JSON
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch_size, args.steps, args.threads)))
        return
    import torch

    torch.set_num_threads(args.threads)
    costs = {}
    for adapter in (*ADAPTERS, "pixel"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                adapter,
                "--batch-size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        costs[adapter] = json.loads(done.stdout.strip().splitlines()[-1])
        print(adapter, costs[adapter], flush=True)
    from napari_phendiff.core.models.bases import COSTS_FILE, SHIPPED_BASES

    measured_on = hardware()
    record = {
        "measured_on": measured_on,
        "image_size": 64,
        "batch_size": args.batch_size,
        "adapters": {a: costs[a] for a in ADAPTERS},
    }
    rows = [
        [a, f"{c['seconds_per_step']:.2f}", f"{c['peak_memory_mb']:.0f}", f"{c['checkpoint_mb']:.1f}"]
        for a, c in costs.items()
    ]
    markdown = (
        f"Hardware: {measured_on}. One fresh process per adapter: {args.steps} training steps of the shipped "
        f"microscopy base at 64 px, batch {args.batch_size}, on simulated two-channel cells; seconds per step "
        "is the median after the first two steps; peak memory is the process's peak resident set (Python, "
        "torch and the data included); the checkpoint is what a translation reads (no training state). "
        "*pixel* is PhenDiff `tiny` from scratch at 48-px crops, the same batch, for comparison. The Train "
        "dock shows these figures (data/base/costs.json) before a run starts.\n\n"
        + table(["adapter", "s per step", "peak memory MB", "checkpoint MB"], rows)
    )
    print(markdown)
    if not args.no_write:
        (SHIPPED_BASES["microscopy"] / COSTS_FILE).write_text(json.dumps(record, indent=2))
        print(f"written to {write_section('adapter_costs', markdown)}")


if __name__ == "__main__":
    main()
