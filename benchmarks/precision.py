"""Translation in lower precision: how much faster, and how far from float32 (PSNR), on this machine's device.

    python benchmarks/precision.py [--checkpoint demo] [--fields 2] [--steps 20] [--precisions fp32 bf16 fp16]

Same fields, same seed, each precision once (a warm-up translation first). PSNR in the normalised units where the
data span [-1, 1] (peak 2); the issue's bar for "equal output" is 40 dB. Writes docs/benchmarks.md ("precision").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.simulate import simulate_field
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    sim = model.manifest["metadata"]["simulator"]
    stack = np.stack(
        [
            simulate_field(
                sim["phenotype"],
                model.conditions[0],
                sim["size"],
                seed=3_000_000 + i,
                cell_diameter=sim["cell_diameter"],
            ).image
            for i in range(args.fields)
        ]
    )
    source, target = model.conditions[0], model.conditions[1]
    translate(model, stack[:1], source, target, steps=1)  # warm-up
    outputs, rows = {}, []
    for precision in args.precisions:
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = translate(model, stack, source, target, steps=args.steps, precision=precision, tiles=False)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / args.fields
        outputs[precision] = model.normalization.forward(out)
        mse = float(np.mean((outputs[precision] - outputs[args.precisions[0]]) ** 2))
        psnr = 10 * np.log10(4 / mse) if mse > 0 else float("inf")
        rows.append([precision, seconds, rows[0][1] / seconds if rows else 1.0, psnr])
        print(rows[-1], flush=True)
    header = ["precision", "s / field", f"speed-up vs {args.precisions[0]}", f"PSNR vs {args.precisions[0]} (dB)"]
    markdown = f"""## Precision (`benchmarks/precision.py`)

Checkpoint `{args.checkpoint}`, {args.fields} simulated {sim["size"]}-px fields, {args.steps} DDIM steps each way,
whole fields, seed 0. Hardware: {hardware()}.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section("precision", markdown)


if __name__ == "__main__":
    main()
