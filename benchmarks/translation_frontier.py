"""The transfer-identity frontier of translation settings, on the simulator's ground truth, both directions.

    python benchmarks/translation_frontier.py --name demo --checkpoint demo --fields 20
    python benchmarks/translation_frontier.py --name golgi --checkpoint WORK/golgi/model_pixel \
        --data WORK/golgi/held_out          # a held-out set written by `phendiff simulate` (with its _truth)

For every setting of a sweep (strength x guidance x negative x inversion; core/calibrate.py's grid) and each
direction, held-out fields are translated (one inversion per field serves the whole sweep) and scored with the
ground truth: phenotype_transfer (share of cells whose simulator phenotype moved to the target condition, with the
original's true masks), identity (IoU of the true nuclei with nuclei segmented on the translation, over the same on
the original: 1 = as well kept as the segmentation allows), and the change of the DNA channel, which no condition
touches. The no-truth scores of `phendiff calibrate` (classifier P(target), nuclei IoU translation vs original) are
computed on the same translations, so the calibrated choice can be compared with the ground-truth optimum: the
setting with the highest transfer among those keeping identity >= 0.9.

Results: a JSON per run in --work, a table and a plot per model in docs/benchmarks.md (section frontier_<name>).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_phendiff.core import calibrate as cal
from napari_phendiff.core import cells as cellmeasure
from napari_phendiff.core.cellstats import RealCells
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.dataset import load_folder
from napari_phendiff.core.features import train_classifier
from napari_phendiff.core.measure import transfer_rate
from napari_phendiff.core.options import TranslateOptions
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field

from report import hardware, save_figure, table, write_section

IDENTITY_MIN = 0.9  # the bar: identity_iou >= 0.9 x identity_iou_reference
TIE = 0.02


def simulated_sets(model, fields: int, seed: int) -> dict[str, dict]:
    """Fresh fields with the checkpoint's own simulator settings, per condition: images, true nuclei and cells."""
    sim = model.manifest["metadata"]["simulator"]
    sets = {}
    for condition in PHENOTYPES[sim["phenotype"]].conditions:
        made = [
            simulate_field(sim["phenotype"], condition, sim["size"], seed=seed + i, cell_diameter=sim["cell_diameter"])
            for i in range(fields)
        ]
        sets[condition] = {
            "images": np.stack([f.image for f in made]),
            "nuclei": [f.nuclei for f in made],
            "cells": [f.cells for f in made],
        }
    return sim["phenotype"], sets


def folder_sets(data: Path, fields: int) -> tuple[str, dict[str, dict]]:
    """A held-out folder written by `phendiff simulate` and its ground truth beside it."""
    truth = data.with_name(data.name + "_truth")
    info = json.loads((truth / "truth.json").read_text())
    images = load_folder(data)
    sets = {}
    for c, condition in enumerate(images.conditions):
        members = [i for i, label in enumerate(images.labels) if label == c][:fields]
        masks = [
            [
                tifffile.imread(truth / condition / f"{images.paths[i].stem}_{kind}.tif").astype(np.int32)
                for kind in ("nuclei", "cells")
            ]
            for i in members
        ]
        sets[condition] = {
            "images": np.stack([images.images[i] for i in members]),
            "nuclei": [m[0] for m in masks],
            "cells": [m[1] for m in masks],
        }
    return info["phenotype"], sets


def classifier_for(phenotype: str, model, sets: dict, args):
    """The no-truth scores' classifier, trained on separate real fields of both conditions (as calibrate does on
    the user's folder), and those fields per condition (the real target images calibrate compares with)."""
    sim_size = int(sets[next(iter(sets))]["images"].shape[-1])
    images, labels, real = [], [], {}
    for c, condition in enumerate(sets):
        real[condition] = [
            simulate_field(
                phenotype, condition, sim_size, seed=args.seed + 50_000 + i, cell_diameter=args.cell_diameter
            ).image
            for i in range(args.classifier_fields)
        ]
        images += real[condition]
        labels += [c] * len(real[condition])
    return train_classifier(images, labels, list(sets), steps=args.classifier_steps, seed=0), real


