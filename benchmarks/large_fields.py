"""Fields larger than the model: overlapping tiles vs the whole field at once (seams, memory, time, quality).

    python benchmarks/large_fields.py [--checkpoint demo] [--sizes 96 192 384] [--steps 20]

Per field size and mode (tiles of the model's size with 25% overlap, blended with linear ramps; or the fully
convolutional UNet run on the whole padded field), each in a fresh process so peak memory is its own:
- time per field, and peak memory (CUDA: max allocated; CPU: growth of the process's peak resident set);
- seam ratio: mean |horizontal + vertical gradient| of the difference image (translated - original) on the pixel
  lines where tiles meet, over the same on all lines; 1.0 means the tile borders cannot be told from the interior;
- transfer: share of cells whose phenotype moved to the target condition (simulator ground-truth masks).
Results go to docs/benchmarks.md (section "large_fields").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import time

import numpy as np

from report import hardware, table, write_section

CONDITIONS = ("untreated", "TNFa")


def seam_lines(length: int, size: int) -> list[int]:
    from napari_phendiff.core.tiling import tile_starts

    starts = tile_starts(length, size)
    return sorted({s for s in starts if s > 0} | {s + size for s in starts if s + size < length})


def run_one(checkpoint: str, size: int, tiles: bool, steps: int, fields: int) -> dict:
    import torch

    from napari_phendiff.core.models import load_checkpoint
    from napari_phendiff.core.measure import transfer_rate
    from napari_phendiff.core.simulate import measure_phenotype, simulate_field
    from napari_phendiff.core.translate import translate

    torch.set_num_threads(1)
    model = load_checkpoint(checkpoint, device="auto")
    sim = model.manifest.get("metadata", {}).get("simulator", {"phenotype": "translocation", "cell_diameter": 20.0})
    made = {
        c: [
            simulate_field(sim["phenotype"], c, size, seed=700 + i, cell_diameter=sim["cell_diameter"])
            for i in range(fields)
        ]
        for c in CONDITIONS
    }
    values = {
        c: np.concatenate([measure_phenotype(f.image, f.nuclei, f.cells, sim["phenotype"]) for f in made[c]])
        for c in CONDITIONS
    }
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stack = np.stack([f.image for f in made[CONDITIONS[0]]])
    started = time.perf_counter()
    out = translate(model, stack, CONDITIONS[0], CONDITIONS[1], steps=steps, tiles=tiles, batch_size=16)
    seconds = (time.perf_counter() - started) / fields
    memory = (
        torch.cuda.max_memory_allocated()
        if cuda
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    ) / 2**20
    norm = model.normalization.forward
    difference = norm(out) - norm(stack)
    grad_x = np.abs(np.diff(difference, axis=-1)).mean(axis=(0, 1, 2))  # between columns x and x+1
    grad_y = np.abs(np.diff(difference, axis=-2)).mean(axis=(0, 1, 3))
    lines = [line - 1 for line in seam_lines(size, model.image_size)]
    seam = ((grad_x[lines].mean() + grad_y[lines].mean()) / (grad_x.mean() + grad_y.mean())) if lines else float("nan")
    moved = np.concatenate(
        [measure_phenotype(im, f.nuclei, f.cells, sim["phenotype"]) for im, f in zip(out, made[CONDITIONS[0]])]
    )
    return {
        "seconds": seconds,
        "memory": memory,
        "seam": float(seam),
        "transfer": transfer_rate(moved, values[CONDITIONS[0]], values[CONDITIONS[1]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 192, 384])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fields", type=int, default=2)
    args = parser.parse_args()
    rows = []
    context = multiprocessing.get_context("spawn")
    for size in args.sizes:
        for tiles in (True, False):
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                r = pool.submit(run_one, args.checkpoint, size, tiles, args.steps, args.fields).result()
            rows.append(
                [size, "tiles" if tiles else "whole field", r["seconds"], r["memory"], r["seam"], r["transfer"]]
            )
            print(rows[-1], flush=True)
    header = ["field (px)", "mode", "s / field", "peak memory (MiB)", "seam ratio", "transfer"]
    print(table(header, rows))
    write_section(
        "large_fields",
        f"""## Large fields: tiles vs whole field (`benchmarks/large_fields.py`)

Checkpoint `{args.checkpoint}`, {args.fields} simulated fields per size, {args.steps} DDIM steps each way, untreated
-> TNFa. Seam ratio: gradient of the difference image on the lines where tiles meet over its mean everywhere (1.0:
invisible; "nan" where a field is one tile). Hardware: {hardware()}.

{table(header, rows)}
""",
    )


if __name__ == "__main__":
    main()
