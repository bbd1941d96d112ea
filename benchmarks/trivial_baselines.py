"""Can a trivial output win `phendiff evaluate`'s scores? Each translation beside copying the source, the real target
image with the closest nuclei count and the model's own samples from noise (core/baselines.py), on the simulator's
ground truth.

    python benchmarks/trivial_baselines.py --work /tmp/claim_sizes --models pixel_50 lora-lr3e-3_50

--work is a benchmarks/finetune_claim.py work folder: its held-out fields (held_out, held_out_truth) and, for each
model and direction, the setting `phendiff calibrate` chose there (calibration_<model>_<source>-to-<target>); each
model is evaluated at that setting with the DNA kept. Results go to docs/benchmarks.md (section trivial_baselines).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from napari_phendiff.core.evaluate import evaluate

from report import hardware, table, write_section

COLUMNS = ("phenotype_transfer", "identity_iou", "identity_iou_segmented", "fid", "classifier_target_rate")


def evaluated(work: Path, model: str, source: str, target: str) -> dict:
    report = work / f"trivial_{model}_{source}-to-{target}"
    if not (report / "metrics.json").is_file():
        shutil.rmtree(report, ignore_errors=True)
        chosen = json.loads((work / f"calibration_{model}_{source}-to-{target}" / "calibration.json").read_text())
        setting = {k: chosen["chosen"][k] for k in ("strength", "guidance", "negative")}
        evaluate(
            work / model,
            work / "held_out",
            source,
            target,
            report,
            truth=work / "held_out_truth",
            steps=20,
            seed=0,
            device="cpu",
            keep_channels=("DNA",),
            **setting,
        )
    return json.loads((report / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--conditions", nargs=2, default=["untreated", "TNFa"])
    args = parser.parse_args()
    rows = []
    for source, target in (args.conditions, args.conditions[::-1]):
        for i, model in enumerate(args.models):
            m = evaluated(args.work, model, source, target)
            setting = f"s {m['translation']['strength']:g}, w {m['translation']['guidance']:g}"
            rows.append(
                [f"{source} → {target}", model, setting, *(m.get(k, "") for k in COLUMNS), m["conversion_rate"]]
            )
            trivial = [
                ("copy the source", "baseline_", {"identity_iou": "identity_iou_reference"}),
                ("real target, closest nuclei count", "cell_count_baseline_", {}),
                (f"{model}'s samples from noise", "unconditional_baseline_", {}),
            ]
            for name, prefix, own in trivial:
                if i and prefix != "unconditional_baseline_":
                    continue  # the same for every model
                values = [m.get(own.get(k, prefix + k), "") for k in COLUMNS]
                if not any(v != "" for v in values):
                    continue
                rows.append([f"{source} → {target}", name, "", *values, ""])
            print(rows[-1], flush=True)
    text = (
        f"Hardware: {hardware()}. Held-out simulator fields of {args.work} (20 per condition, ground truth), each "
        "model at the setting `phendiff calibrate` chose for it (DNA kept). *closest nuclei count*: each source "
        "field replaced by the real target field with the closest count of segmented nuclei, drawn from the "
        "fields the FID compares with, repeats allowed. *samples from noise*: the model's own images of "
        "the target condition, no input (no identity). *conversion*: the classifier's verdict on the originals "
        "with only the revealed regions of the translation pasted in (core/reveal.py).\n\n"
        + table(["direction", "output", "setting", *COLUMNS, "conversion"], rows)
    )
    write_section("trivial_baselines", text)


if __name__ == "__main__":
    main()