def scored_sweep(
    phenotype: str,
    model,
    sets: dict,
    source: str,
    target: str,
    settings: list[cal.Setting],
    base: TranslateOptions,
    classifier,
    real_targets: list[np.ndarray],
    progress=None,
) -> list[dict]:
    """Translate the held-out source fields with every setting and its source -> source control (one inversion),
    and score each setting with the ground truth (`score`) and as calibrate does without it (`score_rows`)."""
    out = sweep_with_controls(model, sets[source]["images"], source, target, settings, base, progress)
    return score_rows(
        phenotype, model, sets, source, target, settings, out, classifier, real_targets, tuple(base.keep_channels)
    )


def sweep_with_controls(
    model,
    stack: np.ndarray,
    source: str,
    target: str,
    settings: list[cal.Setting],
    base: TranslateOptions,
    progress=None,
) -> dict:
    return cal.sweep_pairs(model, stack, source, cal.with_controls(settings, source, target), base, progress=progress)


def score_rows(
    phenotype: str,
    model,
    sets: dict,
    source: str,
    target: str,
    settings: list[cal.Setting],
    out: dict,
    classifier,
    real_targets: list[np.ndarray],
    kept: tuple[str, ...] = (),
) -> list[dict]:
    """Truth and no-truth scores of a sweep's translations `out` ({(target, setting): stack}). The no-truth ones
    leave out, as calibrate does by default, the kept channels and the nuclear one (untouched by conditions)."""
    stack = sets[source]["images"]
    witnesses = cal.Witnesses(
        classifier,
        cal.target_probability(classifier, real_targets, target),
        classifier.accuracy >= cal.CLASSIFIER_MIN_ACCURACY,
        RealCells(stack, real_targets, model.channel_names),
        cal.left_out_channels(model.channel_names, kept),
    )
    rows = []
    for s in settings:
        translated, control = out[(target, s)], out[(source, cal.control_of(s))]
        rows.append(
            {
                **asdict(s),
                **score(phenotype, model, classifier, sets[source], sets[target], target, translated),
                **witnesses.score(model, stack, translated, control, target),
            }
        )
    return rows


def score(phenotype, model, classifier, source_set, target_set, target, translated) -> dict:
    nuclear = cellmeasure.nuclear_channel(model.channel_names)
    originals = source_set["images"]
    masks = list(zip(source_set["nuclei"], source_set["cells"]))
    source_values = np.concatenate([measure_phenotype(im, nu, ce, phenotype) for im, (nu, ce) in zip(originals, masks)])
    target_values = np.concatenate(
        [
            measure_phenotype(im, nu, ce, phenotype)
            for im, nu, ce in zip(target_set["images"], target_set["nuclei"], target_set["cells"])
        ]
    )
    values = np.concatenate([measure_phenotype(im, nu, ce, phenotype) for im, (nu, ce) in zip(translated, masks)])
    iou = np.mean(
        [cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu) for im, (nu, _) in zip(translated, masks)]
    )
    reference = np.mean(
        [cellmeasure.mask_iou(cellmeasure.segment_nuclei(im[nuclear]), nu) for im, (nu, _) in zip(originals, masks)]
    )
    finite = lambda v: v[np.isfinite(v)]  # noqa: E731
    change = cal.channel_change(model, originals, translated)
    return {
        "transfer": transfer_rate(finite(values), finite(source_values), finite(target_values)),
        "identity": float(iou / reference),
        "identity_iou": float(iou),
        "identity_iou_reference": float(reference),
        "median_translated": float(np.nanmedian(values)),
        "median_source": float(np.nanmedian(source_values)),
        "median_target": float(np.nanmedian(target_values)),
        "dna_change": change[model.channel_names[nuclear]],
        **{f"change_{name}": value for name, value in change.items()},
        "moved": cal.target_probability(classifier, translated, target) if classifier is not None else None,
        "kept": cal.kept_score(originals, translated, model.channel_names),
    }


def truth_optimum(rows: list[dict]) -> dict:
    feasible = [r for r in rows if r["identity"] >= IDENTITY_MIN] or [max(rows, key=lambda r: r["identity"])]
    best = max(r["transfer"] for r in feasible)
    return max([r for r in feasible if r["transfer"] >= best - TIE], key=lambda r: r["identity"])


