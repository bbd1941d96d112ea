"""Peak memory vs field size up to 2048 x 2048: tiles keep it bounded, the whole field does not.

    python benchmarks/field_memory.py [--checkpoint demo] [--sizes 256 512 1024 2048] [--whole-up-to 1024]

One multichannel field per size, translated with 1 DDIM step each way (memory does not depend on the number of
steps; time per step does, and is given per step), each run in a fresh process so its peak is its own (CUDA: max
allocated; CPU: growth of the peak resident set). Seams are measured at full step counts by large_fields.py.
Writes a table and docs/images/field_memory.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import time
from pathlib import Path

from report import hardware, save_figure, table, write_section

PLOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "field_memory.png"


def run_one(checkpoint: str, size: int, tiles: bool, threads: int) -> dict:
    import numpy as np
    import torch

    from napari_phendiff.core.models import load_checkpoint
    from napari_phendiff.core.translate import translate

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint, device="auto")
    rng = np.random.default_rng(0)
    field = rng.poisson(300, (model.channels, size, size)).astype(np.uint16)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    translate(model, field, model.conditions[0], model.conditions[1], steps=1, tiles=tiles, batch_size=16)
    seconds = time.perf_counter() - started
    memory = (
        torch.cuda.max_memory_allocated()
        if cuda
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    ) / 2**20
    return {"seconds_per_step": seconds / 2, "memory": memory}


def plot(rows: list[list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode, marker in (("tiles", "o-"), ("whole field", "s--")):
        points = [(r[0], r[3]) for r in rows if r[1] == mode]
        if points:
            ax.plot(*zip(*points), marker, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("field side (px)")
    ax.set_ylabel("peak memory growth (MiB)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--whole-up-to", type=int, default=1024, help="largest field run whole (memory grows fast)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    context = multiprocessing.get_context("spawn")
    for size in args.sizes:
        for tiles in (True, False):
            if not tiles and size > args.whole_up_to:
                continue
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                r = pool.submit(run_one, args.checkpoint, size, tiles, args.threads).result()
            rows.append(
                [size, "tiles" if tiles else "whole field", size * size / 1e6, r["memory"], r["seconds_per_step"]]
            )
            print(rows[-1], flush=True)
    header = ["field (px)", "mode", "megapixels", "peak memory (MiB)", "s per DDIM step"]
    markdown = f"""## Peak memory vs field size (`benchmarks/field_memory.py`)

Checkpoint `{args.checkpoint}`, one field per size, tile batch 16, 1 DDIM step each way (time is per step: multiply
by 2 x steps for a translation). Hardware: {hardware()}; {args.threads} torch threads.

{table(header, rows)}

![peak memory vs field size](images/field_memory.png)
"""
    print(markdown)
    if not args.no_write:
        plot(rows, PLOT)
        write_section("field_memory", markdown)


if __name__ == "__main__":
    main()
