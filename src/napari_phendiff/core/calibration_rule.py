"""The rule that picks a calibration's setting from the scores of a sweep (calibrate.py has the scores).

`choose` moves the phenotype first and keeps the cells second: among the settings that keep the nuclei
(kept within KEPT_TOLERANCE of the control and above KEPT_FLOOR, unaffected channels within UNAFFECTED_MAX), the
one that reached furthest (witnesses.reached: the share of cells moved, capped at 1: going past the real target is
no better); of those as far (all the way, say), the one that keeps most, then the gentlest. Within the tolerance the
phenotype alone decides: a setting that moved fewer cells does not win by keeping more (benchmarks/calibration_rule.py
measured tie windows, which trade cells for overlap, against none: none met the target in the most directions). The
setting the checkpoint translates with uncalibrated (`default`) is chosen unless another that keeps the nuclei
went DEFAULT_MARGIN further: a smaller lead may be only the sampling of the held-out images, no evidence that the
other setting moves more cells; nor is a setting within the margin that kept the nuclei a little better (letting one
replace the default met the target in fewer directions: benchmarks/calibration_witnesses.py). If no setting that
keeps the nuclei reached REACHED_MIN of the way, or none keeps them, the sweep is reported as such and nothing is
stored.
benchmarks/calibration_rule.py checks the choice against the simulator's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from .calibration_bars import DEFAULT_MARGIN, KEPT_FLOOR, KEPT_TOLERANCE, REACHED_MIN, UNAFFECTED_MAX
from .options import resolve_options
from .sweep import Setting


@dataclass
class Choice:
    """The rule's verdict on a sweep: the chosen row (None when nothing may be stored), why, and the status:
    'calibrated', 'not moved' (the cells were kept but the phenotype did not move), 'not witnessed' (the cells were
    kept, but neither the per-cell measurements nor a trusted classifier could say how far the phenotype moved) or
    'not kept' (no setting kept the nuclei). `best` is the row the rule would have taken, shown even when nothing is
    stored. `kept_tolerance` and `reached_min`: the bars it was made with (KEPT_TOLERANCE and REACHED_MIN unless the
    user set others)."""

    row: dict | None
    status: str
    reason: str
    best: dict
    kept_tolerance: float = KEPT_TOLERANCE
    reached_min: float = REACHED_MIN


def keeps_cells(row: dict, unaffected: Sequence[str] = (), tolerance: float | None = None) -> bool:
    """Whether a sweep row kept the nuclei: within KEPT_TOLERANCE of its control, above KEPT_FLOOR, and each
    unaffected channel changed at most UNAFFECTED_MAX."""
    tolerance = KEPT_TOLERANCE if tolerance is None else tolerance
    return row["kept"] >= max(row.get("kept_control", 1.0) - tolerance, KEPT_FLOOR) and all(
        row[f"change_{c}"] <= UNAFFECTED_MAX for c in unaffected
    )


def choose(
    rows: list[dict],
    unaffected: Sequence[str] = (),
    tolerance: float | None = None,
    reached_min: float | None = None,
    tie: float = 0.0,
    default: Setting | None = None,
    margin: float | None = None,
) -> Choice:
    """Move the phenotype first, keep the cells second (the module docstring has the rule, calibration_bars.py its
    bars; `default`: the checkpoint's setting without calibration, chosen unless another goes `margin` (DEFAULT_MARGIN)
    further; `tolerance` and `reached_min` replace KEPT_TOLERANCE and REACHED_MIN (a user's kept_tolerance and
    reached_min), and `tie` counts settings within it of the furthest as tied, for benchmarks/calibration_rule.py,
    which measured them)."""
    tolerance = KEPT_TOLERANCE if tolerance is None else tolerance
    reached_min = REACHED_MIN if reached_min is None else reached_min
    margin = DEFAULT_MARGIN if margin is None else margin
    choice = _verdict(rows, unaffected, tolerance, reached_min, tie, default, margin)
    return replace(choice, kept_tolerance=tolerance, reached_min=reached_min)


def _verdict(
    rows: list[dict],
    unaffected: Sequence[str],
    tolerance: float,
    reached_min: float,
    tie: float,
    default: Setting | None,
    margin: float,
) -> Choice:
    """`choose`, every bar given."""
    feasible = [r for r in rows if keeps_cells(r, unaffected, tolerance)]
    if not feasible:
        best = max(rows, key=lambda r: r["kept"] - r.get("kept_control", 1.0))
        return Choice(
            None,
            "not kept",
            f"No setting kept the nuclei: the closest, {_label(best)}, {what_lost(best, unaffected, tolerance)}.",
            best,
        )
    if not any(np.isfinite(r["reached"]) for r in feasible):
        return Choice(
            None,
            "not witnessed",
            "Nothing witnessed how far the phenotype moved: no per-cell measurement tells enough of the real "
            "source and target cells apart, and the condition classifier is not trusted.",
            max(feasible, key=_keeps_best),
        )
    furthest = max(_reached(r) for r in feasible)
    tied = [r for r in feasible if _reached(r) >= furthest - tie]
    best = max(tied, key=_keeps_best)
    if furthest < reached_min:
        return Choice(
            None,
            "not moved",
            f"No setting that kept the nuclei moved the phenotype: the furthest, "
            f"{_label(best)}, went {_reached(best):.2f} of the way to the real target (at least "
            f"{reached_min:g} needed)." + _default_lost(rows, default, unaffected, tolerance),
            best,
        )
    stays = next((r for r in feasible if default is not None and made_with(r, default)), None)
    if stays is not None and stays is not best and _reached(stays) >= max(furthest - margin, reached_min):
        return Choice(stays, "calibrated", _why_default(stays, best, len(feasible), tolerance, margin), stays)
    return Choice(best, "calibrated", _why(best, feasible, len(tied), furthest, tolerance), best)


def _default_lost(rows: list[dict], default: Setting | None, unaffected: Sequence[str], tolerance: float) -> str:
    """Where nothing is stored: a sentence when the checkpoint's setting without calibration was swept and did not
    keep the nuclei (how far it went, what it lost), else nothing."""
    row = next((r for r in rows if default is not None and made_with(r, default)), None)
    if row is None or keeps_cells(row, unaffected, tolerance):
        return ""
    went = f"went {_reached(row):.2f} of the way but " if np.isfinite(row["reached"]) else ""
    return (
        f" Without calibration the checkpoint translates with {_label(row)}, which {went}did not keep the cells: it "
        f"{what_lost(row, unaffected, tolerance)}."
    )


def what_lost(row: dict, unaffected: Sequence[str] = (), tolerance: float | None = None) -> str:
    """What a sweep row failed of `keeps_cells`, every check that failed, in words ("lost 0.22 of nuclei overlap
    beyond its source -> source control (allowed 0.14), kept 0.70"); empty when it kept them."""
    tolerance = KEPT_TOLERANCE if tolerance is None else tolerance
    control = row.get("kept_control", 1.0)
    failed = []
    if row["kept"] < control - tolerance:
        failed.append(
            f"lost {control - row['kept']:.2f} of nuclei overlap beyond its source -> source control (allowed "
            f"{tolerance:g}), kept {row['kept']:.2f}"
        )
    elif row["kept"] < KEPT_FLOOR:
        failed.append(f"kept {row['kept']:.2f} of nuclei overlap, under the {KEPT_FLOOR:g} below which they are lost")
    failed += [
        f"changed {c} by {row[f'change_{c}']:.2f} (allowed {UNAFFECTED_MAX:g})"
        for c in unaffected
        if row[f"change_{c}"] > UNAFFECTED_MAX
    ]
    return "; ".join(failed)


def _label(row: dict) -> str:
    return Setting(row["strength"], row["guidance"], row.get("negative", "source")).label()


def _reached(row: dict) -> float:
    """How far a row went, capped at 1 (past the real target is no further); -inf when nothing witnessed it."""
    return min(row["reached"], 1.0) if np.isfinite(row["reached"]) else -np.inf


def _keeps_best(row: dict) -> tuple:
    """Order of preference among tied rows: the nuclei kept best beside the control, then the gentlest."""
    return (row["kept"] - row.get("kept_control", 1.0), -row["strength"], -row["guidance"])


def _why(best: dict, feasible: list[dict], tied: int, furthest: float, tolerance: float) -> str:
    """One sentence on why the chosen row won."""
    within = f"within {tolerance:g} of the source -> source control"
    kept = f"it kept {best['kept']:.2f}, the control {best.get('kept_control', 1.0):.2f}"
    if len(feasible) == 1:
        return (
            f"{_label(best)} was the only setting that kept the nuclei {within} ({kept}); it went "
            f"{_reached(best):.2f} of the way to the real target."
        )
    if _reached(best) < furthest:  # a tie window (benchmarks only)
        return (
            f"{_label(best)} went {_reached(best):.2f} of the way to the real target, near the furthest "
            f"({furthest:.2f}) of the {len(feasible)} settings that kept the nuclei {within}, and kept them best of "
            f"those ({kept})."
        )
    return (
        f"{_label(best)} went {_reached(best):.2f} of the way to the real target, the furthest of the "
        f"{len(feasible)} settings that kept the nuclei {within} ({kept})"
        + ("; of those as far, it kept the nuclei best." if tied > 1 else ".")
    )


def _why_default(row: dict, furthest: dict, feasible: int, tolerance: float, margin: float) -> str:
    """One sentence on why the checkpoint's setting without calibration (its `row`) was chosen."""
    others = (
        f"none of the {feasible} settings that kept them went further"
        if _reached(furthest) <= _reached(row)
        else f"none of the {feasible} settings that kept them went {margin:g} further (the furthest, "
        f"{_label(furthest)}, {_reached(furthest):.2f})"
    )
    return (
        f"{_label(row)}, the checkpoint's setting without calibration, went {_reached(row):.2f} of the way to "
        f"the real target and kept the nuclei within {tolerance:g} of the source -> source control (it kept "
        f"{row['kept']:.2f}, the control {row.get('kept_control', 1.0):.2f}); {others}, so it is chosen."
    )


def setting_of(row: dict) -> Setting:
    """The setting a sweep row was made with (what the row leaves out, Setting's defaults)."""
    given = {f.name: row[f.name] for f in fields(Setting) if f.name in row}
    if "guidance_interval" in given:
        given["guidance_interval"] = tuple(given["guidance_interval"])
    return Setting(**given)


def made_with(row: dict, setting: Setting) -> bool:
    """Whether a sweep row's translation walked as `setting` does (Setting.walk)."""
    return setting_of(row).walk() == setting.walk()


def uncalibrated_setting(manifest: dict, source: str, target: str) -> Setting:
    """The setting a checkpoint (its manifest) translates source -> target with when no calibration is stored: its own
    defaults (translation_defaults), else the project's. `choose` weighs the other settings against it."""
    options, _ = resolve_options({k: v for k, v in manifest.items() if k != "calibration"}, source, target)
    low, high = options.guidance_interval
    return Setting(options.strength, options.guidance, options.negative, options.inversion, (low, high))


def with_default(settings: Sequence[Setting], default: Setting) -> list[Setting]:
    """The settings to sweep, with the default added when none of them walks as it does."""
    settings = list(settings)
    return settings if any(s.walk() == default.walk() for s in settings) else [*settings, default]


def bars(choice: Choice) -> dict[str, float]:
    """The bars `choice` was made with by name, as calibration.json records them."""
    return {
        "kept_tolerance": choice.kept_tolerance,
        "kept_floor": KEPT_FLOOR,
        "unaffected_max": UNAFFECTED_MAX,
        "reached_min": choice.reached_min,
        "default_margin": DEFAULT_MARGIN,
    }
