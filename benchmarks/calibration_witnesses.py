"""Could calibrate's rule do better with other no-truth witnesses, or more fields? Read from calibration_rule.py's
caches (its translations and scores), on each held-out set it was run on:

    python benchmarks/calibration_rule.py --work /tmp/calrule --fields 16                      # first set
    python benchmarks/calibration_rule.py --work /tmp/calval --fields 16 --held-out validation --held-out-seed 3 \
        --demo-seed 3000000                                                                 # second set
    python benchmarks/calibration_rule.py --work /tmp/caltest --fields 16 --held-out test --held-out-seed 4 \
        --demo-seed 4000000                                                                 # third set
    python benchmarks/calibration_witnesses.py --set /tmp/calrule:held_out:2000000 --set /tmp/calval:validation:3000000 \
        --set /tmp/caltest:test:4000000

(the same --sim, --semireal, --claim as calibration_rule.py). Compared, each with calibrate's rule (core/
calibration_rule.py `choose`) and judged by calibration_rule.py's `verdict` against the truth:
- what "kept the nuclei" is measured with: calibrate's foreground IoU of the nuclei segmented on the original and on
  the translation, beside the Dice overlap, the overlap within 1 px, the share of nuclei matched at IoU >= 0.5 (F1),
  the same threshold for both images (the original's Otsu), the correlation of the smoothed nuclear channels, and
  the mean of the IoU's loss and the change of the nuclei's area (outlines that jitter count half, nuclei that
  shrink or grow count whole, as the truth's IoU would),
  each against its own source -> source control with a tolerance set the way KEPT_TOLERANCE is (the median, over the
  simulator's directions of the first set, of the loss beyond the control at true identity 0.9);
- how a translated cell is counted as moved: cellstats.target_like (the |d|-weighted majority of the measurements that
  tell the real conditions apart), the strongest measurement alone, the two strongest, and a linear discriminant
  (pooled covariance) of the real cells;
- the tolerance on every set, and the two sets pooled (32 fields per direction);
- a choice carried to other fields: made on one set (or the others pooled), judged on another set's truth, for
  calibrate's rule, the truth-best setting and the project default.
The per-direction measures are cached beside each set's translations (WORK/witnesses/).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from skimage import filters

from napari_phendiff.core import calibrate as cal
from napari_phendiff.core import cells as cellmeasure
from napari_phendiff.core.calibration_bars import PARTIAL_MIN, partial_move
from napari_phendiff.core.calibration_rule import DEFAULT_MARGIN, Choice
from napari_phendiff.core.cellstats import (
    RealCells,
    cell_summary,
    cells_moved,
    on_the_real_scale,
    phenotype_measurements,
    target_like,
)
from napari_phendiff.core.dataset import load_folder
from napari_phendiff.core.models import load_checkpoint

from calibration_rule import (
    CASES,
    DEFAULT,
    NOTHING_TO_FIND,
    _cache_key,
    _key,
    cell,
    default_row,
    load_results,
    resolve,
    rule,
    verdict,
)
from report import table, write_section
from translation_frontier import IDENTITY_MIN, folder_sets, simulated_sets, truth_optimum

KEPT = {  # cache key: what the tables call it
    "iou": "IoU (calibrate's)",
    "dice": "Dice",
    "near": "overlap within 1 px",
    "f1": "nuclei matched (F1)",
    "threshold": "one threshold",
    "correlation": "correlation",
    "size": "IoU loss and area change, averaged",
}
COUNTS = {
    "vote": "majority weighted by effect size (calibrate's)",
    "top1": "strongest measurement",
    "top2": "two strongest",
    "discriminant": "linear discriminant",
}
TOLERANCES = (0.12, 0.13, 0.135, 0.14, 0.145, 0.15, 0.16, 0.17)
MARGINS = (None, 0.0, 0.05, 0.1, 0.15, 0.2)  # how much further than the default a setting must go (None: no default)


def kept_measures(originals: np.ndarray, translated: np.ndarray, nuclear: int) -> dict[str, float]:
    """Each way of KEPT of saying how well the nuclei of `translated` stayed those of `originals`, field means."""
    values: dict[str, list[float]] = {name: [] for name in KEPT}
    for original, translation in zip(originals, translated):
        a_labels = cellmeasure.segment_nuclei(original[nuclear])
        b_labels = cellmeasure.segment_nuclei(translation[nuclear])
        a, b = a_labels > 0, b_labels > 0
        total = max(int(a.sum() + b.sum()), 1)
        values["iou"].append(cellmeasure.mask_iou(a_labels, b_labels))
        # jitter of the outline half, shrinking or growing whole: what the truth's IoU counts of each
        resized = abs(float(b.sum()) / max(int(a.sum()), 1) - 1)
        values["size"].append(1 - (1 - values["iou"][-1] + resized) / 2)
        values["dice"].append(2 * float((a & b).sum()) / total)
        near = float((b & ndi.binary_dilation(a)).sum() + (a & ndi.binary_dilation(b)).sum())
        values["near"].append(near / total)
        values["f1"].append(_matched_f1(a_labels, b_labels))
        smooth_a = filters.gaussian(original[nuclear].astype(np.float64), 1.0)
        smooth_b = filters.gaussian(translation[nuclear].astype(np.float64), 1.0)
        level = filters.threshold_otsu(smooth_a)
        fixed_a, fixed_b = ndi.binary_fill_holes(smooth_a > level), ndi.binary_fill_holes(smooth_b > level)
        values["threshold"].append(float((fixed_a & fixed_b).sum()) / max(int((fixed_a | fixed_b).sum()), 1))
        values["correlation"].append(float(np.corrcoef(smooth_a.ravel(), smooth_b.ravel())[0, 1]))
    return {name: float(np.mean(v)) for name, v in values.items()}


def _matched_f1(a: np.ndarray, b: np.ndarray) -> float:
    """F1 of the nuclei of `a` matched by a nucleus of `b` at IoU >= 0.5 (at most one such match each)."""
    matched = 0
    for label in np.unique(a[a > 0]):
        inside = a == label
        for other in np.unique(b[inside]):
            if other and (inside & (b == other)).sum() / (inside | (b == other)).sum() >= 0.5:
                matched += 1
                break
    count = len(np.unique(a[a > 0])) + len(np.unique(b[b > 0]))
    return 2 * matched / count if count else 1.0


def _matrix(rows: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[r[n] for n in names] for r in rows], np.float64).reshape(-1, len(names))


def _share_nearer(projected: np.ndarray, source: float, target: float) -> float:
    return float(np.mean(np.abs(projected - target) < np.abs(projected - source))) if len(projected) else np.nan


def counted(real: list[dict], translated: list[dict], ignored: tuple[str, ...]) -> dict[str, float]:
    """Share of translated cells moved, from the real source cells (0) to the real target cells (1), by each way of
    COUNTS; NaN where, as in cellstats.cells_moved, the real cells are too few or too alike."""
    rows = real + translated
    summary = cell_summary(rows)
    used = phenotype_measurements(summary, ignored)
    if not used:
        return dict.fromkeys(COUNTS, np.nan)
    names = [u["measurement"] for u in used]
    order = np.argsort([-abs(u["effect_target_vs_source"]) for u in used])
    groups = ("real source", "real target", "translated")
    out = {"vote": cells_moved(rows, summary, ignored)}  # calibrate's own count
    for name, top in (("top1", 1), ("top2", 2)):
        chosen = [used[i] for i in order[:top]]
        out[name] = _scaled(*(target_like(rows, chosen, g) for g in groups))
    matrices = [_matrix([r for r in rows if r["group"] == g], names) for g in groups]
    matrices = [m[np.all(np.isfinite(m), axis=1)] for m in matrices]
    axis = _discriminant(matrices[0], matrices[1])
    projected = [m @ axis for m in matrices]
    centre_s, centre_t = np.median(projected[0]), np.median(projected[1])
    out["discriminant"] = _scaled(*((_share_nearer(p, centre_s, centre_t), len(p)) for p in projected))
    return out


def _scaled(source: tuple[float, int], target: tuple[float, int], translated: tuple[float, int]) -> float:
    return on_the_real_scale(source, target, translated[0])


def _discriminant(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Fisher's linear discriminant of standardised measurements (pooled covariance, lightly regularised)."""
    scale = np.std(np.vstack([source, target]), axis=0)
    scale[scale == 0] = 1.0
    s, t = source / scale, target / scale
    pooled = 0.5 * (np.atleast_2d(np.cov(s.T)) + np.atleast_2d(np.cov(t.T))) + 1e-3 * np.eye(s.shape[1])
    return np.linalg.solve(pooled, t.mean(0) - s.mean(0)) / scale


