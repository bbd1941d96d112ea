"""The evaluation report a biologist reads: one HTML page with the numbers, what they mean, and pictures."""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path

import numpy as np

from .figures import comparison_figure

EXPLANATIONS = {
    "fid": (
        "FID",
        "lower is better",
        "Fréchet distance between the feature distributions of translated and real target images; 0 when they "
        "are indistinguishable to the feature extractor.",
    ),
    "kid_mean": (
        "KID",
        "lower is better",
        "Kernel distance between the same distributions (unbiased, fine for small sets); about 0 when "
        "they match, ± its spread over random subsets.",
    ),
    "precision": (
        "Precision",
        "higher is better",
        "Share of translated images that fall inside the real target images' feature manifold: do they "
        "look like real target images?",
    ),
    "recall": (
        "Recall",
        "higher is better",
        "Share of real target images inside the translated images' manifold: do the translations cover "
        "the real variety?",
    ),
    "cycle_l2": (
        "Cycle loss (L2)",
        "lower is better",
        "Distance between an image and its source → target → source round trip, in normalised units "
        "(per image; per pixel below). Large values mean the translation lost what made the image unique.",
    ),
    "cycle_l2_per_pixel": (
        "Cycle loss per pixel",
        "lower is better",
        "The cycle loss as a mean squared difference per pixel and channel; compares across sizes.",
    ),
    "classifier_target_rate": (
        "Classifier translation rate",
        "higher is better",
        "Share of translated images that a condition classifier trained on real images calls the target condition.",
    ),
    "cells_moved": (
        "Cells moved (per-cell measurements)",
        "higher is better",
        "Share of translated cells that look like real target cells: most of their measurements that differ "
        "between the real conditions lie nearer the real target cells' median than the real source cells'; on the "
        "scale from the real source cells (0) to the real target cells (1). What phendiff calibrate chooses by. "
        "Not a number when the measurements tell too few real cells apart.",
    ),
    "phenotype_transfer": (
        "Phenotype transfer (ground truth)",
        "higher is better",
        "Share of translated cells whose true phenotype value is closer to real target cells "
        "than to real source cells (about 1 when the phenotype moved, 0 when it did not).",
    ),
    "identity_iou": (
        "Identity IoU (ground truth)",
        "higher is better",
        "Overlap of the true nuclei with nuclei found on the translated image: the same cells, in the "
        "same places. Compare with the reference, the same score on the originals.",
    ),
    "conversion_rate": (
        "Conversion rate (revealed regions)",
        "higher is better",
        "Share of originals the classifier calls the target once only each cell's revealed region "
        "of the translation is pasted in (core/reveal.py): how much of the verdict the minimal "
        "change carries.",
    ),
    "identity_iou_segmented": (
        "Identity IoU (segmented)",
        "higher is better",
        "Overlap of the nuclei found on each original with those found on its translation "
        "(no ground truth needed): 1 when the nuclei stayed where they were, low when the "
        "model moved, removed or invented cells.",
    ),
    "channel_change": (
        "Change per channel",
        "low for channels the condition does not touch",
        "Root mean square change from original to translation, per channel, in normalised units "
        "(images span about −1 to 1): a channel the condition should not affect (often DNA) should "
        "barely change.",
    ),
}
# Shares of images or cells, printed as percentages.
TRIVIAL = ("cell_count_baseline_", "unconditional_baseline_")  # core/baselines.py
RATES = {
    "precision",
    "recall",
    "classifier_target_rate",
    "cells_moved",
    "phenotype_transfer",
    "phenotype_unmeasured",
    "conversion_rate",
}


def write_report(
    folder: Path, results: dict, evaluation, rows: list[dict], summary: list[dict], channel_names: list[str]
) -> Path:
    """examples.png, distributions.png, cell_summary.csv and report.html into `folder`."""
    _write_summary(folder / "cell_summary.csv", summary)
    examples = [
        (f"{p.name}: {results['source']} → {results['target']}", o, t)
        for p, o, t in list(zip(evaluation.paths, evaluation.originals, evaluation.translated))[:3]
    ]
    comparison_figure(folder / "examples.png", examples, channel_names)
    _distributions_figure(folder / "distributions.png", rows, summary)
    (folder / "report.html").write_text(_html(results, summary))
    return folder / "report.html"


