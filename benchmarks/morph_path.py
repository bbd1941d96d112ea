"""Is the morph a faithful path? Frames of `translate_morph` (by strength, one inversion) on the simulator's truth.

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

from napari_phendiff.core.explore import morph_strengths, translate_morph
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.options import TranslateOptions

from report import hardware, save_figure, table, write_section
from translation_frontier import score, simulated_sets

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "images" / "morph_path.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint, device="cpu")
    phenotype, sets = simulated_sets(model, args.fields, args.seed)
    conditions = list(sets)
    options = TranslateOptions()
    strengths = [0.0] + morph_strengths(options, args.frames)
    results, started = {}, time.perf_counter()
    for source in conditions:
        target = next(c for c in conditions if c != source)
        stacks = np.stack([translate_morph(model, image, source, target, args.frames, options)
                           for image in sets[source]["images"]], axis=1)  # (frames, fields, C, Y, X)
        results[f"{source} -> {target}"] = [score(phenotype, model, None, sets[source], sets[target], target, frame)
                                            if k else score(phenotype, model, None, sets[source], sets[target],
                                                            target, sets[source]["images"])
                                            for k, frame in enumerate(stacks)]
    seconds = time.perf_counter() - started
    rows = [[direction, k, f"{strengths[k]:.2f}", r["median_translated"], r["transfer"], r["identity"]]
            for direction, scored in results.items() for k, r in enumerate(scored)]
    monotone = {d: bool(np.all(np.diff([r["median_translated"] for r in s]) * np.sign(
        s[-1]["median_translated"] - s[0]["median_translated"]) >= -0.02)) for d, s in results.items()}

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (direction, scored) in zip(axes, results.items()):
        ax.plot(range(len(scored)), [r["median_translated"] for r in scored], "o-", label="morph frames")
        ax.axhline(scored[0]["median_source"], color="grey", ls=":", label="real source median")
        ax.axhline(scored[0]["median_target"], color="green", ls="--", label="real target median")
        ax.set_title(direction)
        ax.set_xlabel("frame")
        ax.set_ylabel("median nuclear/cytoplasmic reporter")
    axes[0].legend(fontsize=7)
    save_figure(fig, FIGURE)
    text = (f"## Morph path on the ground truth (`benchmarks/morph_path.py`)\n\n"
            f"{args.checkpoint} model, {args.fields} fresh {phenotype} fields per direction, {args.frames} frames by "
            f"strength (project defaults: strength {options.strength}, guidance {options.guidance} against the "
            f"source, {options.steps}-step grid; frame 0 is the original), {hardware()}, {seconds:.0f} s. Scores with "
            "the original's true masks.\n\n"
            + table(["direction", "frame", "strength", "median phenotype", "transfer", "identity"], rows)
            + "\n\n" + "; ".join(f"{d}: the median moves {'monotonically' if m else 'NOT monotonically'} from "
                                   f"{results[d][0]['median_translated']:.2f} to {results[d][-1]['median_translated']:.2f}"
                                   f" (real target {results[d][0]['median_target']:.2f}), identity at the last frame "
                                   f"{results[d][-1]['identity']:.2f}" for d, m in monotone.items())
            + ".\n\n![morph path](images/morph_path.png)\n")
    write_section("morph_path", text)
    print(text)


if __name__ == "__main__":
    main()