def measure_direction(result: dict, work: Path, held_out: str, demo_seed: int, args) -> dict:
    """Per setting of one direction: KEPT for translation and control, COUNTS for the translation (cached)."""
    cache = work / "witnesses" / f"{result['case']}_{result['source']}.pkl"
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    args.held_out = held_out
    checkpoint, held, calibration, _ = (resolve(t, args) if t else None for t in CASES[result["case"]])
    model = load_checkpoint(checkpoint, device="cpu")
    if held:
        _, sets = folder_sets(Path(held), result["fields"])
    else:
        _, sets = simulated_sets(model, result["fields"], demo_seed)
    real = load_folder(calibration)
    targets = [im for im, label in zip(real.images, real.labels) if real.conditions[label] == result["target"]]
    originals = sets[result["source"]]["images"]
    cells = RealCells(originals, targets, model.channel_names)
    ignored = cal.left_out_channels(model.channel_names)
    nuclear = cellmeasure.nuclear_channel(model.channel_names)
    stored = np.load(work / f"{result['case']}_{result['source']}-to-{result['target']}.npz")
    measured = {}
    for row in result["rows"]:
        setting = cal.setting_of(row)
        translated = stored[_cache_key((result["target"], setting))]
        control = stored[_cache_key((result["source"], cal.control_of(setting)))]
        mine = [r for r in cells.rows(translated) if r["group"] == "translated"]
        measured[(row["strength"], row["guidance"])] = {
            "kept": kept_measures(originals, translated, nuclear),
            "control": kept_measures(originals, control, nuclear),
            "counted": counted(cells.real, mine, ignored),
        }
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(pickle.dumps(measured))
    print(f"{work.name}: {result['case']} {result['source']} -> {result['target']} measured", flush=True)
    return measured


