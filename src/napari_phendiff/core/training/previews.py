"""Previews: a few images generated from the model being trained at each checkpoint, so a user sees what it has
learned each condition looks like while it trains (the Train dock shows them as layers).

They come from the networks in memory with the moving-average weights a checkpoint holds (DiffusionTrainer.
live_model), not from a second copy loaded from disk, and at a small size: a base fine-tuned at 512 px would take
minutes per preview on a CPU at its own size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Generator

import numpy as np

from ..walk import sample

PREVIEW_STEPS = 20  # DDIM steps: enough to tell the conditions apart, a fraction of translation's cost
PREVIEW_SIDE = 128  # at most, in pixels


def preview_side(image_size: int, size_multiple: int) -> int:
    """The side previews are generated at: the training size, capped at PREVIEW_SIDE, a multiple of what the
    network takes."""
    side = min(image_size, PREVIEW_SIDE)
    return max(size_multiple, side - side % size_multiple)


def iter_previews(trainer, channel_names: list[str], n: int) -> Generator[str, None, dict[str, np.ndarray]]:
    """Generate n images per condition from the model being trained; yields a line before each condition (this takes
    a while) and returns {condition: (n, C, S, S)} in the training images' dtype."""
    images = {}
    with trainer.live_model(channel_names) as live:
        side = preview_side(live.image_size, live.size_multiple)
        model = replace(live, image_size=side)  # the same networks, generating smaller images
        for i, condition in enumerate(model.conditions):
            yield f"{condition} ({i + 1} of {len(model.conditions)}), {n} at {side} px"
            images[condition] = sample(model, condition, n, steps=PREVIEW_STEPS, seed=0)
    return images
