"""Does a fine-tuned latent model translate the cells it was given, or draw new ones?

    python benchmarks/latent_layout.py --checkpoint CKPT --held-out HELD [--settings 1,4 1,1.5 1,1.5,100] [--fields 20]
        [--keep DNA --section latent_layout_kept]

HELD is a folder `phendiff simulate --phenotype translocation` wrote (HELD_truth beside it): the held-out fields of
benchmarks/finetune_claim.py (seed 1). For each direction and setting (strength, guidance against the source, DDIM
steps: 20 unless given) the fields are translated without kept channels (a walk whose autoencoder mixes the channels
cannot hold them; they are pasted after decoding, which changes no other channel), or keeping --keep (a base with
channel slots holds their latents at every step; the nuclei IoU is then the segmentation's ceiling by construction). Columns: *transfer, true masks*: the share of cells whose
phenotype, measured with the original's true masks, is closer to the real target's median than to the source's
(what finetune_claim reports); *transfer, own nuclei*: the same measured on the nuclei segmented on the translation
itself and grown into cells (wherever the model drew its cells); *nuclei IoU*: those nuclei against the true ones
(the segmentation's ceiling on the originals is about 0.8 here). *source -> source* rows are the reconstruction at
each number of steps (strength 1, no guidance): what inversion and regeneration keep of the layout and of the
phenotype when the condition does not change (their transfer is towards the other condition: what the walk itself
moves). Not a test (docs/benchmarks.md, section latent_layout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_phendiff.core import cells
from napari_phendiff.core.measure import transfer_rate
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.simulate import measure_phenotype
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section

PHENOTYPE = "translocation"


def load(held: Path, condition: str, fields: int) -> tuple[np.ndarray, list]:
    """The first `fields` images of a condition and their true (nuclei, cells) masks."""
    truth = held.with_name(held.name + "_truth")
    paths = sorted((held / condition).glob("*.tif"))[:fields]
    masks = [
        tuple(tifffile.imread(truth / condition / f"{p.stem}_{kind}.tif") for kind in ("nuclei", "cells"))
        for p in paths
    ]
    return np.stack([tifffile.imread(p) for p in paths]), masks


def measured(images, masks) -> np.ndarray:
    values = np.concatenate([measure_phenotype(im, *m, PHENOTYPE) for im, m in zip(images, masks)])
    return values[~np.isnan(values)]


def scores(out: np.ndarray, masks: list, source_values, target_values, nuclear: int) -> dict:
    own_masks = []
    for image in out:
        nuclei = cells.segment_nuclei(image[nuclear])
        own_masks.append((nuclei, cells.segment_cells(nuclei)))
    return {
        "transfer_true": transfer_rate(measured(out, masks), source_values, target_values),
        "transfer_own": transfer_rate(measured(out, own_masks), source_values, target_values),
        "iou": float(np.mean([cells.mask_iou(own[0], true[0]) for own, true in zip(own_masks, masks)])),
    }


def run(args) -> list[dict]:
    model = load_checkpoint(args.checkpoint, device="cpu")
    conditions, nuclear = list(model.conditions), cells.nuclear_channel(list(model.channel_names))
    data = {c: load(args.held_out, c, args.fields) for c in conditions}
    values = {c: measured(*data[c]) for c in conditions}
    rows = []
    for source in args.sources or conditions:
        target = next(c for c in conditions if c != source)
        images, masks = data[source]
        reconstructions = [(source, 1.0, 1.0, steps) for steps in sorted({setting[2] for setting in args.settings})]
        runs = reconstructions + [(target, *setting) for setting in args.settings]
        for to, strength, guidance, steps in runs:
            out = translate(
                model,
                images,
                source,
                to,
                strength=strength,
                guidance=guidance,
                negative="source",
                steps=steps,
                seed=0,
                keep_channels=tuple(args.keep),
            )
            row = {
                "kept": args.keep,
                "source": source,
                "target": to,
                "strength": strength,
                "guidance": guidance,
                "steps": steps,
                **scores(out, masks, values[source], values[target], nuclear),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict], args) -> str:
    head = (
        f"Hardware: {hardware()}. Checkpoint `{args.checkpoint.name}`; the first {args.fields} held-out fields "
        f"per condition of `{args.held_out}`; guidance against the source"
        + (f"; {', '.join(args.keep)} kept" if args.keep else "")
        + ".\n\n"
    )
    body = table(
        [
            "direction",
            "setting",
            "DDIM steps",
            "transfer, true masks",
            "transfer, own nuclei",
            "nuclei IoU",
        ],
        [
            [
                f"{r['source']} → {r['target']}",
                f"s {r['strength']:g}, w {r['guidance']:g}",
                r["steps"],
                r["transfer_true"],
                r["transfer_own"],
                r["iou"],
            ]
            for r in rows
        ],
    )
    return "## Does a fine-tuned latent model keep the cells? (`benchmarks/latent_layout.py`)\n\n" + head + body


def _setting(text: str) -> tuple[float, float, int]:
    values = text.split(",")
    return float(values[0]), float(values[1]), int(values[2]) if len(values) > 2 else 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["1,4", "1,1.5", "1,1.5,50", "1,1.5,100"],
        help="strength,guidance[,steps] to translate at (steps 20 unless given)",
    )
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--sources", nargs="+", help="only these source conditions (default: every condition)")
    parser.add_argument(
        "--collect", nargs="+", type=Path, help="only write the docs from the rows these runs printed (their logs)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", nargs="+", default=[], help="channels kept as the original's (TranslateOptions)")
    parser.add_argument("--section", default="latent_layout", help="the docs/benchmarks.md section written")
    args = parser.parse_args()
    args.settings = [_setting(text) for text in args.settings]
    torch.set_num_threads(args.threads)
    if args.collect:
        lines = [line for log in args.collect for line in log.read_text().splitlines() if line.startswith("{")]
        found: dict[tuple, dict] = {}
        for row in map(json.loads, lines):  # rows kept otherwise are another table's; a repeated setting once
            key = tuple(row[k] for k in ("source", "target", "strength", "guidance", "steps"))
            kept = row.get("kept") or []  # rows of the projection that was not kept say only `true`
            if kept is not True and sorted(kept) == sorted(args.keep):
                found.setdefault(key, row)
        rows = list(found.values())
    else:
        rows = run(args)
    text = markdown(rows, args)
    print(text)
    if not args.no_write:
        print(f"written to {write_section(args.section, text)}")


if __name__ == "__main__":
    main()