def reweighed(result: dict, measured: dict, kept: str | None = None, count: str | None = None) -> list[dict]:
    """The direction's sweep rows with `kept` (one of KEPT) as what kept the nuclei and `count` (one of COUNTS) as
    how far they went; calibrate's own where None."""
    rows = []
    for row in result["rows"]:
        m = measured[(row["strength"], row["guidance"])]
        new = dict(row)
        if kept:
            new["kept"], new["kept_control"] = m["kept"][kept], m["control"][kept]
        if count:
            new["reached"] = cal.reached(m["counted"][count], row["classifier_reached"])
        rows.append(new)
    return rows


def _rows_with(measured: dict, kept: str | None = None, count: str | None = None):
    """A function giving a direction's rows `reweighed` with `kept` and `count`."""
    return lambda result: reweighed(result, measured[_id(result)], kept, count)


def met(results: list[dict], rows_of, tolerance: float | None = None) -> int:
    """Directions where calibrate's rule, on the rows `rows_of(result)`, meets the target (calibration_rule.verdict)."""
    return sum(verdict(r["rows"], rule(rows_of(r), r["unaffected"], tolerance))[1] for r in results)


def loss_at_identity(rows: list[dict]) -> float:
    """Median loss beyond the control of the settings whose true identity is within 0.03 of the bar (NaN if none)."""
    near = [r["kept_control"] - r["kept"] for r in rows if abs(r["identity"] - IDENTITY_MIN) <= 0.03]
    return float(np.median(near)) if near else float("nan")


