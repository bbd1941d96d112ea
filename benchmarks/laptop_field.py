"""A biologist's own field on this CPU: how long one large field takes at the default translation, how close the
estimate given after the first steps is, and what copying background tiles (skip_background) saves.

    python benchmarks/laptop_field.py [--checkpoint demo] [--runs 384:dense:default 384:dense:skip ...]

Each run is SIZE:KIND:MODE. KIND: *dense*, a simulated field of the checkpoint's phenotype (cells everywhere), or
*sparse*, the same field with only the cells of its top-left third kept and camera background (each channel's
background mean and spread) everywhere else. MODE: *default* (every tile translated) or *skip* (skip_background).
The translation is the checkpoint's calibrated untreated -> TNFa setting, in tiles (the default for these sizes on a
CPU). Per run: seconds, the estimate (time elapsed when the first `seconds_left` came plus that value) and its error,
tiles copied, and transfer on the simulator's ground truth (cells whose phenotype moved to the target's range).
Results go to docs/benchmarks.md (section laptop_field).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from napari_phendiff.core.measure import transfer_rate
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.simulate import measure_phenotype, simulate_field
from napari_phendiff.core.estimate import estimate_translation
from napari_phendiff.core.translate import iter_translate

from report import hardware, table, write_section

SOURCE, TARGET = "untreated", "TNFa"


def make_field(sim: dict, condition: str, size: int, kind: str):
    """(image, nuclei, cells): a dense simulated field, or its sparse version (cells of the top-left third only)."""
    made = simulate_field(sim["phenotype"], condition, size, seed=900, cell_diameter=sim["cell_diameter"])
    image, nuclei, cells = made.image.copy(), made.nuclei.copy(), made.cells.copy()
    if kind == "sparse":
        region = np.zeros(cells.shape, bool)
        region[: size // 3, : size // 3] = True
        inside = [label for label in np.unique(cells[region]) if label and region[cells == label].all()]
        keep = np.isin(cells, inside)
        rng = np.random.default_rng(0)
        for c, channel in enumerate(image):
            background = channel[cells == 0]
            noise = rng.normal(background.mean(), background.std(), channel.shape)
            outside = ~region & ~keep
            channel[outside] = noise[outside].clip(0, np.iinfo(channel.dtype).max).astype(channel.dtype)
        nuclei[~keep], cells[~keep] = 0, 0
    return image, nuclei, cells


def run(model, sim: dict, size: int, kind: str, mode: str) -> list:
    image, nuclei, cells = make_field(sim, SOURCE, size, kind)
    values = {c: measure_phenotype(*make_field(sim, c, size, kind), sim["phenotype"]) for c in (SOURCE, TARGET)}
    started = time.perf_counter()
    before = estimate_translation(model, image, SOURCE, TARGET, tiles=True, skip_background=(mode == "skip"))
    cost = time.perf_counter() - started
    started, estimate, done = time.perf_counter(), None, None
    for event in iter_translate(model, image, SOURCE, TARGET, tiles=True, skip_background=(mode == "skip")):
        if estimate is None and event.seconds_left is not None:
            estimate = time.perf_counter() - started + event.seconds_left
        done = event
    seconds = time.perf_counter() - started
    moved = measure_phenotype(done.result, nuclei, cells, sim["phenotype"])
    present = np.unique(cells[cells > 0]) - 1
    present = present[
        np.isfinite(moved[present]) & np.isfinite(values[SOURCE][present]) & np.isfinite(values[TARGET][present])
    ]
    transfer = transfer_rate(moved[present], values[SOURCE][present], values[TARGET][present])
    copied, tiles = done.copied
    error = (estimate - seconds) / seconds if estimate else float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return [
        size,
        kind,
        mode,
        len(present),
        seconds,
        before.seconds,
        f"{100 * (before.seconds / seconds - 1):+.0f}%",
        cost,
        estimate or float("nan"),
        f"{100 * error:+.0f}%",
        f"{copied} / {tiles}",
        transfer,
        peak,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument(
        "--runs",
        nargs="+",
        default=[
            "384:dense:default",
            "384:dense:skip",
            "384:sparse:default",
            "384:sparse:skip",
            "768:sparse:skip",
            "768:dense:default",
            "1024:dense:default",
            "2048:sparse:skip",
            "2048:dense:default",
        ],
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default="laptop_field", help="the docs section to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint, device="cpu")
    sim = model.manifest["metadata"]["simulator"]
    rows = []
    for spec in args.runs:
        size, kind, mode = spec.split(":")
        rows.append(run(model, sim, int(size), kind, mode))
        print(rows[-1], flush=True)
    header = [
        "field (px)",
        "field",
        "mode",
        "cells",
        "seconds",
        "estimate before (s)",
        "its error",
        "its cost (s)",
        "estimate after first steps (s)",
        "its error",
        "tiles copied",
        "transfer",
        "process peak RSS so far (MiB)",
    ]
    title = "" if args.section == "laptop_field" else f" ({args.section})"
    markdown = f"""## A large field on this CPU: time, the estimate, background tiles{title} (`benchmarks/laptop_field.py`)

Checkpoint `{args.checkpoint}` at its calibrated untreated -> TNFa setting, in tiles. *dense*: a simulated field
(seed 900) with cells everywhere; *sparse*: the same with only the cells of its top-left third kept, camera background
elsewhere. *default*: every tile translated (skip_background off, the setting before it existed); *skip*:
`skip_background` (tiles with no cell within a quarter tile copied; now the default). *Estimate before*: what
`phendiff translate --estimate` and the dock's Estimate time say before the run (core/estimate.py
estimate_translation: a batch of the field's tiles timed), with what computing it cost; *estimate after first
steps*: what the run announces once its first steps are timed (elapsed + seconds left then); transfer is scored on
the cells of the field (ground truth). Hardware: {hardware()}; one run at a time on an otherwise idle machine unless said below.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section(args.section, markdown)


if __name__ == "__main__":
    main()
