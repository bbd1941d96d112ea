"""A very large field through `phendiff translate`, as a user runs it: peak memory against the field's own size.

    python benchmarks/huge_field.py [--checkpoint demo] [--sizes 256 2048 8192 20000] [--tmp /tmp]

Per size: a two-channel uint16 TIFF of camera background (Poisson noise) holding two patches of simulated cells (the
checkpoint's phenotype, 256 px each: one in the top-left corner, one in the middle), written band by band. Then
`phendiff translate` on it in its own process (the checkpoint's calibrated untreated -> TNFa setting; tiles; copying
background tiles, the default), timed, with that process's peak resident set. The input and the result are held
whole (the TIFF is read into memory and written at the end: 2 x the field's bytes); the rest should be bounded by
bands of rows and one batch of tiles, whatever the field's size. The result's background is checked to be the
input's own pixels. Results go to docs/benchmarks.md (section huge_field).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.simulate import simulate_field

from report import hardware, table, write_section

SOURCE, TARGET = "untreated", "TNFa"
PATCH = 256
BAND = 1024  # rows written (and checked) at a time, so this script holds no whole field either


def write_field(path: Path, size: int, sim: dict, channels: int) -> list[tuple[int, int]]:
    """Write the sparse field to `path`; returns the patches' top-left corners."""
    cells = simulate_field(sim["phenotype"], SOURCE, PATCH, seed=900, cell_diameter=sim["cell_diameter"]).image
    cells = cells[:channels]
    background = np.percentile(cells, 5, axis=(1, 2))
    corners = [(0, 0), (size // 2 - PATCH // 2, size // 2 - PATCH // 2)]
    rng = np.random.default_rng(0)
    field = np.lib.format.open_memmap(path.with_suffix(".npy"), "w+", cells.dtype, (channels, size, size))
    for top in range(0, size, BAND):
        rows = min(BAND, size - top)
        field[:, top : top + rows] = rng.poisson(background[:, None, None], (channels, rows, size))
    for y, x in corners:
        field[:, y : y + PATCH, x : x + PATCH] = cells
    field.flush()
    tifffile.imwrite(path, field, bigtiff=True, metadata={"axes": "CYX"})
    del field
    path.with_suffix(".npy").unlink()
    return corners


def background_kept(original: Path, result: Path, corners: list, size: int) -> bool:
    """Whether every pixel farther than 2 tiles from the patches is the input's own."""
    a, b = tifffile.memmap(original), tifffile.memmap(result)
    near = np.zeros((size, size), bool)
    for y, x in corners:
        near[max(0, y - 256) : y + PATCH + 256, max(0, x - 256) : x + PATCH + 256] = True
    for top in range(0, size, BAND):
        rows = slice(top, min(size, top + BAND))
        if not np.array_equal(a[:, rows][:, ~near[rows]], b[:, rows][:, ~near[rows]]):
            return False
    return True


def run(checkpoint: str, size: int, folder: Path, sim: dict, channels: int) -> list:
    image = folder / f"field_{size}.tif"
    corners = write_field(image, size, sim, channels)
    out = folder / f"out_{size}"
    command = [
        sys.executable,
        "-m",
        "napari_phendiff.cli",
        "translate",
        checkpoint,
        str(image),
        "--source",
        SOURCE,
        "--target",
        TARGET,
        "--out",
        str(out),
        "--tiles",
        "tiles",
    ]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"translate of {size} px failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise SystemExit("the translate process's peak could not be told from an earlier child's")
    result = next(out.glob("*.tif"))
    said = re.search(r"(\d+) of (\d+) tiles held no cell", done.stdout + done.stderr)
    copied = f"{said[1]} / {said[2]}" if said else "-"
    field_mib = image.stat().st_size / 2**20
    kept = background_kept(image, result, corners, size)
    image.unlink()
    result.unlink()
    return {
        "size": size,
        "tiff_mib": field_mib,
        "peak_mib": peak / 1024,
        "seconds": seconds,
        "copied": copied,
        "kept": kept,
    }


def section(checkpoint: str, runs: list[dict], note: str = "") -> str:
    """The docs section: each run's peak, and its growth over the smallest field's (what the field itself costs)."""
    smallest = min(runs, key=lambda r: r["size"])
    rows = [
        [
            r["size"],
            f"{r['size'] ** 2 / 1e6:.3g}",
            f"{r['tiff_mib']:.3g}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] - smallest['peak_mib']:.0f}" if r is not smallest else "-",
            f"{(r['peak_mib'] - smallest['peak_mib']) / r['tiff_mib']:.2f}" if r is not smallest else "-",
            f"{r['seconds']:.0f}",
            r["copied"],
            "yes" if r["kept"] else "NO",
        ]
        for r in runs
    ]
    header = [
        "field (px)",
        "megapixels",
        "TIFF (MiB)",
        "peak RSS (MiB)",
        f"growth over {smallest['size']} px (MiB)",
        "growth / TIFF",
        "seconds",
        "tiles copied / all",
        "background kept exactly",
    ]
    return f"""## A very large field: memory bounded (`benchmarks/huge_field.py`)

`phendiff translate {checkpoint} field.tif --tiles tiles` (its calibrated untreated -> TNFa setting; background
tiles copied, the default) on a two-channel uint16 field of camera background (Poisson noise) with two 256-px patches
of simulated cells, each run in its own process; peak RSS is that process's, the Python interpreter, torch and the
model included; its growth over the smallest field's run is what the field itself costs. The input is read whole and
the result written whole (2 x the TIFF's size at most); everything else is read band by band (the foreground) and
blended band by band (the tiles' rows). Hardware: {hardware()}.{(" " + note) if note else ""}

{table(header, rows)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048, 8192, 20000])
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="a sentence added to the section (e.g. what else ran)")
    parser.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)  # one size, in a child process
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint, device="cpu")
    sim, channels = model.manifest["metadata"]["simulator"], model.channels
    del model
    if args.row_only:
        with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
            print(json.dumps(run(args.checkpoint, args.sizes[0], Path(folder), sim, channels)))
        return
    runs = []
    for size in args.sizes:  # one size per process: a process's RUSAGE_CHILDREN keeps its largest child's peak
        sub = [
            sys.executable,
            __file__,
            "--checkpoint",
            args.checkpoint,
            "--sizes",
            str(size),
            "--tmp",
            str(args.tmp),
            "--row-only",
        ]
        runs.append(
            json.loads(subprocess.run(sub, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        )
        print(runs[-1], flush=True)
    markdown = section(args.checkpoint, runs, args.note)
    print(markdown)
    if not args.no_write:
        write_section("huge_field", markdown)


if __name__ == "__main__":
    main()