def kept_table(sets: list[tuple[str, list[dict], dict]]) -> str:
    lines = []
    first_name, first, first_measured = sets[0]
    simulator = [r for r in first if not r["case"].startswith("semireal")]
    for kept in KEPT:
        losses = np.array([loss_at_identity(reweighed(r, first_measured[_id(r)], kept)) for r in simulator])
        tolerance = float(np.nanmedian(losses))
        counts = [met(results, _rows_with(measured, kept=kept), tolerance) for _, results, measured in sets]
        spread = f"{np.nanmin(losses):.3f}-{np.nanmax(losses):.3f}"
        lines.append([KEPT[kept], f"{tolerance:.3f}", spread, *(f"{c} / {len(s[1])}" for c, s in zip(counts, sets))])
    return table(
        [
            "nuclei kept, by",
            f"tolerance (median loss at identity {IDENTITY_MIN}, {first_name})",
            "range over the simulator's directions",
            *(f"met, {name}" for name, _, _ in sets),
        ],
        lines,
    )


DISCOUNTS = (0.0, 0.5, 1.0)  # how much of the nuclear channel's change a nuclei IoU loss is forgiven


def discounted_table(sets: list[tuple[str, list[dict], dict]]) -> str:
    """calibrate's rule with the nuclei's IoU loss less `b` x the nuclear channel's change (a loss that the channel's
    own change explains forgiven), its tolerance set from the first set as KEPT_TOLERANCE is."""
    lines = []
    first_name, first, _ = sets[0]
    simulator = [r for r in first if not r["case"].startswith("semireal")]
    together = pooled(sets)
    for b in DISCOUNTS:
        rows_of = lambda r, b=b: [{**x, "kept": x["kept"] + b * x["dna_change"]} for x in r["rows"]]  # noqa: E731
        losses = np.array([loss_at_identity(rows_of(r)) for r in simulator])
        tolerance = round(float(np.nanmedian(losses)), 3)
        counts = [met(results, rows_of, tolerance) for _, results, _ in sets] + [met(together, rows_of, tolerance)]
        lines.append(
            [
                f"{b:g}",
                f"{tolerance:.3f}",
                f"{np.nanmax(losses) - np.nanmin(losses):.3f}",
                *(f"{c} / {len(together)}" for c in counts),
            ]
        )
    return table(
        [
            "IoU loss less b x the nuclear channel's change, b",
            f"tolerance (median at identity {IDENTITY_MIN}, {first_name})",
            "spread over the simulator's directions",
            *(f"met, {name}" for name, _, _ in sets),
            "met, pooled",
        ],
        lines,
    )


def count_table(sets: list[tuple[str, list[dict], dict]]) -> str:
    lines = []
    for count in COUNTS:
        line = [COUNTS[count]]
        for _, results, measured in sets:
            rows_of = _rows_with(measured, count=count)
            agreement = [_agreement(rows_of(r), r["unaffected"]) for r in results]
            line += [f"{met(results, rows_of)} / {len(results)}", f"{np.nanmean(agreement):.2f}"]
        lines.append(line)
    header = ["a translated cell moved, by"]
    for name, _, _ in sets:
        header += [f"met, {name}", f"rank agreement with the truth, {name}"]
    return table(header, lines)


def _agreement(rows: list[dict], unaffected: list[str]) -> float:
    """Spearman correlation of how far the settings that keep the nuclei went, witnessed and true (NaN if < 4)."""
    kept = [r for r in rows if cal.keeps_cells(r, unaffected) and np.isfinite(r["reached"])]
    if len(kept) < 4:
        return float("nan")
    return float(spearmanr([r["reached"] for r in kept], [r["transfer"] for r in kept]).statistic)


POOLED = ("transfer", "identity", "kept", "kept_control", "reached", "cells_moved", "classifier_reached")


def pooled(sets: list[tuple[str, list[dict], dict]]) -> list[dict]:
    """Each direction with its scores averaged over the sets (equal fields each): one sweep of all their fields."""
    by_direction = [{_id(r): r for r in results} for _, results, _ in sets]
    out = []
    for key, first in by_direction[0].items():
        members = [d[key] for d in by_direction if key in d]
        rows = [
            {**row, **{k: float(np.mean([m["rows"][i][k] for m in members])) for k in POOLED}}
            for i, row in enumerate(first["rows"])
        ]
        out.append({**first, "rows": rows, "fields": sum(m["fields"] for m in members)})
    return out