def _write_summary(path: Path, summary: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["measurement"])
        writer.writeheader()
        writer.writerows(summary)


def _distributions_figure(path: Path, rows: list[dict], summary: list[dict], count: int = 6) -> Path:
    """Histograms of the measurements that differ most between real source and real target cells."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe inside napari

    ranked = sorted(
        (s for s in summary if np.isfinite(s["effect_target_vs_source"])),
        key=lambda s: -abs(s["effect_target_vs_source"]),
    )[:count]
    columns = 3
    n_rows = max(1, math.ceil(len(ranked) / columns))
    fig = Figure(figsize=(11, 3.0 * n_rows))
    axes = fig.subplots(n_rows, columns, squeeze=False)
    colours = {"real source": "tab:blue", "translated": "tab:orange", "real target": "tab:green"}
    for ax, entry in zip(axes.ravel(), ranked):
        name = entry["measurement"]
        values = {g: np.array([r[name] for r in rows if r["group"] == g], np.float64) for g in colours}
        values = {g: v[np.isfinite(v)] for g, v in values.items()}
        pooled = np.concatenate(list(values.values()))
        low, high = np.percentile(pooled, (1, 99))
        bins = np.linspace(low, high if high > low else low + 1, 30)
        for group, colour in colours.items():
            ax.hist(
                np.clip(values[group], low, high),
                bins=bins,
                density=True,
                histtype="step",
                lw=1.6,
                color=colour,
                label=f"{group} (n={len(values[group])})",
            )
        moved = (
            f"moved {entry['moved']:.2f} of the way"
            if entry["differs"] and np.isfinite(entry["moved"])
            else "the real conditions do not differ"
        )
        ax.set_title(f"{name}\n{moved}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(ranked) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _how(results: dict) -> str:
    if "steps" not in results:
        return "by the direct mapping"
    return f"with {results['steps']} DDIM steps each way (seed {results['seed']})"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _percent(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) and math.isfinite(value) else _number(value)


def _value(key: str, value) -> str:
    """A score as the report prints it: shares as percentages, per-channel scores as a list."""
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(name)} {_number(v)}" for name, v in value.items())
    return _percent(value) if key in RATES else _number(value)


def _html(results: dict, summary: list[dict]) -> str:
    """report.html: the warnings, what was compared, the scores beside their baselines, examples, the cells."""
    metric_rows = _metric_rows(results)
    cells = _cell_rows(summary)
    warnings = "".join(f"<p class=warn>{html.escape(w)}</p>" for w in results.get("warnings", []))
    rate = lambda key: _percent(results.get(key, float("nan")))  # noqa: E731
    differs = results.get("differs_if", {})
    truth = _truth_paragraph(results)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Translation report: {html.escape(results["source"])} → \
{html.escape(results["target"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
th{{background:#f2f2f2}}.warn{{color:#a00}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(results["source"])} → {html.escape(results["target"])}</h1>{warnings}
<p>Checkpoint <code>{html.escape(results["checkpoint"])}</code> ({html.escape(results["model_kind"])}),
{results["n_translated"]} held-out {html.escape(results["source"])} images of <code>{html.escape(results["data"])}</code>
translated {_how(results)} and compared with
{results["n_real_target"]} real {html.escape(results["target"])} images. Features for FID, KID, precision and recall:
<b>{html.escape(results["features"])}</b> (numbers from different feature extractors are not comparable).</p>
<h2>Scores</h2>
<p>The <i>copy-the-source baseline</i> scores the untranslated {html.escape(results["source"])} images as if they
were the translations: a translation that works beats it clearly on every score that has one. Two more trivial
outputs show which scores an output can win without keeping the cells: each source image replaced by the real
{html.escape(results["target"])} image with the closest number of nuclei (drawn from the images the scores compare
with, repeats allowed), and the model's own samples from noise.</p>
<table><tr><th>score</th><th>value</th><th>copy-the-source baseline</th><th>closest cell count</th>
<th>sample from noise</th><th></th><th>what it means</th></tr>
{"".join(metric_rows)}</table>
<p>The condition classifier was right on {rate("classifier_accuracy")} of {results.get("classifier_held_out_images")}
held-out real images. It calls {rate("classifier_target_rate_real_source")} of the real
{html.escape(results["source"])} images and {rate("classifier_target_rate_real_target")} of the real
{html.escape(results["target"])} images "{html.escape(results["target"])}": the translation rate lies between
these two if the translation works.</p>{truth}
<h2>Examples</h2><p>Original | translated | difference (translated − original), per channel.</p>
<img src="examples.png" alt="examples">
<h2>Per-cell measurements</h2>
<p>Nuclei segmented on the nuclear channel, cells grown from them (cells.csv has every cell; translated cells are
measured with their original's masks). <i>effect</i>: Cohen's d of real target vs real source (which measurements
show the phenotype at all). <i>moved</i>: how far the translated median went from the real source median towards the
real target median (1 = all the way), given only where the real conditions differ: |effect| at least
{differs.get("min_abs_effect")} and a Mann-Whitney test real target vs real source with p below
{differs.get("max_p")}; elsewhere there is nothing to move and it reads "no difference". <i>p translated vs
target</i>: Mann-Whitney test (small p: still distinguishable).</p>
<img src="distributions.png" alt="distributions">
<table><tr><th>measurement</th><th>median real source</th><th>median translated</th><th>median real target</th>
<th>moved</th><th>effect target vs source</th><th>p target vs source</th><th>p translated vs target</th></tr>
{cells}</table>
</body></html>
"""


