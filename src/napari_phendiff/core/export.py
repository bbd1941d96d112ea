"""Writing translations: ImageJ-compatible TIFFs that record how they were made."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from .. import __version__
from .models.base import ConditionedModel, DirectModel
from .images import write_image
from .options import TranslateOptions


def provenance(
    model: ConditionedModel,
    source: str,
    target: str,
    options: TranslateOptions | None,
    input_path: str | Path | None = None,
) -> dict:
    """What a translated image needs to be reproduced: checkpoint, conditions and the translation's settings.

    A direct mapping (CycleGAN) has no steps, strength or guidance, so none are recorded for it.
    """
    settings = {} if options is None or isinstance(model, DirectModel) else options.record()
    return {
        "software": f"napari-phendiff {__version__}",
        "checkpoint": str(model.path),
        "model": model.kind,
        "source": source,
        "target": target,
        **settings,
        "input": str(input_path) if input_path else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_translation(
    out: Path, stem: str, target: str, image: np.ndarray, model: ConditionedModel, meta: dict
) -> Path:
    """Write `<out>/<stem>_to_<target>.tif` with the checkpoint's channel names and the provenance."""
    return write_image(
        Path(out) / f"{stem}_to_{safe_name(target)}.tif", image, channel_names=model.channel_names, provenance=meta
    )


def layer_file_name(text: str) -> str:
    """`text` under the project's name rule (`safe_name`: letters, digits, - _ . only), with the runs of _ that
    spaces and brackets leave made one and none at the ends: `field 3 (untreated)` -> `field_3_untreated`. The
    Translate dock names result layers and their files by it."""
    return re.sub(r"_{2,}", "_", safe_name(text)).strip("_")


def safe_name(condition: str) -> str:
    """A condition name as it appears in file names (anything but letters, digits, - _ . becomes _)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in condition)
