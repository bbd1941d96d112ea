"""Figures for people: original | translated | difference, per channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def comparison_figure(
    path: str | Path, rows: list[tuple[str, np.ndarray, np.ndarray]], channel_names: list[str]
) -> Path:
    """One row per (title, original, translated) pair and channel: original | translated | difference.

    Original and translated share contrast limits (robust percentiles of the original), so brightness changes are
    visible; the difference uses a diverging colormap centred on zero with symmetric limits.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe inside napari

    n_rows = len(rows) * len(channel_names)
    fig = Figure(figsize=(7.5, 2.4 * n_rows))
    axes = fig.subplots(n_rows, 3, squeeze=False)
    row = 0
    for title, original, translated in rows:
        for c, channel in enumerate(channel_names):
            before, after = original[c].astype(np.float64), translated[c].astype(np.float64)
            low, high = np.percentile(before, (0.5, 99.8))
            difference = after - before
            limit = max(float(np.percentile(np.abs(difference), 99.5)), 1e-9)
            unchanged = not difference.any()  # a kept channel: no colour scale to read
            panels = (
                (before, "gray", low, high, f"{title}\n{channel}: original"),
                (after, "gray", low, high, "translated"),
                (
                    difference,
                    "RdBu_r",
                    -limit,
                    limit,
                    "difference: none (kept as the original's)" if unchanged else "difference (translated - original)",
                ),
            )
            for ax, (data, cmap, vmin, vmax, label) in zip(axes[row], panels):
                shown = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax)
                ax.set_title(label, fontsize=8)
                ax.axis("off")
            if not unchanged:
                fig.colorbar(shown, ax=axes[row, 2], fraction=0.046, pad=0.02)
            row += 1
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
