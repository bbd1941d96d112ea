"""Re-create the demo checkpoint shipped in src/napari_phendiff/data/demo (reproducible: fixed seeds).

    python scripts/train_demo.py --work /tmp/demo-work            # about 25-40 min on 2 CPU cores

Simulates the translocation phenotype (NF-kB-like reporter cytoplasmic when untreated, nuclear under TNFa), trains
the `tiny` model on 48-px crops, and writes the EMA weights in float16 (a few MB) without the resume state.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from napari_phendiff.core.checkpoint import DEMO_CHECKPOINT, atomic_folder
from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.models.pixel import write as write_checkpoint
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.training.run import iter_train

SIMULATOR = {"phenotype": "translocation", "size": 96, "cell_diameter": 20.0, "n_per_class": 200, "seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for data and the full checkpoint")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--install", action="store_true", help="only copy --work's checkpoint into the package")
    args = parser.parse_args()
    data, full = args.work / "cells", args.work / "checkpoint"
    if not args.install:
        if not data.exists():
            simulate_dataset(data, SIMULATOR["phenotype"], SIMULATOR["n_per_class"], SIMULATOR["size"],
                             seed=SIMULATOR["seed"], cell_diameter=SIMULATOR["cell_diameter"])
        config = TrainConfig(data=data, out=full, preset="tiny", image_size=48, steps=args.steps, batch_size=16,
                             lr=3e-4, warmup_steps=100, checkpoint_every=250, seed=0, device="cpu",
                             resume=args.resume, channel_names=list(PHENOTYPES[SIMULATOR["phenotype"]].channels),
                             metadata={"simulator": SIMULATOR})
        for event in iter_train(config):
            if event.kind != "step" or event.step % 50 == 0:
                print(event.kind, event.step, event.loss, event.message, flush=True)
    model = load_checkpoint(full, device="cpu")
    manifest = {k: v for k, v in model.manifest.items() if k != "format_version"}
    manifest["provenance"]["data_folder"] = "simulated by scripts/train_demo.py"
    with atomic_folder(DEMO_CHECKPOINT) as folder:
        write_checkpoint(folder, model.unet, model.scheduler_config, manifest, half=True)
    shutil.rmtree(DEMO_CHECKPOINT / "training", ignore_errors=True)
    print(f"demo checkpoint written to {DEMO_CHECKPOINT}")


if __name__ == "__main__":
    main()
