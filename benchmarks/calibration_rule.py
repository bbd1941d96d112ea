"""Does `phendiff calibrate`'s choice move the phenotype? Its rule against the ground truth, on several models.

    python benchmarks/calibration_rule.py --work /tmp/calrule --cases semireal_1000 demo golgi_1200 ...
    python benchmarks/calibration_rule.py --work /tmp/calrule --collect      # the docs from what is in --work
    python benchmarks/calibration_rule.py --work /tmp/calval --held-out validation --held-out-seed 3 \
        --demo-seed 3000000                                                  # a further held-out set, its own section

The cases' data and models (all `phendiff train --preset tiny --batch-size 8 --image-size 48 --seed 0 --steps N`):
    python benchmarks/semireal.py --out /tmp/semireal                         # then models model_1000, model_250
    phendiff simulate /tmp/sim/P/train --phenotype P --n-per-class 100 --size 64 --cell-diameter 20 --seed 0
    phendiff simulate /tmp/sim/P/held_out --phenotype P --n-per-class 20 --size 64 --cell-diameter 20 --seed 1
    (P: golgi, actin -> model_1200; translocation -> model_250); translocation_1984 is finetune_claim.py's pixel_100.

Each case is a checkpoint, a held-out folder with ground truth and a calibration folder of real images of both
conditions (no truth used; the folder a user would give calibrate: here the training folder). For each direction,
calibrate's default grid (core/calibrate.py STRENGTHS x GUIDANCES, source as the negative) and the source -> source
controls translate the held-out source fields; each setting is scored
- with the ground truth: transfer (share of cells whose true phenotype moved to the target) and identity (nuclei IoU
  with the true nuclei over the segmentation's own ceiling), as translation_frontier.py does;
- without it, as calibrate scores it (its classifier and real target cells from the calibration folder).
Compared: the truth-best setting (highest transfer with identity >= 0.9), the project default (s 0.3, w 4), the
previous rule (most classifier P(target) among settings keeping nuclei IoU >= 0.84, within 0.02 the one keeping
most) and the current rule (core/calibrate.py `choose`). Results are cached per case and direction in --work.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core import calibrate as cal
from napari_phendiff.core import cells as cellmeasure
from napari_phendiff.core.calibration_rule import DEFAULT_MARGIN
from napari_phendiff.core.dataset import load_folder
from napari_phendiff.core.features import train_classifier
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.options import TranslateOptions
from napari_phendiff.core.simulate import simulate_dataset

from report import hardware, save_figure, table, write_section
from translation_frontier import (
    IDENTITY_MIN,
    folder_sets,
    score_rows,
    simulated_sets,
    sweep_with_controls,
    truth_optimum,
)

DEFAULT = (TranslateOptions().strength, TranslateOptions().guidance)  # the project default
PROJECT_DEFAULT = cal.Setting(*DEFAULT)  # what every case's checkpoint translates with uncalibrated
OLD_KEEP_MIN, OLD_TIE = 0.84, 0.02  # the rule calibrate used before (kept >= 0.84, most classifier P(target))
# name: (checkpoint, held-out folder with truth or None for fresh fields of the checkpoint's simulator,
#        calibration folder, what the model is)
CASES = {
    "semireal_1000": (
        "{semireal}/model_1000",
        "{semireal}/{held_out}",
        "{semireal}/train",
        "real nuclei + painted translocation, tiny, 1000 steps",
    ),
    "semireal_250": (
        "{semireal}/model_250",
        "{semireal}/{held_out}",
        "{semireal}/train",
        "real nuclei + painted translocation, tiny, 250 steps (undertrained)",
    ),
    "demo": ("demo", None, "{sim}/translocation_96/train", "translocation, the shipped demo model"),
    "translocation_250": (
        "{sim}/translocation/model_250",
        "{sim}/translocation/{held_out}",
        "{sim}/translocation/train",
        "translocation, tiny, 250 steps (undertrained)",
    ),
    "translocation_1984": (
        "{claim}/pixel_100",
        "{claim}/{held_out}",
        "{claim}/train_100",
        "translocation, tiny, 1984 steps (finetune_claim.py's PhenDiff from scratch)",
    ),
    "golgi_1200": ("{sim}/golgi/model_1200", "{sim}/golgi/{held_out}", "{sim}/golgi/train", "golgi, tiny, 1200 steps"),
    "actin_1200": ("{sim}/actin/model_1200", "{sim}/actin/{held_out}", "{sim}/actin/train", "actin, tiny, 1200 steps"),
}


def old_rule(rows: list[dict]) -> dict:
    feasible = [r for r in rows if r["kept"] >= OLD_KEEP_MIN and r["dna_change"] <= cal.UNAFFECTED_MAX]
    if not feasible:
        return max(rows, key=lambda r: r["kept"])
    best = max(r["moved"] for r in feasible)
    return max([r for r in feasible if r["moved"] >= best - OLD_TIE], key=lambda r: (r["kept"], -r["strength"]))


def unaffected(channel_names: list[str]) -> list[str]:
    """What calibrate checks by default: the nuclear channel."""
    return [channel_names[cellmeasure.nuclear_channel(channel_names)]]


def resolve(text: str, args) -> str:
    return text.format(semireal=args.semireal, sim=args.sim, claim=args.claim, held_out=args.held_out)


def run_case(name: str, args) -> None:
    checkpoint, held_out, calibration, _ = (resolve(t, args) if t else None for t in CASES[name])
    model = load_checkpoint(checkpoint, device="cpu")
    if held_out:
        phenotype, sets = folder_sets(Path(held_out), args.fields)
    else:
        phenotype, sets = simulated_sets(model, args.fields, args.demo_seed)
    if not Path(calibration).exists():  # the demo's: its own simulator settings, seeds it never saw
        sim = model.manifest["metadata"]["simulator"]
        simulate_dataset(calibration, sim["phenotype"], 100, sim["size"], seed=7, cell_diameter=sim["cell_diameter"])
    real = load_folder(calibration)
    classifier = train_classifier(real.images, real.labels, real.conditions, steps=400, seed=0)
    settings = cal.grid()
    base = TranslateOptions(steps=args.steps, batch_size=args.batch).validate()
    conditions = list(sets)
    for source, target in ((conditions[0], conditions[1]), (conditions[1], conditions[0])):
        if cal.uncalibrated_setting(model.manifest, source, target) != PROJECT_DEFAULT:  # what `rule` weighs against
            raise SystemExit(f"{name}: its setting without calibration is not the project default; `rule` assumes it")
        saved = args.work / f"{name}_{source}-to-{target}.json"
        cache = saved.with_suffix(".npz")  # the translations: the scores can be recomputed without translating
        if saved.is_file() and not args.rescore:
            continue
        start = time.perf_counter()
        if cache.is_file():
            stored = np.load(cache)
            out = {pair: stored[_cache_key(pair)] for pair in cal.with_controls(settings, source, target)}
            seconds = json.loads(saved.read_text())["seconds"] if saved.is_file() else float("nan")
        else:
            out = sweep_with_controls(
                model,
                sets[source]["images"],
                source,
                target,
                settings,
                base,
                progress=lambda d, t: print(f"\r{name} {source}->{target} {d}/{t} network calls", end="", flush=True),
            )
            seconds = time.perf_counter() - start
            np.savez_compressed(cache, **{_cache_key(pair): v for pair, v in out.items()})
        targets = [im for im, label in zip(real.images, real.labels) if real.conditions[label] == target]
        rows = score_rows(phenotype, model, sets, source, target, settings, out, classifier, targets)
        choice = rule(rows, unaffected(model.channel_names))
        result = {
            "case": name,
            "phenotype": phenotype,
            "source": source,
            "target": target,
            "unaffected": unaffected(model.channel_names),
            "classifier_accuracy": classifier.accuracy,
            "real_target_moved": cal.target_probability(classifier, targets, target),
            "fields": len(sets[source]["images"]),
            "seconds": seconds,
            "hardware": hardware(),
            "status": choice.status,
            "reason": choice.reason,
            "rows": rows,
        }
        saved.write_text(json.dumps(result, indent=1, default=float))
        print(f"\n{name} {source}->{target}: {choice.status}: {choice.reason} ({seconds:.0f} s)", flush=True)


def _cache_key(pair: tuple[str, cal.Setting]) -> str:
    condition, s = pair
    return f"{condition}|{s.strength:g}|{s.guidance:g}|{s.negative}|{s.inversion}"


def _loss_at_identity(rows: list[dict]) -> list:
    near = [r["kept_control"] - r["kept"] for r in rows if abs(r["identity"] - IDENTITY_MIN) <= 0.03]
    return [len(near), float(np.median(near)) if near else "-"]


def _key(r: dict) -> tuple:
    return (r["strength"], r["guidance"])


def _label(r: dict) -> str:
    return f"s {r['strength']:g}, w {r['guidance']:g}"


NOTHING_TO_FIND = 0.2  # truth-best transfer at or below this: no setting moves the phenotype and keeps the cells


def cell(x: dict) -> str:
    near = IDENTITY_MIN - 0.005 <= x["identity"] < IDENTITY_MIN  # would print as the bar while under it
    return (
        f"{_label(x)}: {x['transfer']:.2f} / {x['identity']:.3f}"
        if near
        else f"{_label(x)}: {x['transfer']:.2f} / {x['identity']:.2f}"
    )


# The rule before the cells were counted (reached from the medians' way and the classifier): its tolerance and its
# tie window (settings within it of the furthest tied; the one keeping the nuclei best won).
BEFORE_TOLERANCE = 0.16
BEFORE_TIE = 0.05
BEFORE_WITNESSES = "mean of the medians' way and the classifier (the rule before's witnesses)"


def rule(rows: list[dict], unaffected: list[str], *bars, **named):
    """calibrate's choice on a case's sweep (core/calibration_rule.py `choose`, with the case's uncalibrated setting,
    the project default, as calibrate passes it); `bars` and `named` as `choose` takes them."""
    return cal.choose(rows, unaffected, *bars, default=PROJECT_DEFAULT, **named)


def before_rule(r: dict):
    """calibrate's choice before it counted cells: reached = the mean of the medians' way and the classifier."""
    return cal.choose(
        _reweighed(r["rows"], REACHED[BEFORE_WITNESSES]), r["unaffected"], BEFORE_TOLERANCE, tie=BEFORE_TIE
    )


def default_row(rows: list[dict]) -> dict:
    """The sweep's row of the project default (DEFAULT), what each case translates with uncalibrated."""
    return next(x for x in rows if _key(x) == DEFAULT)