def margin_table(sets: list[tuple[str, list[dict], dict]], together: list[dict]) -> str:
    """Directions met on each set and pooled when the project default is chosen unless another setting went further
    by each of MARGINS, and at DEFAULT_MARGIN when a setting as far that kept the nuclei better replaces it."""
    ways = {"no default weighed (the furthest wins)": lambda r: cal.choose(r["rows"], r["unaffected"])}
    for margin in MARGINS[1:]:
        label = f"{margin:g}" + (" (used)" if margin == DEFAULT_MARGIN else "")
        ways[label] = lambda r, m=margin: rule(r["rows"], r["unaffected"], margin=m)
    ways[f"{DEFAULT_MARGIN:g}, but a setting as far that kept the nuclei better replaces the default"] = kept_better
    lines = [
        [label, *(f"{sum(verdict(r['rows'], way(r))[1] for r in results)} / {len(results)}" for results in groups)]
        for label, way in ways.items()
        for groups in [[*(s[1] for s in sets), together]]
    ]
    return table(["further than the default by", *(f"met, {n}" for n, _, _ in sets), "met, pooled"], lines)


def kept_better(result: dict):
    """calibrate's choice, unless it is the default and a setting at least as far kept the nuclei better (then the
    furthest of those, the best kept of them)."""
    choice = rule(result["rows"], result["unaffected"])
    if choice.row is None or _key(choice.row) != DEFAULT:
        return choice
    lost = lambda r: r["kept_control"] - r["kept"]  # noqa: E731
    better = [
        r
        for r in result["rows"]
        if cal.keeps_cells(r, result["unaffected"])
        and min(r["reached"], 1.0) >= min(choice.row["reached"], 1.0)
        and lost(r) < lost(choice.row)
    ]
    if not better:
        return choice
    row = max(better, key=lambda r: (min(r["reached"], 1.0), -lost(r)))
    return Choice(row, "calibrated", "", row)


def carried(choice: Choice, judged: dict) -> Choice:
    """A choice made on one set's fields as it translates another's (`judged`, the same direction): its setting's row
    there, as calibrate's stored choice translates a user's other images."""
    same = {_key(x): x for x in judged["rows"]}
    if choice.row is None:
        return Choice(None, choice.status, "", same[_key(choice.best)])
    return Choice(same[_key(choice.row)], "calibrated", "", None)


def worse_than_default(rows: list[dict], choice: Choice) -> bool:
    """What the user translates with after the choice (the stored setting, else the default as it was) moved more
    than 0.05 less of the cells than the project default, or lost identity, where the default kept it."""
    default = default_row(rows)
    used = choice.row or default
    return default["identity"] >= IDENTITY_MIN and (
        used["identity"] < IDENTITY_MIN or used["transfer"] < default["transfer"] - 0.05
    )


CARRIED = {  # what chooses, from one direction's sweep: a Choice
    "calibrate's rule (no truth)": lambda r: rule(r["rows"], r["unaffected"]),
    "the truth-best setting (truth)": lambda r: truth_choice(r["rows"]),
    "the project default": lambda r: Choice(default_row(r["rows"]), "calibrated", "", None),
}


def truth_choice(rows: list[dict]) -> Choice:
    """What a rule that saw the truth would choose: the truth-best setting, or nothing where it moved at most
    NOTHING_TO_FIND of the cells or kept no identity (where `verdict` counts storing nothing as right)."""
    best = truth_optimum(rows)
    if best["transfer"] <= NOTHING_TO_FIND or best["identity"] < IDENTITY_MIN:
        return Choice(None, "not moved", "", best)
    return Choice(best, "calibrated", "", best)


