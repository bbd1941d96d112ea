"""The CPU's own levers on dense fields at the default translation: precision, memory layout, tile overlap.

    python benchmarks/cpu_levers.py [--checkpoint demo] [--sizes 1024 2048] [--arms fp32 bf16 channels_last ...]

One simulated dense field per size (the checkpoint's phenotype, seed 900 as laptop_field.py), untreated -> TNFa at the
checkpoint's calibrated setting, in tiles, every tile translated; each arm in its own process. An arm is one lever or
several joined by "+": *fp32* and *bf16* (the network's precision, autocast), *default* (no option given: what a user
gets), *channels_last* (the UNet's weights in channels-last layout; the CPU's default since), *nchw* (the
weights' layout before that), *compile* (torch.compile of the network, its
compilation included in the time), *overlap_X* (tiles overlapping by X of their side
instead of 0.25), *tile_N* (tiles of N px instead of the model's training crop), *deepcache_N* (regeneration reuses deep features, the whole network every N-th step). Per arm: seconds, the process's peak resident memory, transfer (share of cells whose phenotype moved
to the target's range, simulator truth), identity (IoU of the true nuclei with nuclei segmented on the translation,
over the same on the original), the seam ratio (the difference image's gradient on the lines where tiles meet over
its mean everywhere; 1.0: invisible) and the largest pixel difference from the fp32 arm's result (on the model's -1..1
scale). Whether bf16 is native here: the CPU's flags (amx_bf16, avx512_bf16) are printed. Results go to
docs/benchmarks.md (section cpu_levers).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

from report import hardware, table, write_section

SOURCE, TARGET = "untreated", "TNFa"


def bf16_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    found = sorted({f for f in flags if f in ("amx_bf16", "avx512_bf16")})
    return ", ".join(found) or "none"


def run_arm(checkpoint: str, size: int, arm: str, threads: int) -> dict:
    import torch

    from napari_phendiff.core import tiling
    from napari_phendiff.core.cells import mask_iou, nuclear_channel, segment_nuclei
    from napari_phendiff.core.measure import transfer_rate
    from napari_phendiff.core.models import load_checkpoint
    from napari_phendiff.core.simulate import measure_phenotype, simulate_field
    from napari_phendiff.core.translate import translate

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint, device="cpu")
    sim = model.manifest["metadata"]["simulator"]
    made = {
        c: simulate_field(sim["phenotype"], c, size, seed=900, cell_diameter=sim["cell_diameter"])
        for c in (SOURCE, TARGET)
    }
    options = {}
    for lever in arm.split("+"):
        if lever in ("fp32", "bf16"):
            options["precision"] = lever
        elif lever == "channels_last":
            model.network().to(memory_format=torch.channels_last)
        elif lever == "nchw":  # the weights' layout before channels-last became the CPU's default
            model.network().to(memory_format=torch.contiguous_format)
        elif lever == "compile":
            model.network().compile()  # torch.compile in place (inductor; C++ kernels built on the first calls)
        elif lever.startswith("overlap_"):
            tiling.TILE_OVERLAP = float(lever.split("_")[1])
        elif lever.startswith("tile_"):  # tiles of this side instead of the training crop's (the same overlap share)
            model.image_size = int(lever.split("_")[1])
        elif lever.startswith("deepcache_"):
            options["deep_cache"] = int(lever.split("_")[1])
        elif lever != "default":
            raise SystemExit(f"unknown lever {lever!r}")
    image = made[SOURCE].image
    started = time.perf_counter()
    out = translate(model, image, SOURCE, TARGET, tiles=True, skip_background=False, **options)
    seconds = time.perf_counter() - started
    values = {c: measure_phenotype(f.image, f.nuclei, f.cells, sim["phenotype"]) for c, f in made.items()}
    moved = measure_phenotype(out, made[SOURCE].nuclei, made[SOURCE].cells, sim["phenotype"])
    keep = np.isfinite(moved) & np.isfinite(values[SOURCE]) & np.isfinite(values[TARGET])
    nuclear = nuclear_channel(model.channel_names)
    identity = mask_iou(segment_nuclei(out[nuclear]), made[SOURCE].nuclei) / mask_iou(
        segment_nuclei(image[nuclear]), made[SOURCE].nuclei
    )
    norm = model.normalization.forward
    difference = norm(out) - norm(image)
    grad_x = np.abs(np.diff(difference, axis=-1)).mean(axis=(0, 1))
    grad_y = np.abs(np.diff(difference, axis=-2)).mean(axis=(0, 2))
    starts = tiling.tile_starts(size, model.image_size)
    lines = sorted({s for s in starts if s > 0} | {s + model.image_size for s in starts if s + model.image_size < size})
    lines = [line - 1 for line in lines]
    seam = (grad_x[lines].mean() + grad_y[lines].mean()) / (grad_x.mean() + grad_y.mean())
    return {
        "arm": arm,
        "size": size,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "transfer": transfer_rate(moved[keep], values[SOURCE][keep], values[TARGET][keep]),
        "identity": float(identity),
        "seam": float(seam),
        "tiles": len(tiling.windows((size, size), model.image_size, True)),
        "result": norm(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024])
    parser.add_argument("--arms", nargs="+", default=["fp32", "bf16", "channels_last", "overlap_0.125"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--section", default="cpu_levers")
    parser.add_argument("--title", default="The CPU's levers on dense fields")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for size in args.sizes:
        results = []
        for arm in args.arms:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                results.append(pool.submit(run_arm, args.checkpoint, size, arm, args.threads).result())
            print({k: v for k, v in results[-1].items() if k != "result"}, flush=True)
        # the reference: the first arm in fp32 ("fp32", or "fp32+nchw" for the layout before channels-last)
        reference = next((r["result"] for r in results if r["arm"].split("+")[0] == "fp32"), None)
        base = next((r["seconds"] for r in results if r["arm"].split("+")[0] == "fp32"), None)
        rows += [
            [
                size,
                r["arm"],
                r["tiles"],
                f"{r['seconds']:.0f}",
                f"{base / r['seconds']:.2f}" if base else "-",
                f"{r['peak_mib']:.0f}",
                f"{r['transfer']:.3f}",
                f"{r['identity']:.3f}",
                f"{r['seam']:.3f}",
                f"{np.abs(r['result'] - reference).max():.3f}" if reference is not None else "-",
            ]
            for r in results
        ]
    header = [
        "field (px)",
        "arm",
        "tiles",
        "seconds",
        "speed-up vs fp32",
        "peak memory (MiB)",
        "transfer",
        "identity",
        "seam ratio",
        "max |difference| vs fp32",
    ]
    markdown = f"""## {args.title} (`benchmarks/cpu_levers.py`)

Checkpoint `{args.checkpoint}`, one simulated dense field per size (seed 900), untreated -> TNFa at its calibrated
setting, in tiles, every tile translated; each arm in its own process, one after the other. Native bf16 on this CPU:
{bf16_flags()}. Hardware: {hardware()}.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section(args.section, markdown)


if __name__ == "__main__":
    main()