def verdict(rows: list[dict], choice) -> tuple[str, bool]:
    """What calibrate's choice shows and whether it met the target: within 0.05 of the truth-best transfer at
    identity >= 0.9 and no less transfer than the project default where that keeps identity; or, where the truth
    says no setting moves more than NOTHING_TO_FIND of the cells at identity >= 0.9, storing nothing."""
    best = truth_optimum(rows)
    default = default_row(rows)
    if choice.row is None:
        return (
            f"not calibrated ({choice.status}; closest {cell(choice.best)})",
            best["transfer"] <= NOTHING_TO_FIND or best["identity"] < IDENTITY_MIN,
        )
    new = choice.row
    return cell(new), (
        new["transfer"] >= best["transfer"] - 0.05
        and new["identity"] >= IDENTITY_MIN
        and (new["transfer"] >= default["transfer"] or default["identity"] < IDENTITY_MIN)
    )


def setting_met(rows: list[dict], row: dict) -> bool:
    """A fixed setting (the project default, the previous rule's choice) judged as `verdict` judges calibrate's."""
    best = truth_optimum(rows)
    return row["transfer"] >= best["transfer"] - 0.05 and row["identity"] >= IDENTITY_MIN


def tolerance_sweep(results: list[dict]) -> str:
    """How many directions meet the target for each pair of the rule's bars (KEPT_TOLERANCE, REACHED_MIN),
    simulator and real-nuclei cases apart."""
    rows = []
    for reached_min in (0.25, 0.5, 0.75):
        for tolerance in (0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25):
            used = (tolerance, reached_min) == (cal.KEPT_TOLERANCE, cal.REACHED_MIN)
            rows.append(
                [
                    f"{tolerance:g}",
                    f"{reached_min:g}" + (" (used)" if used else ""),
                    *_met(results, lambda r: rule(r["rows"], r["unaffected"], tolerance, reached_min)),
                ]
            )
    return table(
        [
            "IoU loss allowed beyond the control",
            "reached at least",
            "simulator directions met",
            "real-nuclei directions met",
        ],
        rows,
    )


