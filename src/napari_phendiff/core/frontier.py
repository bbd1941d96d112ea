"""A calibration's frontier as files: every setting's scores (frontier.csv), the choice with the bars it was judged by
(calibration.json) and how far each setting reached against what it kept (frontier.png)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .calibration_bars import bars_set
from .calibration_rule import Choice, made_with, setting_of
from .checkpoint import atomic_folder
from .options import direction_key
from .sweep import Setting

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_frontier(
    out: Path,
    rows: list[dict],
    choice: Choice,
    record: dict,
    baseline: dict,
    source: str,
    target: str,
    rules: dict,
    default: Setting | None = None,
    beside: Callable[[Path], object] | None = None,
) -> None:
    """frontier.csv, calibration.json and frontier.png, written together into `out` (all or nothing). `rules`: the
    bars the choice was made with, recorded in calibration.json with the setting without calibration (`default`);
    `beside(folder)` writes what else belongs with them (the trusted condition classifier), all or nothing too."""
    with atomic_folder(out) as folder:
        _write_rows(folder / "frontier.csv", rows)
        (folder / "calibration.json").write_text(
            json.dumps(
                {
                    "direction": direction_key(source, target),
                    "chosen": record,
                    "baseline_untranslated": baseline,
                    "rules": {**rules, "default": asdict(default) if default else None},
                    "rows": rows,
                },
                indent=2,
                default=float,
            )
        )
        frontier_figure(folder / "frontier.png", rows, choice, baseline, f"{source} -> {target}", default)
        if beside is not None:
            beside(folder)


def _write_rows(path: Path, rows: list[dict]) -> None:
    """The rows as a table (the measurements each overshot are in calibration.json)."""
    columns = [k for k in rows[0] if k != "overshot_measurements"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def frontier_figure(
    path: Path, rows: list[dict], choice: Choice, baseline: dict, title: str, default: Setting | None = None
) -> Path:
    """draw_frontier's figure, written to `path`."""
    draw_frontier(rows, choice, baseline, title, default).savefig(path, dpi=110)
    return path


def draw_frontier(
    rows: list[dict], choice: Choice, baseline: dict, title: str, default: Setting | None = None
) -> Figure:
    """How far each setting reached against the nuclei overlap it lost beyond its control (against the strength where
    the nuclei's channel is kept as the original's: they are then kept alike), one line per guidance scale through the
    strengths, the bars the choice was made with drawn, the choice circled and the setting without calibration
    (`default`) squared."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe inside napari

    fig = Figure(figsize=(6.2, 4.6))
    ax = fig.subplots()
    lost = lambda r: r["kept"] - r.get("kept_control", 1.0)  # noqa: E731
    # nuclei kept as the original's (their channel kept): every setting keeps them alike, so strength spreads the points
    flat = all(abs(lost(r)) < 1e-9 for r in rows)
    x = (lambda r: r["strength"]) if flat else lost
    groups: dict[Setting, list[dict]] = {}
    for row in rows:
        groups.setdefault(setting_of({**row, "strength": 1.0}), []).append(row)
    for key, members in groups.items():
        members.sort(key=lambda r: r["strength"])
        ax.plot(
            [x(r) for r in members], [r["reached"] for r in members], "o-", ms=3, label=key.label().split(", ", 1)[1]
        )
        for r in members:
            if not flat:
                ax.annotate(
                    f"{r['strength']:g}", (x(r), r["reached"]), fontsize=6, xytext=(2, 2), textcoords="offset points"
                )
    ax.plot([0.0], [baseline["reached"]], "k*", ms=10, label="untranslated")
    _draw_bars(ax, choice, flat)
    for r in rows:
        if default is not None and made_with(r, default):
            ax.plot([x(r)], [r["reached"]], "s", ms=11, mfc="none", mec="black", label="without calibration")
    ax.plot(
        [x(choice.best)],
        [choice.best["reached"]],
        "o",
        ms=15,
        mfc="none",
        mec="red" if choice.row is not None else "orange",
        label="chosen" if choice.row is not None else f"best ({choice.status}: not stored)",
    )
    ax.set_xlabel(
        "strength (the nuclei kept as the original's: every setting keeps them)"
        if flat
        else "nuclei IoU minus the source -> source control's (0: kept as well as the control)"
    )
    counted = any(math.isfinite(r.get("cells_moved", math.nan)) for r in rows)
    ax.set_ylabel(
        "reached: share of cells moved to the real target"
        if counted
        else "reached: classifier P(target) over real target images' (cells not countable)"
    )
    ax.set_title(title if flat else f"{title} (numbers: strength)", fontsize=9)
    ax.legend(fontsize=7, loc="best" if flat else "lower left")  # by strength, the lower left holds the untranslated
    fig.tight_layout()
    return fig


def _draw_bars(ax, choice: Choice, flat: bool) -> None:
    """The bars `choice` was judged by, named in the legend (and whether the user set them), labelled where they lie;
    `flat`: the nuclei kept as the original's, so the x axis is the strength and no setting can cross the IoU bar."""
    by_hand = (
        ", set by hand"
        if bars_set({"reached_min": choice.reached_min, "kept_tolerance": choice.kept_tolerance})
        else ""
    )
    lost, moved = choice.kept_tolerance, choice.reached_min
    if not flat:
        ax.axvline(-lost, color="grey", lw=1, ls="--", label=f"IoU lost ≤ {lost:g}{by_hand}")
        ax.text(-lost, ax.get_ylim()[1], " keeps the nuclei ->", fontsize=7, va="top", color="grey")
    ax.axhline(moved, color="grey", lw=1, ls=":", label=f"moved ≥ {moved:g}{by_hand}")
    ax.axhline(1.0, color="grey", lw=0.6)
    # where the legend does not go: at the right of the lower left one; at the left, where no setting lies, by strength
    at, side = (ax.get_xlim()[0], "left") if flat else (ax.get_xlim()[1], "right")
    ax.text(at, moved, " moved the phenotype ^ ", fontsize=7, va="bottom", ha=side, color="grey")
