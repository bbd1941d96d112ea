"""Which morph is the more faithful path? Frames of `translate_morph` by strength and by blending the conditions'
embeddings (one inversion each), on the simulator's truth.

    python benchmarks/morph_path.py --fields 8 --frames 6

For fresh fields of the demo model's own simulator settings, both directions, each frame is scored with the true
masks of the original: the median per-cell phenotype value (it should travel from the source condition's median to
the target's, monotonically), phenotype_transfer and identity (nuclei IoU over the segmentation ceiling; the cells
should stay themselves along the whole path). Results: a table and a plot in docs/benchmarks.md (section
morph_path).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_phendiff.core.explore import MORPH_PATHS, translate_morph
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.option_words import describe
from napari_phendiff.core.translate import translation_options

from report import hardware, save_figure, table, write_section
from translation_frontier import score, simulated_sets

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "images" / "morph_path.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--paths", nargs="+", default=list(MORPH_PATHS))
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint, device="cpu")
    phenotype, sets = simulated_sets(model, args.fields, args.seed)
    conditions = list(sets)
    results, settings, started = {}, {}, time.perf_counter()
    for source in conditions:
        target = next(c for c in conditions if c != source)
        options, sources = translation_options(model, source, target)  # the checkpoint's own settings
        settings[f"{source} -> {target}"] = describe(options, sources)
        for path in args.paths:
            stacks = np.stack(
                [
                    translate_morph(model, image, source, target, args.frames, options, path=path)
                    for image in sets[source]["images"]
                ],
                axis=1,
            )  # (frames, fields, C, Y, X)
            results[(f"{source} -> {target}", path)] = [
                score(phenotype, model, None, sets[source], sets[target], target, frame) for frame in stacks
            ]
    seconds = time.perf_counter() - started
    steps = {path: [0.0] + [j / args.frames for j in range(1, args.frames + 1)] for path in args.paths}
    rows = [
        [
            direction,
            path,
            k,
            f"{steps[path][k]:.2f}",
            r["median_translated"],
            r["transfer"],
            r["identity"],
            r["change_" + model.channel_names[1]],
        ]
        for (direction, path), scored in results.items()
        for k, r in enumerate(scored)
    ]

    def monotone(scored):
        medians = [r["median_translated"] for r in scored]
        return bool(np.all(np.diff(medians) * np.sign(medians[-1] - medians[0]) >= -0.02))

    def evenness(scored):
        """The largest share of the whole move made by one frame (1/K: perfectly even; 1: all in one frame)."""
        medians = np.array([r["median_translated"] for r in scored])
        return float(np.max(np.abs(np.diff(medians))) / max(abs(medians[-1] - medians[0]), 1e-9))

    import matplotlib.pyplot as plt

    directions = list(dict.fromkeys(d for d, _ in results))
    fig, axes = plt.subplots(1, len(directions), figsize=(9, 3.4), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        for path in args.paths:
            scored = results[(direction, path)]
            ax.plot(range(len(scored)), [r["median_translated"] for r in scored], "o-", label=f"by {path}")
        ax.axhline(scored[0]["median_source"], color="grey", ls=":", label="real source median")
        ax.axhline(scored[0]["median_target"], color="green", ls="--", label="real target median")
        ax.set_title(direction)
        ax.set_xlabel("frame")
        ax.set_ylabel("median nuclear/cytoplasmic reporter")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, FIGURE)
    summary = "; ".join(
        f"{d} by {p}: {'monotone' if monotone(s) else 'NOT monotone'}, {s[0]['median_translated']:.2f} -> "
        f"{s[-1]['median_translated']:.2f} (real target {s[0]['median_target']:.2f}), largest single-frame share "
        f"{evenness(s):.2f}, {model.channel_names[1]} change of frame 1 {s[1]['change_' + model.channel_names[1]]:.3f}"
        for (d, p), s in results.items()
    )
    text = (
        f"## Morph path on the ground truth (`benchmarks/morph_path.py`)\n\n"
        f"{args.checkpoint} model, {args.fields} fresh {phenotype} fields per direction, {args.frames} frames "
        "after the original (frame 0), at the checkpoint's own settings ("
        + "; ".join(f"{d}: {s}" for d, s in settings.items())
        + "). "
        "*strength*: frame j is the translation taken j/K of the way down to that strength; *embedding*: every "
        "frame at that strength, the target's embedding blended from the source's j/K of the way. Scores with "
        f"the original's true masks; {hardware()}, {seconds:.0f} s.\n\n"
        + table(
            [
                "direction",
                "path",
                "frame",
                "j/K",
                "median phenotype",
                "transfer",
                "identity",
                f"{model.channel_names[1]} change",
            ],
            rows,
        )
        + "\n\n"
        + summary
        + ".\n\n![morph path](images/morph_path.png)\n"
    )
    write_section("morph_path", text)
    print(text)


if __name__ == "__main__":
    main()
