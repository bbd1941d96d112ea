"""`phendiff demo`: translate simulated cells with the shipped demo model and score them against ground truth.

The simulator knows each cell's masks, so the phenotype (here the nuclear/cytoplasmic ratio of an NF-kB-like
reporter) can be measured on the original and on the translated image with the same masks: a working translation
moves it to the other condition's values while the cells stay where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .models import load_checkpoint
from .export import provenance, write_translation
from .figures import comparison_figure
from .images import write_image
from .simulate import PHENOTYPES, measure_phenotype, simulate_field
from .option_words import describe
from .options import DEMO_FIELDS, check_given
from .translate import TranslateEvent, translate, translation_options

FIRST_SEED = 1_000_000  # fields the demo model never saw: training used simulate_dataset(seed=0)


def run_demo(
    out: str | Path,
    *,
    n: int = DEMO_FIELDS,
    device: str = "auto",
    progress: Callable[[str], Callable[[TranslateEvent], None]] | None = None,
    **options,
) -> list[Path]:
    """Translate n simulated fields per condition to the other condition; write TIFFs, a PNG figure and a summary.

    options: translation options (core/options.py); unset ones take the demo checkpoint's calibrated setting for
    each direction. `progress(description)`, if given, returns the per-event callback used while each direction
    runs.
    Returns the written files, the figure and the summary first.
    """
    out = Path(out)
    check_given(options)
    model = load_checkpoint("demo", device=device)
    sim = model.manifest["metadata"]["simulator"]
    phenotype = PHENOTYPES[sim["phenotype"]]
    out.mkdir(parents=True, exist_ok=True)
    written, rows, lines = [], [], [f"phenotype: {phenotype.measure_name} (per cell, median over the fields)"]
    real = {}
    for condition in phenotype.conditions:
        made = _simulated(phenotype.name, sim, condition, n, FIRST_SEED + 500)
        real[condition] = _median_phenotype(phenotype.name, [f.image for f in made], made)
    for source, target in (phenotype.conditions, phenotype.conditions[::-1]):
        fields = _simulated(phenotype.name, sim, source, n, FIRST_SEED)
        stack = np.stack([f.image for f in fields])
        chosen, sources = translation_options(model, source, target, **options)
        lines.append(f"{source} -> {target} settings: {describe(chosen, sources)}")
        translated = translate(
            model, stack, source, target, chosen, progress=progress(f"{source} -> {target}") if progress else None
        )
        written += _write_direction(out, model, sim, fields, translated, source, target, chosen)
        before = _median_phenotype(phenotype.name, [f.image for f in fields], fields)
        moved = _median_phenotype(phenotype.name, translated, fields)
        off = abs(moved - real[target]) / abs(real[target])
        lines.append(
            f"{source} -> {target}: {before:.2f} -> {moved:.2f} "
            f"(real {target} cells: {real[target]:.2f}; {off:.0%} off)"
        )
        rows.append(
            (
                f"{source} -> {target}\nmedian {before:.2f} -> {moved:.2f}, real {target} {real[target]:.2f}",
                fields[0].image,
                translated[0],
            )
        )
    lines += [f"real {condition} cells: {value:.2f}" for condition, value in real.items()]
    figure = comparison_figure(out / "demo.png", rows, model.channel_names)
    summary = out / "summary.txt"
    summary.write_text("\n".join(lines) + "\n")
    return [figure, summary, *written]


def _simulated(phenotype: str, sim: dict, condition: str, n: int, first_seed: int) -> list:
    """n fields of `condition` as the demo model's simulator makes them, seeds first_seed, first_seed + 1, ..."""
    return [
        simulate_field(phenotype, condition, sim["size"], seed=first_seed + i, cell_diameter=sim["cell_diameter"])
        for i in range(n)
    ]


def _median_phenotype(phenotype: str, images: Sequence[np.ndarray], fields: list) -> float:
    """The phenotype's median over every cell of the images, each measured with its simulated field's masks."""
    return float(
        np.nanmedian(
            np.concatenate([measure_phenotype(image, f.nuclei, f.cells, phenotype) for image, f in zip(images, fields)])
        )
    )


def _write_direction(
    out: Path, model, sim: dict, fields: list, translated: np.ndarray, source: str, target: str, chosen
) -> list[Path]:
    """Each simulated field and its translation, as TIFFs with their provenance."""
    written = []
    for i, (field, image) in enumerate(zip(fields, translated)):
        stem = f"{source}_{i}"
        written.append(
            write_image(
                out / f"{stem}.tif",
                field.image,
                channel_names=model.channel_names,
                provenance={"simulated": sim["phenotype"], "condition": source},
            )
        )
        meta = provenance(model, source, target, chosen, f"simulated {stem}")
        written.append(write_translation(out, stem, target, image, model, meta))
    return written