def carried_table(sets: list[tuple[str, list[dict], dict]]) -> str:
    """Directions met on each set by a choice made on its own fields (as the tables above judge calibrate's), on
    another set's, or on the others pooled."""
    lines = []
    for b, (judged_name, judged, _) in enumerate(sets):
        others = [s for a, s in enumerate(sets) if a != b]
        sources = [(f"{judged_name} (the same fields)", judged), *((name, results) for name, results, _ in others)]
        if len(others) > 1:
            sources.append((" and ".join(name for name, _, _ in others) + ", pooled", pooled(others)))
        for chosen_name, chosen in sources:
            made_on = {_id(r): r for r in chosen}  # each direction's choice judged on the same direction's truth
            choices = {label: [carried(way(made_on[_id(j)]), j) for j in judged] for label, way in CARRIED.items()}
            mine = choices[next(iter(CARRIED))]
            lines.append(
                [
                    judged_name,
                    chosen_name,
                    *(
                        f"{sum(verdict(j['rows'], c)[1] for c, j in zip(made, judged))} / {len(judged)}"
                        for made in choices.values()
                    ),
                    f"{sum(worse_than_default(j['rows'], c) for c, j in zip(mine, judged))} / {len(judged)}",
                ]
            )
    head = ["judged on", "chosen on", *(f"met, {label}" for label in CARRIED), "calibrate's worse than the default"]
    return table(head, lines)


def offered(choice: Choice) -> float | None:
    """The partial move calibrate offers as a bar where `choice` declined (calibration_bars.partial_move), else None."""
    return partial_move({**choice.best, "status": choice.status})


def offer_taken(result: dict) -> Choice:
    """calibrate's rule, and where it declined and offered a partial move as a bar, the rule again at that bar: what a
    user who takes every offer stores."""
    choice = rule(result["rows"], result["unaffected"])
    share = offered(choice)
    return choice if share is None else rule(result["rows"], result["unaffected"], None, share)


USER_BARS = {  # the bars a user may set, as a user might set them: a Choice from one direction's sweep
    f"the rule's own ({cal.REACHED_MIN:g} of the way)": lambda r: rule(r["rows"], r["unaffected"]),
    "its offer taken where it declined": offer_taken,
    f"a quarter of the way asked ({PARTIAL_MIN:g})": lambda r: rule(r["rows"], r["unaffected"], None, PARTIAL_MIN),
}


def user_bars_table(sets: list[tuple[str, list[dict], dict]]) -> str:
    """Directions met and left worse than the default on each set's own fields, at the bars a user may set."""
    lines = []
    for label, way in USER_BARS.items():
        made = [(results, [way(r) for r in results]) for _, results, _ in sets]
        lines.append(
            [
                label,
                *(f"{sum(verdict(r['rows'], c)[1] for r, c in zip(res, cs))} / {len(res)}" for res, cs in made),
                *(f"{sum(worse_than_default(r['rows'], c) for r, c in zip(res, cs))}" for res, cs in made),
            ]
        )
    offers = [sum(offered(rule(r["rows"], r["unaffected"])) is not None for r in res) for _, res, _ in sets]
    lines.append(["offers made (declines with a share of at least a quarter)", *map(str, offers), *("" for _ in sets)])
    head = ["bars", *(f"met, {n}" for n, _, _ in sets), *(f"worse than the default, {n}" for n, _, _ in sets)]
    return table(head, lines)


def difference_spread(sets: list[tuple[str, list[dict], dict]]) -> tuple[float, int]:
    """How much a setting's reached minus the default's (the same fields) changes from the first set to the second:
    the robust standard deviation of one set's difference (median absolute change x 1.4826 / sqrt 2), over the
    settings that kept the nuclei on the first set, and how many there were."""
    second = {_id(r): {_key(x): x for x in r["rows"]} for r in sets[1][1]}
    changes = []
    for r in sets[0][1]:
        first, other = {_key(x): x for x in r["rows"]}, second[_id(r)]
        for key, x in first.items():
            values = (x["reached"], first[DEFAULT]["reached"], other[key]["reached"], other[DEFAULT]["reached"])
            if key == DEFAULT or not np.all(np.isfinite(values)) or not cal.keeps_cells(x, r["unaffected"]):
                continue
            a, b, c, d = (min(v, 1.0) for v in values)
            changes.append(abs((a - b) - (c - d)))
    return float(np.median(changes) * 1.4826 / np.sqrt(2)), len(changes)


