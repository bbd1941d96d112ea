"""Which difference shows the phenotype: translated - original, or translated - control (source -> source)?

    python benchmarks/difference_reference.py --work /tmp/calrule

A translation also denoises and smooths: part of `translated - original` is the model's reconstruction, not the
condition. The control (the same inversion regenerated under the source condition, the Translate dock's Control)
carries the same reconstruction, so `translated - control` should hold the condition's change alone. Measured on
the demo model's held-out fields, whose true counterfactual the simulator gives (same seed, other condition: same
cells and DNA, the other phenotype): per field and channel, the Pearson correlation of each difference with the true
difference (counterfactual - original), and on the DNA channel, which no condition changes, the mean absolute
difference (the true one is camera noise alone). Reads calibration_rule.py's cached translations of the `demo` case
(its held-out fields are made again here from the same seeds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.simulate import PHENOTYPES, simulate_field

from report import table, write_section

SEED = 2_000_000  # calibration_rule.py's held-out fields for the demo (translation_frontier.simulated_sets)
SETTINGS = ((0.3, 4.0), (0.5, 3.0))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def run(args) -> str:
    model = load_checkpoint("demo", device="cpu")
    sim = model.manifest["metadata"]["simulator"]
    conditions = PHENOTYPES[sim["phenotype"]].conditions
    rows = []
    for source, target in ((conditions[0], conditions[1]), (conditions[1], conditions[0])):
        cache = np.load(args.work / f"demo_{source}-to-{target}.npz")
        fields = [
            (
                simulate_field(
                    sim["phenotype"], source, sim["size"], seed=SEED + i, cell_diameter=sim["cell_diameter"]
                ).image,
                simulate_field(
                    sim["phenotype"], target, sim["size"], seed=SEED + i, cell_diameter=sim["cell_diameter"]
                ).image,
            )
            for i in range(args.fields)
        ]
        for strength, guidance in SETTINGS:
            translated = cache[f"{target}|{strength:g}|{guidance:g}|source|ddim"]
            control = cache[f"{source}|{strength:g}|1|source|ddim"]
            scores = {"original": [], "control": []}
            dna = {"original": [], "control": [], "truth": []}
            for i, (original, counterfactual) in enumerate(fields):
                a, t, c, cf = (
                    model.normalization.forward(x[None].astype(np.float32))[0]
                    for x in (original, translated[i], control[i], counterfactual)
                )
                for reference, image in (("original", a), ("control", c)):
                    scores[reference].append(correlation(t[1] - image[1], cf[1] - a[1]))
                    dna[reference].append(float(np.abs(t[0] - image[0]).mean()))
                dna["truth"].append(float(np.abs(cf[0] - a[0]).mean()))
            rows.append(
                [
                    f"{source} -> {target}",
                    f"s {strength:g}, w {guidance:g}",
                    np.mean(scores["original"]),
                    np.mean(scores["control"]),
                    np.mean(dna["original"]),
                    np.mean(dna["control"]),
                    np.mean(dna["truth"]),
                ]
            )
    header = [
        "direction",
        "setting",
        "reporter: r(translated - original, truth)",
        "reporter: r(translated - control, truth)",
        "DNA: mean |translated - original|",
        "DNA: mean |translated - control|",
        "DNA: mean |true difference| (noise)",
    ]
    return "\n".join(
        [
            "## Which difference shows the phenotype? (`benchmarks/difference_reference.py`)",
            "",
            f"Demo model, {args.fields} held-out fields per direction (those of calibration_rule.py), 20-step grid. "
            "Correlation of each difference image with the true difference (the simulator's counterfactual - the "
            "original) on the reporter, per field, averaged; on the DNA, which no condition changes, the mean absolute "
            "difference in normalised units (the true difference there is camera noise).",
            "",
            table(header, rows),
            "",
            f"Against the control, the reporter's difference followed the truth better in "
            f"{sum(r[3] > r[2] for r in rows)} of {len(rows)} rows (mean change of r "
            f"{np.mean([r[3] - r[2] for r in rows]):+.3f}), and the DNA difference, all of it the model's own change, "
            f"was smaller in {sum(r[5] < r[4] for r in rows)} of {len(rows)}. Subtracting the control does not localise "
            "the phenotype better on this model, so the difference layers and files stay translated - original; the "
            "Translate dock's Control run shows what the model changes with no condition, to read beside them.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/calrule"))
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = run(args)
    print(text)
    if not args.no_write:
        print(f"written to {write_section('difference_reference', text)}")


if __name__ == "__main__":
    main()