def run(args) -> dict:
    model = load_checkpoint(args.checkpoint, device="cpu")
    if args.data:
        phenotype, sets = folder_sets(Path(args.data), args.fields)
    else:
        phenotype, sets = simulated_sets(model, args.fields, args.seed)
    classifier, real = classifier_for(phenotype, model, sets, args)
    intervals = [tuple(float(v) for v in text.split("-")) for text in args.intervals]
    settings = cal.grid(args.strengths, args.guidances, args.negatives, args.inversions, intervals)
    base = TranslateOptions(steps=args.steps, batch_size=args.batch, keep_channels=tuple(args.keep)).validate()
    conditions = list(sets)
    results = {
        "name": args.name,
        "checkpoint": str(args.checkpoint),
        "phenotype": phenotype,
        "steps": args.steps,
        "keep_channels": list(args.keep),
        "hardware": hardware(),
        "fields": args.fields,
        "classifier_accuracy": classifier.accuracy,
        "directions": {},
    }
    for source, target in ((conditions[0], conditions[1]), (conditions[1], conditions[0])):
        start = time.perf_counter()
        rows = scored_sweep(
            phenotype,
            model,
            sets,
            source,
            target,
            settings,
            base,
            classifier,
            real[target],
            progress=lambda d, t: print(f"\r{source}->{target} {d}/{t} network calls", end="", flush=True),
        )
        untranslated = score(phenotype, model, classifier, sets[source], sets[target], target, sets[source]["images"])
        default = asdict(cal.uncalibrated_setting(model.manifest, source, target))
        results["directions"][f"{source}->{target}"] = {
            "rows": rows,
            "untranslated": untranslated,
            "default": default,
            "calibrated": _calibrated(rows, model.channel_names, default),
            "truth_optimum": truth_optimum(rows),
            "seconds": time.perf_counter() - start,
        }
        print(f"\n{source}->{target}: {time.perf_counter() - start:.0f} s", flush=True)
    return results


def _calibrated(rows: list[dict], channel_names: list[str], default: dict | None) -> dict:
    """calibrate's rule on the rows, weighed against the checkpoint's setting without calibration (`default`, as
    recorded; runs that did not record it were all of pixel models, whose setting is the project default): its
    choice, or the closest when it would store nothing."""
    without = (
        cal.setting_of(default) if default else cal.Setting(TranslateOptions().strength, TranslateOptions().guidance)
    )
    return cal.choose(rows, [channel_names[cellmeasure.nuclear_channel(channel_names)]], default=without).best


def markdown(results: dict, args, figure: Path) -> str:
    lines = [
        f"## Translation settings on the ground truth: {results['name']} (`benchmarks/translation_frontier.py`)",
        "",
        f"Checkpoint `{results['checkpoint']}` ({results['phenotype']}), {results['fields']} held-out fields "
        f"per direction, a {results['steps']}-step DDIM grid (strength s runs s x {results['steps']} steps each "
        f"way). Transfer and identity from the simulator's truth (identity = nuclei IoU over the "
        f"segmentation's own ceiling; target >= {IDENTITY_MIN}); moved and kept are `phendiff calibrate`'s "
        f"no-truth scores on the same translations, *calibrated* its choice (core/calibrate.py `choose`; "
        f"classifier held-out accuracy "
        f"{results['classifier_accuracy']:.2f}). Hardware: {results.get('hardware') or hardware()}.",
        "",
    ]
    if results.get("keep_channels"):
        lines += [
            f"Channels kept as the original's (keep_channels): {', '.join(results['keep_channels'])}. Identity "
            "is then 1 by construction (the nuclei are segmented on the kept DNA) and the truth optimum, which "
            "maximises transfer, overshoots: read the median against the real target's (untranslated row).",
            "",
        ]
    header = ["direction", "setting", "transfer", "identity", "DNA change", "median", "moved", "kept"]
    for direction, entry in results["directions"].items():
        rows = []
        u = entry["untranslated"]
        rows.append(
            [
                direction,
                "untranslated",
                u["transfer"],
                u["identity"],
                u["dna_change"],
                f"{u['median_translated']:.3g} (target {u['median_target']:.3g})",
                u["moved"],
                u["kept"],
            ]
        )
        for r in sorted(
            entry["rows"],
            key=lambda r: (r["inversion"], r["negative"], tuple(r["guidance_interval"]), r["guidance"], r["strength"]),
        ):
            mark = "".join(
                [
                    " **[truth optimum]**" if r is entry["truth_optimum"] or _same(r, entry["truth_optimum"]) else "",
                    " **[calibrated]**" if _same(r, entry["calibrated"]) else "",
                ]
            )
            rows.append(
                [
                    direction,
                    _setting(r).label() + mark,
                    r["transfer"],
                    r["identity"],
                    r["dna_change"],
                    f"{r['median_translated']:.3g}",
                    r["moved"],
                    r["kept"],
                ]
            )
        lines += [table(header, rows), ""]
        c, o = entry["calibrated"], entry["truth_optimum"]
        lines.append(
            f"{direction}: calibrated choice {_setting(c).label()}"
            f" (transfer {c['transfer']:.3f}, identity {c['identity']:.3f}); ground-truth optimum "
            f"{_setting(o).label()} (transfer "
            f"{o['transfer']:.3f}, identity {o['identity']:.3f}); {entry['seconds']:.0f} s."
        )
        lines.append("")
    lines.append(f"![frontier]({figure.relative_to(figure.parent.parent)})")
    return "\n".join(lines)


