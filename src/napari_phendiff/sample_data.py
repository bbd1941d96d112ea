"""Sample data: simulated cells in both conditions of the shipped demo checkpoint, ready to translate with it."""

from __future__ import annotations

import numpy as np

from .core.models import read_manifest
from .core.demo import FIRST_SEED
from .core.simulate import PHENOTYPES, simulate_field

N_FIELDS = 4


def simulated_cells(n_fields: int = N_FIELDS) -> list[tuple]:
    """One layer per condition, each a stack of (field, channel, y, x) uint16 images.

    Drawn by the simulator the demo checkpoint was trained on (its manifest records how), from seeds it never
    saw. Both conditions use the same seeds, so field i shows the same cells in each: the other condition's
    layer is the ground truth a translation can be compared with.
    """
    simulator = read_manifest("demo")["metadata"]["simulator"]
    phenotype = PHENOTYPES[simulator["phenotype"]]
    stacks = {
        condition: np.stack(
            [
                simulate_field(
                    phenotype.name,
                    condition,
                    simulator["size"],
                    seed=FIRST_SEED + i,
                    cell_diameter=simulator["cell_diameter"],
                ).image
                for i in range(n_fields)
            ]
        )
        for condition in phenotype.conditions
    }
    high = float(np.percentile(np.concatenate([s.ravel() for s in stacks.values()]), 99.8))
    low = float(min(s.min() for s in stacks.values()))
    return [
        (
            stack,
            {
                "name": condition,
                "axis_labels": ("field", "channel", "y", "x"),
                "colormap": "gray",
                "contrast_limits": (low, high),
                "metadata": {
                    "phendiff": {
                        "simulated": phenotype.name,
                        "condition": condition,
                        "channels": list(phenotype.channels),
                        "first_seed": FIRST_SEED,
                    }
                },
            },
            "image",
        )
        for condition, stack in stacks.items()
    ]