def _metric_rows(results: dict) -> list[str]:
    """One table row per score the results hold: its value, its copy-the-source and trivial baselines, its meaning."""
    metric_rows = []
    for key, (label, better, meaning) in EXPLANATIONS.items():
        if key not in results:
            continue
        value = _value(key, results[key])
        baseline = _value(key, results[f"baseline_{key}"]) if f"baseline_{key}" in results else ""
        trivial = "".join(
            f"<td>{_value(key, results[prefix + key]) if prefix + key in results else ''}</td>" for prefix in TRIVIAL
        )
        if key == "kid_mean":
            value += f" ± {_number(results['kid_std'])}"
            baseline += f" ± {_number(results['baseline_kid_std'])}" if baseline else ""
        if key == "identity_iou":
            value += f" (reference {_number(results['identity_iou_reference'])})"
        metric_rows.append(
            f"<tr><td>{label}</td><td><b>{value}</b></td><td>{baseline}</td>{trivial}<td>{better}</td>"
            f"<td>{meaning}</td></tr>"
        )
    return metric_rows


def _cell_rows(summary: list[dict]) -> str:
    """The per-cell measurements' table rows, those that differ most between the real conditions first."""
    return "".join(
        f"<tr><td>{html.escape(s['measurement'])}</td><td>{_number(s['median_real_source'])}</td>"
        f"<td>{_number(s['median_translated'])}</td><td>{_number(s['median_real_target'])}</td>"
        f"<td>{_number(s['moved']) if s['differs'] else 'no difference'}</td>"
        f"<td>{_number(s['effect_target_vs_source'])}</td><td>{_number(s['p_target_vs_source'])}</td>"
        f"<td>{_number(s['p_translated_vs_target'])}</td></tr>"
        for s in sorted(
            summary,
            key=lambda s: -abs(s["effect_target_vs_source"]) if np.isfinite(s["effect_target_vs_source"]) else 0,
        )
    )


def _truth_paragraph(results: dict) -> str:
    """What the ground truth measured, when the results hold it ("" otherwise)."""
    if "phenotype_transfer" not in results:
        return ""
    return (
        f"<p>Ground truth ({html.escape(results['truth_measure'])}, median per cell): real "
        f"{html.escape(results['source'])} {_number(results['truth_median_real_source'])}, translated "
        f"{_number(results['truth_median_translated'])}, real {html.escape(results['target'])} "
        f"{_number(results['truth_median_real_target'])}. Cells the simulator's measure could not "
        f"score on the translated images (left out of the transfer): "
        f"{_value('phenotype_unmeasured', results['phenotype_unmeasured'])}.</p>"
    )
