"""A translation's results put back together from its tiles, as core/tiling.py planned them.

Tiles are blended in the plan's reading order: a translated tile when its batch is done, a background tile copied
from the input when its turn comes. Each target's result is filled row band by row band by a Blender (a large field
holds its result and one tile's height of blended rows, nothing more), then returned in the input's shape, size and
dtype with its kept channels the input's.
"""

from __future__ import annotations

import numpy as np

from .images import resize_fields
from .models.base import ConditionedModel
from .tiling import Blender, Job, TilePlan, blend_weights


class Assembly:
    """The results of one translation: `add` each batch's translated tiles as they arrive, then `finish` once."""

    def __init__(self, model: ConditionedModel, plan: TilePlan, targets: list[str], keep: list[int]):
        self.model, self.plan, self.targets, self.keep = model, plan, targets, keep
        self.results, self.blenders = _blended_results(model, plan, targets)
        self.order = plan.order()
        self.ready: dict[Job, list[np.ndarray]] = {}  # translated tiles waiting for their turn to be blended

    def add(self, batch: list[Job], outs: dict[str, np.ndarray]) -> None:
        """A batch's translated tiles ({target: (B, C, h, w)}), blended as far as the plan's order allows."""
        self.ready.update((job, [outs[name][i] for name in self.targets]) for i, job in enumerate(batch))
        self.order = self._blend_ready()

    def finish(self) -> dict[str, np.ndarray]:
        """Each target's result in the input's shape, size and dtype, once every batch was added."""
        self._blend_ready()
        for blender in self.blenders:
            blender.close()
        return {name: self._finished(result) for name, result in self.results.items()}

    def _blend_ready(self) -> list[tuple[Job, bool]]:
        """Blend the tiles at the head of the order whose results are ready (copied tiles are the input's own);
        returns the tiles still waiting."""
        position = 0
        for position, (job, translated) in enumerate(self.order):
            if translated and job not in self.ready:
                return self.order[position:]
            tiles = self.ready.pop(job) if translated else [self.plan.read([job])[0]] * len(self.blenders)
            for blender, tile in zip(self.blenders, tiles):
                blender.add(*job, tile)
        return []

    def _finished(self, result: np.ndarray) -> np.ndarray:
        """A target's assembled result in the input's shape (and size and dtype: a resized model's is scaled back,
        its kept channels the original's pixels)."""
        model, plan = self.model, self.plan
        if plan.resized:
            result = model.normalization.inverse(resize_fields(result, plan.stack.shape[-2:]), plan.stack.dtype)
            result[:, self.keep] = plan.stack[:, self.keep]
        return plan.restore(result)


def _blended_results(
    model: ConditionedModel, plan: TilePlan, targets: list[str]
) -> tuple[dict[str, np.ndarray], list[Blender]]:
    """The result of each target (the input's dtype; float32 on the model's scale when it is scaled back later)
    and the Blenders that fill it row band by row band."""
    height, width = plan.size
    results: dict[str, np.ndarray] = {}
    blenders: list[Blender] = []
    for name in targets:
        if plan.resized:
            result = np.zeros((len(plan.fields), model.channels, height, width), np.float32)
        else:
            result = np.empty(plan.stack.shape, plan.stack.dtype)

        def finish(n: int, top: int, rows: np.ndarray, result=result) -> None:
            rows = rows[:, : max(0, height - top), :width]  # the padding is dropped
            if plan.resized:
                result[n, :, top : top + rows.shape[1]] = rows
            else:
                result[n, :, top : top + rows.shape[1]] = model.normalization.inverse(rows, plan.stack.dtype)

        results[name] = result
        blenders.append(
            Blender(
                model.channels, plan.padded, plan.windows[0][2], blend_weights(*plan.windows[0][2:], plan.tiles), finish
            )
        )
    return results, blenders