def _id(result: dict) -> tuple[str, str]:
    return result["case"], result["source"]


def markdown(sets: list[tuple[str, list[dict], dict]]) -> str:
    together = pooled(sets)
    spread, changes = difference_spread(sets) if len(sets) > 1 else (float("nan"), 0)
    tolerance_lines = [
        [
            f"{t:g}" + (" (used)" if t == cal.KEPT_TOLERANCE else ""),
            *(f"{met(results, lambda r: r['rows'], t)} / {len(results)}" for _, results, _ in sets),
            f"{met(together, lambda r: r['rows'], t)} / {len(together)}",
        ]
        for t in TOLERANCES
    ]
    names = ", ".join(f"{name} ({results[0]['fields']} fields per direction)" for name, results, _ in sets)
    return "\n".join(
        [
            "## Other witnesses, other tolerances, more fields (`benchmarks/calibration_witnesses.py`)",
            "",
            f"calibration_rule.py's translations and truth on each held-out set ({names}), the choice made by "
            "calibrate's rule with one of its witnesses replaced; *met*: calibration_rule.py's target. What kept the "
            "nuclei, each measure against its source -> source control, its tolerance set as KEPT_TOLERANCE is (from "
            f"the first set; calibrate rounds the IoU's to {cal.KEPT_TOLERANCE:g}, the table below):",
            "",
            kept_table(sets),
            "",
            "The loss of nuclei IoU less a share b of the nuclear channel's change (a change of the DNA's intensity "
            "moves the segmented outlines; calibrate's rule with its tolerance set from the first set as above):",
            "",
            discounted_table(sets),
            "",
            "How a translated cell is counted as moved (how far the settings went: the share of cells moved, from the "
            "real source cells' share to the real target cells'; the rank agreement is over the settings that keep "
            "the nuclei, mean over directions):",
            "",
            count_table(sets),
            "",
            "calibrate's rule at other tolerances, on each set and on the sets pooled (their scores averaged: "
            f"{together[0]['fields'] if together else 0} fields per direction):",
            "",
            table(
                ["IoU loss allowed beyond the control", *(f"met, {n}" for n, _, _ in sets), "met, pooled"],
                tolerance_lines,
            ),
            "",
            "The project default, what every case's checkpoint translates with uncalibrated, is chosen unless another "
            "setting that keeps the nuclei went further by a margin (calibrate's DEFAULT_MARGIN, "
            f"{DEFAULT_MARGIN:g}: a setting's share of the way minus the default's, on the same fields, spreads from one "
            f"sample of fields to another by {spread:.3f}, one set's robust standard deviation from the change between "
            f"the first two sets (median x 1.4826 / sqrt 2) over the {changes} settings that kept the nuclei, and "
            f"{DEFAULT_MARGIN:g} is about 1.645 of it); the rule at other margins:",
            "",
            margin_table(sets, together),
            "",
            "A stored choice translates other images than those it was chosen on. Each set judged (its truth) with "
            "the choice made on its own fields, on another set's fields or on the others pooled; beside calibrate's "
            "rule, a rule that saw the truth (the truth-best setting; nothing stored where it moved at most "
            f"{NOTHING_TO_FIND:g} of the cells or kept identity below {IDENTITY_MIN:g}) and the project default; *worse than the default*: what the user "
            "translates with after calibrate (its stored choice, else the default as it was) moved more than 0.05 less "
            "of the cells than the project default, or lost identity, where the default kept identity >= 0.9:",
            "",
            carried_table(sets),
            "",
            "The bars a user may set (`--reached-min`, the dock's *moved ≥*), on each set's own fields: the rule's "
            "own; where the rule declined because the furthest setting that kept the nuclei went at least "
            f"{PARTIAL_MIN:g} of the way but less than {cal.REACHED_MIN:g}, its offer (that share as the bar) taken; a "
            f"fixed {PARTIAL_MIN:g}. *Worse than the default* as above:",
            "",
            user_bars_table(sets),
            "",
            f"What the rule misses on the sets pooled ({together[0]['fields'] if together else 0} fields per direction), "
            "and by how much (setting: transfer / identity):",
            "",
            shortfall_table(together),
            "",
            "Missed on every set and pooled, at the rule's bars: "
            + (", ".join(f"{case} {source} -> {target}" for case, source, target in always_missed(sets)) or "none")
            + ".",
        ]
    )