def _same(a: dict, b: dict) -> bool:
    return _setting(a) == _setting(b)


def _setting(r: dict) -> cal.Setting:
    return cal.Setting(r["strength"], r["guidance"], r["negative"], r["inversion"], tuple(r["guidance_interval"]))


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = list(results["directions"].items())
    fig, axes = plt.subplots(1, len(directions), figsize=(5.2 * len(directions), 4.2), squeeze=False)
    for ax, (direction, entry) in zip(axes[0], directions):
        groups: dict[cal.Setting, list[dict]] = {}
        for r in entry["rows"]:
            groups.setdefault(_setting({**r, "strength": 1.0}), []).append(r)
        for key, members in groups.items():
            members.sort(key=lambda r: r["strength"])
            label = key.label().split(", ", 1)[1]
            ax.plot([r["identity"] for r in members], [r["transfer"] for r in members], "o-", ms=3, label=label)
        u, c, o = entry["untranslated"], entry["calibrated"], entry["truth_optimum"]
        ax.plot([u["identity"]], [u["transfer"]], "k*", ms=10, label="untranslated")
        ax.plot([o["identity"]], [o["transfer"]], "s", ms=13, mfc="none", mec="green", label="truth optimum")
        ax.plot([c["identity"]], [c["transfer"]], "o", ms=16, mfc="none", mec="red", label="calibrated")
        ax.axvline(IDENTITY_MIN, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("identity (nuclei IoU / segmentation ceiling)")
        ax.set_ylabel("phenotype transfer (ground truth)")
        ax.set_title(f"{results['name']}: {direction} (points: strength)", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument(
        "--data",
        help="held-out folder with ground truth (default: fresh fields with the checkpoint's simulator settings)",
    )
    parser.add_argument("--fields", type=int, default=20, help="fields per direction")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2_000_000, help="first simulator seed (never used in training)")
    parser.add_argument("--cell-diameter", type=float, default=20.0)
    parser.add_argument("--classifier-fields", type=int, default=16)
    parser.add_argument("--classifier-steps", type=int, default=300)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    parser.add_argument("--guidances", type=float, nargs="+", default=[1.0, 2.0, 4.0, 6.0])
    parser.add_argument("--negatives", nargs="+", default=["source", "null"])
    parser.add_argument("--inversions", nargs="+", default=["ddim"])
    parser.add_argument("--intervals", nargs="+", default=["0-1"], help="guidance intervals LOW-HIGH of t/T")
    parser.add_argument("--keep", nargs="*", default=[], help="channels kept as the original's (keep_channels)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--work", type=Path, default=Path("/tmp/frontier"))
    parser.add_argument("--collect", action="store_true", help="only write the docs from --work")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / f"{args.name}.json"
    if args.collect:
        results = json.loads(saved.read_text())
        for entry in results["directions"].values():  # the choice under the current rule (core/calibrate.py)
            if "kept_control" in entry["rows"][0]:  # runs before the controls were swept keep their old choice
                entry["calibrated"] = _calibrated(entry["rows"], ["DNA"], entry.get("default"))
    else:
        results = run(args)
        saved.write_text(json.dumps(results, indent=1, default=float))
    figure = Path(__file__).resolve().parent.parent / "docs" / "images" / f"frontier_{args.name}.png"
    if not args.no_write:
        plot(results, figure)
    text = markdown(results, args, figure)
    print(text)
    if not args.no_write:
        print(f"written to {write_section(f'frontier_{args.name}', text)}")


if __name__ == "__main__":
    main()