def _finite_mean(*values: float) -> float:
    kept = [v for v in values if np.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


# How far a row went towards the real target, by each way of weighing the witnesses this benchmark compares
# (witnesses.reached is the one calibrate uses).
REACHED = {
    "cells moved (classifier where no measurement separates the real cells): calibrate's": lambda r: cal.reached(
        r["cells_moved"], r["classifier_reached"]
    ),
    "mean of cells moved and the classifier": lambda r: _finite_mean(
        min(r["cells_moved"], 1.0), r["classifier_reached"]
    ),
    BEFORE_WITNESSES: lambda r: _finite_mean(min(r["measurements_moved"], 1.0), r["classifier_reached"]),
    "the medians' way alone": lambda r: min(r["measurements_moved"], 1.0),
    "the classifier alone": lambda r: r["classifier_reached"],
}


def witness_sweep(results: list[dict]) -> str:
    """How many directions meet the target when calibrate's rule weighs the witnesses each way of REACHED."""
    lines = [
        [name, *_met(results, lambda r: rule(_reweighed(r["rows"], how), r["unaffected"]))]
        for name, how in REACHED.items()
    ]
    return table(["reached, from", "simulator directions met", "real-nuclei directions met"], lines)


def tie_sweep(results: list[dict]) -> str:
    """How many directions meet the target when settings within a window of the furthest count as tied (the one
    keeping the nuclei best of those wins), at the rule's bars."""
    lines = [
        [
            f"{tie:g}" + (" (used)" if tie == 0 else ""),
            *_met(results, lambda r: rule(r["rows"], r["unaffected"], tie=tie)),
        ]
        for tie in (0.0, 0.02, 0.05, 0.1)
    ]
    return table(["tie window (share of the way)", "simulator directions met", "real-nuclei directions met"], lines)


def _met(results: list[dict], choice_of) -> list[str]:
    """'met / directions' for the simulator's cases and the real-nuclei ones, each direction's choice by
    `choice_of(result)`."""
    groups = (
        [r for r in results if not r["case"].startswith("semireal")],
        [r for r in results if r["case"].startswith("semireal")],
    )
    return [f"{sum(verdict(r['rows'], choice_of(r))[1] for r in members)} / {len(members)}" for members in groups]


def _reweighed(rows: list[dict], how) -> list[dict]:
    """The sweep's rows with `reached` from `how` (one of REACHED)."""
    return [{**x, "reached": how(x)} for x in rows]


def load_results(work: Path) -> list[dict]:
    """The cached directions of --work, in CASES' order."""
    results = [json.loads(p.read_text()) for p in sorted(work.glob("*-to-*.json"))]
    order = {name: i for i, name in enumerate(CASES)}
    return sorted(results, key=lambda r: (order.get(r["case"], 99), r["source"]))


HEADER = [
    "case",
    "direction",
    "truth-best",
    "project default",
    "previous rule",
    "rule before (medians + classifier)",
    "calibrate (this rule)",
    "target met",
]


def compare(results: list[dict]) -> tuple[list[list[str]], int, int, list[tuple]]:
    """Per direction a line of HEADER, the directions met by this rule and by the rule before, and what `plot`
    draws."""
    lines, met, met_before, plotted = [], 0, 0, []
    for r in results:
        rows = r["rows"]
        best, old = truth_optimum(rows), old_rule(rows)
        default = default_row(rows)
        choice = rule(rows, r["unaffected"])
        shown, ok = verdict(rows, choice)
        before_shown, before_ok = verdict(rows, before_rule(r))
        met += ok
        met_before += before_ok
        lines.append(
            [
                r["case"],
                f"{r['source']} -> {r['target']}",
                cell(best),
                cell(default),
                cell(old),
                before_shown,
                shown,
                "yes" if ok else "no",
            ]
        )
        plotted.append((r, best, default, old, choice))
    return lines, met, met_before, plotted


def fixed_met(results: list[dict]) -> tuple[int, int]:
    """Directions met by the previous rule's choice and by the project default (`setting_met`)."""
    return (
        sum(setting_met(r["rows"], old_rule(r["rows"])) for r in results),
        sum(setting_met(r["rows"], default_row(r["rows"])) for r in results),
    )


def collect(args) -> str:
    results = load_results(args.work)
    if args.held_out != "held_out":
        return validation(results, args)
    lines, met, met_before, plotted = compare(results)
    figure = Path(__file__).resolve().parent.parent / "docs" / "images" / "calibration_rule.png"
    if not args.no_write:
        plot(plotted, figure)
    for r, *_, choice in plotted[:0] if args.no_write else plotted:  # what `phendiff calibrate` draws, for the docs
        if (r["case"], r["source"]) == ("demo", "untreated"):
            cal.frontier_figure(
                figure.with_name("calibrate_frontier_demo.png"),
                r["rows"],
                choice,
                {"reached": 0.0},
                f"demo: {r['source']} -> {r['target']}",
                PROJECT_DEFAULT,
            )
    accuracy = ", ".join(sorted({f"{r['case']} {r['classifier_accuracy']:.2f}" for r in results}))
    text = [
        "## Does calibrate's choice move the phenotype? (`benchmarks/calibration_rule.py`)",
        "",
        f"Each cell: setting, then ground-truth transfer / identity (identity = nuclei IoU with the true nuclei over "
        f"the segmentation's own ceiling) on held-out fields ({results[0]['fields'] if results else 0} per direction, "
        f"{args.steps}-step DDIM grid). *Truth-best*: the highest transfer with identity >= {IDENTITY_MIN}. *Project "
        f"default*: s {DEFAULT[0]:g}, w {DEFAULT[1]:g} against the source. *Previous rule*: the most classifier "
        f"P(target) among settings keeping nuclei IoU >= {OLD_KEEP_MIN}. *This rule*: core/calibrate.py `choose` "
        f"(move first: the furthest towards the real target by the share of cells moved, witnesses.reached; keep: within "
        f"{cal.KEPT_TOLERANCE:g} of the source -> source control; the project default, each checkpoint's setting "
        f"without calibration, is chosen unless another that keeps the nuclei went {DEFAULT_MARGIN:g} further of the way; "
        f"other margins: calibration_witnesses below). Calibrate's scores use no truth: its classifier "
        f"and real target cells come from the case's training folder. *Target met*: within 0.05 of the truth-best "
        f"transfer at identity >= {IDENTITY_MIN}, and no less transfer than the project default where the default "
        f"keeps identity >= {IDENTITY_MIN}. Classifier held-out accuracy: {accuracy}. Hardware: "
        f"{results[0]['hardware'] if results else hardware()}.",
        "",
        "Cases: " + "; ".join(f"`{name}` {CASES[name][3]}" for name in dict.fromkeys(r["case"] for r in results)) + ".",
        "",
        table(HEADER, lines),
        "",
        f"Target met in {met} of {len(results)} directions by this rule, in {met_before} by the rule before (reached "
        f"from the medians' way and the classifier, tolerance {BEFORE_TOLERANCE:g}, tie window {BEFORE_TIE:g}); by the "
        f"previous rule's choice in {fixed_met(results)[0]}, by the project default in {fixed_met(results)[1]} "
        "(a fixed setting meets it when it is within 0.05 of the truth-best transfer at identity >= "
        f"{IDENTITY_MIN}; it cannot decline).",
        "",
    ]
    for r, *_, choice in plotted:
        text.append(f"- {r['case']} {r['source']} -> {r['target']}: {choice.reason}")
    simulator = [_loss_at_identity(r["rows"])[1] for r in results if not r["case"].startswith("semireal")]
    simulator = [v for v in simulator if v != "-"]
    text += [
        "",
        "What the identity bar of the truth (0.9 of the segmentation's ceiling) is in calibrate's no-truth "
        "terms: the nuclei IoU lost beyond the source -> source control by the settings whose true identity was "
        f"{IDENTITY_MIN - 0.03:g}-{IDENTITY_MIN + 0.03:g} (median; KEPT_TOLERANCE is "
        f"{cal.KEPT_TOLERANCE:g}):",
        "",
        table(
            ["case", "direction", "settings near identity 0.9", "IoU lost beyond the control (median)"],
            [[r["case"], f"{r['source']} -> {r['target']}", *_loss_at_identity(r["rows"])] for r in results],
        ),
        "",
        f"Median over the simulator's directions: {np.median(simulator) if simulator else float('nan'):.3f}. "
        "The rule's two bars chosen on the simulator's cases (the real-nuclei ones only check them):",
        "",
        tolerance_sweep(results),
        "",
        "The witnesses weighed other ways (the bars as above):",
        "",
        witness_sweep(results),
        "",
        "Settings near the furthest counted as tied, the one keeping the nuclei best of those taken (the bars as above):",
        "",
        tie_sweep(results),
    ]
    text += ["", f"![calibration rule]({figure.relative_to(figure.parent.parent)})"]
    return "\n".join(text)


# What each further held-out set was used for: its section's words (a set not named here was used for nothing).
CHOSEN_ON = {
    "validation": "no bar of the rule was chosen on but the default's margin (DEFAULT_MARGIN, from how a setting's "
    "lead over the default changed between this set and the first)",
}


def validation(results: list[dict], args) -> str:
    """The comparison on a further held-out set (`--held-out`): fields the rule's bars were not chosen on."""
    lines, met, met_before, plotted = compare(results)
    name = args.held_out
    figure = Path(__file__).resolve().parent.parent / "docs" / "images" / f"calibration_rule_{name}.png"
    if not args.no_write:
        plot(plotted, figure)
    old, default = fixed_met(results)
    return "\n".join(
        [
            f"## calibrate's choice on another held-out set (`benchmarks/calibration_rule.py --held-out {name}`)",
            "",
            f"The same models, calibration folders and grid as above, on other held-out fields ("
            f"{results[0]['fields'] if results else 0} per direction: `phendiff simulate ... --seed "
            f"{args.held_out_seed}`, `semireal.py --held-out-only {name} --seed {args.held_out_seed}`, the demo's "
            f"fresh fields from seed {args.demo_seed}) that "
            + CHOSEN_ON.get(name, "no bar of the rule was chosen on")
            + ". Hardware: "
            f"{results[0]['hardware'] if results else hardware()}.",
            "",
            table(HEADER, lines),
            "",
            f"Target met in {met} of {len(results)} directions by this rule, in {met_before} by the rule before, "
            f"by the previous rule's choice in {old}, by the project default in {default}.",
            "",
            *[f"- {r['case']} {r['source']} -> {r['target']}: {choice.reason}" for r, *_, choice in plotted],
            "",
            "The rule's bars on these fields:",
            "",
            tolerance_sweep(results),
            "",
            f"![calibration rule, held-out set {name}]({figure.relative_to(figure.parent.parent)})",
        ]
    )


def plot(plotted: list, path: Path) -> Path | None:
    if not plotted:
        return None
    import matplotlib.pyplot as plt

    cols = min(4, len(plotted))
    n_rows = -(-len(plotted) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.6 * n_rows), squeeze=False)
    for ax, (r, best, default, old, choice) in zip(axes.ravel(), plotted):
        rows = sorted(r["rows"], key=lambda x: (x["guidance"], x["strength"]))
        for w in sorted({x["guidance"] for x in rows}):
            members = [x for x in rows if x["guidance"] == w]
            ax.plot(
                [x["identity"] for x in members], [x["transfer"] for x in members], "o-", ms=2, lw=0.8, label=f"w {w:g}"
            )
        marks = [
            (best, "s", "green", "truth-best"),
            (default, "D", "grey", "default"),
            (old, "^", "blue", "previous"),
            (choice.best, "o", "red" if choice.row is not None else "orange", "this rule"),
        ]
        for x, marker, colour, label in marks:
            ax.plot([x["identity"]], [x["transfer"]], marker, ms=11, mfc="none", mec=colour, label=label)
        ax.axvline(IDENTITY_MIN, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{r['case']}: {r['source']} -> {r['target']}", fontsize=8)
        ax.set_xlabel("identity (truth)", fontsize=7)
        ax.set_ylabel("transfer (truth)", fontsize=7)
    for ax in axes.ravel()[len(plotted) :]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=6)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/calrule"))
    parser.add_argument("--semireal", default="/tmp/semireal", help="benchmarks/semireal.py's --out, with models")
    parser.add_argument("--sim", default="/tmp/sim", help="simulated data sets and models (see docs/benchmarks.md)")
    parser.add_argument("--claim", default="/tmp/claim", help="benchmarks/finetune_claim.py's --work")
    parser.add_argument("--fields", type=int, default=8, help="held-out fields per direction")
    parser.add_argument(
        "--held-out",
        default="held_out",
        help="the held-out folders' name in each case's data set (another set checks a choice made on the first)",
    )
    parser.add_argument("--demo-seed", type=int, default=2_000_000, help="first seed of the demo's fresh fields")
    parser.add_argument(
        "--held-out-seed", type=int, default=1, help="the seed the held-out folders were simulated with (for the docs)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--collect", action="store_true", help="only write the docs from --work")
    parser.add_argument("--rescore", action="store_true", help="recompute the scores from the cached translations")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        for name in args.cases:
            if not Path(resolve(CASES[name][0], args)).exists() and CASES[name][0] != "demo":
                print(f"{name}: no checkpoint yet, skipped", flush=True)
                continue
            run_case(name, args)
    text = collect(args)
    print(text)
    if not args.no_write:
        section = "calibration_rule" if args.held_out == "held_out" else f"calibration_rule_{args.held_out}"
        print(f"written to {write_section(section, text)}")


if __name__ == "__main__":
    main()