def shortfall(rows: list[dict], choice: Choice) -> str:
    """By how much a choice misses calibration_rule.py's target, clause by clause (empty where it meets it)."""
    best, default = truth_optimum(rows), default_row(rows)
    if choice.row is None:
        over = best["transfer"] - NOTHING_TO_FIND
        found = over > 0 and best["identity"] >= IDENTITY_MIN
        return f"declined where the truth-best moved {over:.3f} more than {NOTHING_TO_FIND:g}" if found else ""
    new, missed = choice.row, []
    if new["transfer"] < best["transfer"] - 0.05:
        missed.append(f"transfer {best['transfer'] - 0.05 - new['transfer']:.3f} below the truth-best's minus 0.05")
    if new["identity"] < IDENTITY_MIN:
        missed.append(f"identity {IDENTITY_MIN - new['identity']:.3f} under {IDENTITY_MIN:g}")
    if default["identity"] >= IDENTITY_MIN and new["transfer"] < default["transfer"]:
        missed.append(f"transfer {default['transfer'] - new['transfer']:.3f} under the project default's")
    return "; ".join(missed)


def shortfall_table(together: list[dict]) -> str:
    """Each direction the rule misses on the sets pooled: the truth-best, the choice, the default, the shortfall."""
    lines = []
    for r in together:
        choice = rule(r["rows"], r["unaffected"])
        missed = shortfall(r["rows"], choice)
        # the target's clauses, as calibration_rule.verdict judges them
        assert bool(missed) != verdict(r["rows"], choice)[1], (r["case"], r["source"])
        if missed:
            default = default_row(r["rows"])
            shown = cell(choice.row) if choice.row is not None else f"nothing stored ({choice.status})"
            lines.append(
                [
                    r["case"],
                    f"{r['source']} -> {r['target']}",
                    cell(truth_optimum(r["rows"])),
                    shown,
                    cell(default),
                    missed,
                ]
            )
    return table(["case", "direction", "truth-best", "calibrate", "project default", "missed by"], lines)


def always_missed(sets: list[tuple[str, list[dict], dict]]) -> list[tuple[str, str, str]]:
    """The directions calibrate's rule misses on each set and on the sets pooled."""
    missed = None
    for results in [results for _, results, _ in sets] + [pooled(sets)]:
        here = {
            (r["case"], r["source"], r["target"])
            for r in results
            if not verdict(r["rows"], rule(r["rows"], r["unaffected"]))[1]
        }
        missed = here if missed is None else missed & here
    order = [(r["case"], r["source"], r["target"]) for r in sets[0][1]]
    return [d for d in order if d in (missed or set())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="WORK:HELD_OUT:DEMO_SEED",
        help="a calibration_rule.py --work with the --held-out and --demo-seed it was run with (repeat; first "
        "sets the tolerances)",
    )
    parser.add_argument("--semireal", default="/tmp/semireal")
    parser.add_argument("--sim", default="/tmp/sim")
    parser.add_argument("--claim", default="/tmp/claim")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sets = []
    for spec in args.set:
        work, held_out, demo_seed = spec.split(":")
        results = load_results(Path(work))
        measured = {_id(r): measure_direction(r, Path(work), held_out, int(demo_seed), args) for r in results}
        sets.append((held_out, results, measured))
    text = markdown(sets)
    print(text)
    if not args.no_write:
        print(f"written to {write_section('calibration_witnesses', text)}")


if __name__ == "__main__":
    main()
