"""`phendiff calibrate`: choose strength and guidance for a checkpoint from what real data allows, no ground truth.

Real images have no simulator truth, so each setting of a sweep (strength x guidance x negative) is scored with
what a biologist can check on held-out source images:
- moved: how strongly a condition classifier trained on the real images of DATA calls the translations the target
  (mean probability of the target condition);
- kept: the overlap (IoU) of nuclei segmented on each translation with those segmented on its original;
- unaffected: the change (RMSE, normalised units) of channels the user marks as untouched by the condition (DNA).
The chosen setting is the one that moves most among those that keep the cells (kept >= KEEP_MIN and each unaffected
channel's change <= UNAFFECTED_MAX); it is stored in the checkpoint's manifest and from then on is that direction's
default everywhere (CLI, API, docks). benchmarks/translation_frontier.py checks the choice against the simulator's
ground truth.

One inversion per image serves the whole sweep: inverting to the highest strength keeps every intermediate state,
and a lower strength on the same grid regenerates from the state it needs.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import cells as cellmeasure
from .cellstats import overshoots
from .checkpoint import MANIFEST, NAMED_CHECKPOINTS, atomic_folder, resolve_checkpoint
from .models import load_checkpoint
from .dataset import load_folder
from .errors import CheckpointError, ConfigError, DataError
from .features import train_classifier
from .options import CALIBRATED_FIELDS, TranslateOptions, direction_key
from .translate import (Inverted, _finish, _pad, autocast_dtype, fits_whole, invert, is_direct, kept_channels,
                        paste_kept, regenerate, translate)

STRENGTHS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
GUIDANCES = (1.0, 2.0, 3.0, 4.0, 6.0)
NEGATIVES = ("source",)
# What counts as "the cells were kept": nuclei overlap, and the change of channels the condition does not touch.
# KEEP_MIN was set on the simulator (benchmarks/translation_frontier.py, docs/method.md): on the demo and
# translocation sweeps the choice with this bar matched, on average, the ground-truth optimum (the highest phenotype
# transfer with identity >= 0.9 of the segmentation's ceiling); 0.80 chose too strong settings, 0.86 too weak ones.
KEEP_MIN = 0.84
UNAFFECTED_MAX = 0.2
MOVED_TIE = 0.02  # settings within this of the best move count as tied; the one keeping more wins


@dataclass(frozen=True)
class Setting:
    """One point of a sweep."""

    strength: float
    guidance: float = 1.0
    negative: str = "source"
    inversion: str = "ddim"
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def options(self, base: TranslateOptions) -> TranslateOptions:
        return TranslateOptions(**{**base.record(), **asdict(self),
                                   "guidance_interval": tuple(self.guidance_interval)}).validate()

    def label(self) -> str:
        guided = f"w {self.guidance:g} ({self.negative})" if self.guidance != 1.0 else "no guidance"
        if self.guidance != 1.0 and tuple(self.guidance_interval) != (0.0, 1.0):
            guided += f" in t/T {self.guidance_interval[0]:g}-{self.guidance_interval[1]:g}"
        return f"s {self.strength:g}, {guided}" + ("" if self.inversion == "ddim" else f", {self.inversion}")


def grid(strengths: Sequence[float] = STRENGTHS, guidances: Sequence[float] = GUIDANCES,
         negatives: Sequence[str] = NEGATIVES, inversions: Sequence[str] = ("ddim",),
         intervals: Sequence[tuple[float, float]] = ((0.0, 1.0),)) -> list[Setting]:
    """Every combination; without guidance (w 1) once per strength, whatever the negative and interval."""
    settings = []
    for inversion in inversions:
        for s in strengths:
            for w in guidances:
                for negative in (negatives[:1] if w == 1.0 else negatives):
                    for interval in (intervals[:1] if w == 1.0 else intervals):
                        settings.append(Setting(float(s), float(w), negative, inversion,
                                                tuple(map(float, interval))))
    return settings


def sweep(model, images: np.ndarray, source: str, target: str, settings: Sequence[Setting],
          base: TranslateOptions | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict[Setting, np.ndarray]:
    """Translate a stack (N, C, Y, X) with every setting; returns {setting: stack in the input's dtype}.

    Images are inverted once per inversion method (to the highest strength asked for), in batches of whole
    fields; fields too large for the memory budget are translated one setting at a time instead.
    """
    if is_direct(model):
        raise ConfigError("A CycleGAN has no strength or guidance to calibrate.")
    base = (base or TranslateOptions()).validate()
    settings = list(dict.fromkeys(settings))
    stack = np.asarray(images)
    results = {s: np.empty_like(stack) for s in settings}
    if not fits_whole(model, stack.shape, base.batch_size):
        for i, setting in enumerate(settings):
            results[setting] = translate(model, stack, source, target, setting.options(base))
            if progress:
                progress(i + 1, len(settings))
        return results
    source_index, target_index = model.condition_index(source), model.condition_index(target)
    dtype = autocast_dtype(base.precision)
    batch = base.batch_size or max(1, min(8, len(stack)))
    chunks = [range(i, min(i + batch, len(stack))) for i in range(0, len(stack), batch)]
    generator = torch.Generator("cpu").manual_seed(base.seed)
    done, total = 0, len(chunks) * len(settings)
    for chunk in chunks:
        scaled = model.normalization.forward(stack[list(chunk)])
        padded, (height, width) = _pad(scaled, 0, model.size_multiple)
        with torch.inference_mode():
            clean = model.encode(torch.from_numpy(padded).to(model.device))
        for method in dict.fromkeys(s.inversion for s in settings):
            mine = [s for s in settings if s.inversion == method]
            deepest = max(s.strength for s in mine)
            inverted: Inverted = _finish(invert(model, clean, source_index, base.steps, strength=deepest,
                                                method=method, dtype=dtype, keep=True))
            for setting in mine:
                end = _finish(regenerate(model, inverted, target_index, source_index, setting.options(base),
                                         generator=generator, dtype=dtype))
                with torch.inference_mode():
                    out = model.decode(end).float().cpu().numpy()
                paste_kept(out, torch.from_numpy(padded), kept_channels(model, base.keep_channels))
                out = out[..., :height, :width]
                results[setting][list(chunk)] = model.normalization.inverse(out, stack.dtype)
                done += 1
                if progress:
                    progress(done, total)
    return results


# --- scores without ground truth -----------------------------------------------------------------------------------

def kept_score(originals: Sequence[np.ndarray], translated: Sequence[np.ndarray], channel_names: list[str]) -> float:
    """Mean IoU of nuclei segmented on each original and on its translation (1: the nuclei stayed)."""
    nuclear = cellmeasure.nuclear_channel(channel_names)
    return float(np.mean([cellmeasure.mask_iou(cellmeasure.segment_nuclei(o[nuclear]),
                                               cellmeasure.segment_nuclei(t[nuclear]))
                          for o, t in zip(originals, translated)]))


def channel_change(model, originals: np.ndarray, translated: np.ndarray) -> dict[str, float]:
    """RMSE between original and translation per channel, in the model's normalised units."""
    a = model.normalization.forward(np.asarray(originals))
    b = model.normalization.forward(np.asarray(translated))
    return {name: float(np.sqrt(np.mean((a[:, c] - b[:, c]) ** 2))) for c, name in enumerate(model.channel_names)}


def target_probability(classifier, images: Sequence[np.ndarray], target: str) -> float:
    """Mean probability the classifier gives the target condition."""
    return float(np.mean(classifier.probabilities(list(images))[:, classifier.conditions.index(target)]))


def choose(rows: list[dict], unaffected: Sequence[str] = (), real_moved: float | None = None) -> dict:
    """The row that moves most among those that keep the cells; within MOVED_TIE of the best, the one that keeps
    most. If none keeps the cells, the one that keeps most (and the caller is told).

    real_moved (the classifier's P(target) on real target images) is for translations that keep the nuclear channel
    as the original's, where `kept` is 1 by construction and moving most would overshoot the real condition: the
    gentlest setting (lowest strength, then guidance) that looks as much like the target as real target images do.
    """
    def keeps(row):
        return row["kept"] >= KEEP_MIN and all(row[f"change_{c}"] <= UNAFFECTED_MAX for c in unaffected)

    feasible = [r for r in rows if keeps(r)]
    if not feasible:
        return max(rows, key=lambda r: r["kept"])
    if real_moved is not None:
        enough = [r for r in feasible if r["moved"] >= real_moved - MOVED_TIE]
        if enough:
            return min(enough, key=lambda r: (r["strength"], r["guidance"]))
    best = max(r["moved"] for r in feasible)
    tied = [r for r in feasible if r["moved"] >= best - MOVED_TIE]
    return max(tied, key=lambda r: (r["kept"], -r["strength"], -r["guidance"]))


def calibrate(checkpoint, data: str | Path, source: str, target: str, out: str | Path, *,
              settings: Sequence[Setting] | None = None, unaffected: Sequence[str] | None = None,
              n: int | None = 16, steps: int = 20, classifier_steps: int = 400, seed: int = 0,
              batch_size: int | None = None, device: str = "auto", store: bool = True,
              keep_channels: Sequence[str] = (), progress: Callable[[int, int], None] | None = None) -> dict:
    """Sweep settings on held-out `source` images of `data`, write the frontier into `out` and (store=True) the
    chosen setting into the checkpoint's manifest as the default for source -> target. Returns the chosen row.

    unaffected: channel names the condition should not change (default: the nuclear channel).
    keep_channels: channels every setting keeps as the original's (TranslateOptions.keep_channels); stored with the
    choice. When they hold the nuclei, the choice is the gentlest setting that looks as treated as real target
    images (see `choose`).
    """
    settings = list(settings or grid())
    if not settings:
        raise ConfigError("Give at least one setting to calibrate.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new folder for the calibration.")
    path = resolve_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint.path
    if store and str(checkpoint) in NAMED_CHECKPOINTS:
        raise CheckpointError(f"{checkpoint!r} is a shipped checkpoint and cannot be changed; copy its folder "
                              f"({path}) and calibrate the copy, or calibrate with store=False (--no-store).")
    model = load_checkpoint(path, device=device) if isinstance(checkpoint, (str, Path)) else checkpoint
    if is_direct(model):
        raise ConfigError(f"{path}: a CycleGAN maps images directly; it has no strength or guidance to calibrate.")
    if source == target:
        raise ConfigError("Source and target are the same condition; give two different conditions.")
    for name in (source, target):
        model.condition_index(name)
    unaffected = list(unaffected) if unaffected else [model.channel_names[
        cellmeasure.nuclear_channel(model.channel_names)]]
    missing = [c for c in unaffected if c not in model.channel_names]
    if missing:
        raise ConfigError(f"Unaffected channel(s) {', '.join(missing)} are not in the checkpoint's channels "
                          f"({', '.join(model.channel_names)}).")
    images = load_folder(data)
    for name in (source, target):
        if name not in images.conditions:
            raise DataError(f"{images.root}: has no subfolder {name!r} (it has {', '.join(images.conditions)}); "
                            "calibration needs real images of both conditions.")
    source_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == source][:n]
    shapes = {im.shape for im in source_images}
    if len(shapes) != 1:
        raise DataError(f"{images.root / source}: calibration needs images of one size, found "
                        f"{', '.join(str(s) for s in sorted(shapes))}; crop them to one size.")
    classifier = train_classifier(images.images, images.labels, images.conditions, steps=classifier_steps, seed=seed)
    stack = np.stack(source_images)
    base = TranslateOptions(steps=steps, seed=seed, batch_size=batch_size,
                            keep_channels=tuple(keep_channels)).validate()
    kept_channels(model, base.keep_channels)
    translated = sweep(model, stack, source, target, settings, base, progress=progress)
    rows = []
    for setting, result in translated.items():
        change = channel_change(model, stack, result)
        rows.append({**asdict(setting), "moved": target_probability(classifier, result, target),
                     "kept": kept_score(stack, result, model.channel_names),
                     **{f"change_{name}": value for name, value in change.items()}})
    nuclear = model.channel_names[cellmeasure.nuclear_channel(model.channel_names)]
    target_images = [im for im, label in zip(images.images, images.labels) if images.conditions[label] == target]
    real_moved = target_probability(classifier, target_images, target) if nuclear in base.keep_channels else None
    chosen = choose(rows, [c for c in unaffected if c not in base.keep_channels], real_moved)
    feasible = chosen["kept"] >= KEEP_MIN
    # the chosen setting's translations exaggerating what differs: the sign its `moved` overrates them
    chosen_translation = next(result for row, result in zip(rows, translated.values()) if row is chosen)
    overshot = overshoots(stack, chosen_translation, target_images, model.channel_names)
    record = {
        **{k: chosen[k] for k in ("strength", "guidance", "negative", "inversion", "guidance_interval")},
        "keep_channels": list(base.keep_channels), "real_target_moved": real_moved,
        "steps": steps, "moved": chosen["moved"], "kept": chosen["kept"], "unaffected": unaffected,
        "keeps_cells": feasible, "overshot_measurements": overshot,
        "data": str(Path(data).resolve()), "images": len(stack),
        "classifier_accuracy": classifier.accuracy,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    baseline = {"moved": target_probability(classifier, stack, target), "kept": 1.0}
    with atomic_folder(out) as folder:
        _write_rows(folder / "frontier.csv", rows)
        (folder / "calibration.json").write_text(json.dumps(
            {"direction": direction_key(source, target), "chosen": record, "baseline_untranslated": baseline,
             "rules": {"kept_min": KEEP_MIN, "unaffected_max": UNAFFECTED_MAX, "moved_tie": MOVED_TIE},
             "rows": rows}, indent=2))
        frontier_figure(folder / "frontier.png", rows, chosen, baseline, f"{source} -> {target}")
    if store:
        store_calibration(path, source, target, record)
    return record


def store_calibration(checkpoint: str | Path, source: str, target: str, record: dict) -> None:
    """Write the chosen setting into the manifest (atomically: a new file renamed over the old one)."""
    manifest_path = resolve_checkpoint(checkpoint) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    entry = {k: record[k] for k in CALIBRATED_FIELDS if k in record}
    entry.update({k: v for k, v in record.items() if k not in entry})
    manifest.setdefault("calibration", {})[direction_key(source, target)] = entry
    tmp = manifest_path.with_name(f".{MANIFEST}.writing")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, manifest_path)


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def frontier_figure(path: Path, rows: list[dict], chosen: dict, baseline: dict, title: str,
                    x: str = "kept", y: str = "moved") -> Path:
    """Moved vs kept, one line per guidance scale through the strengths, the choice circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = Setting(1.0, row["guidance"], row["negative"], row["inversion"], tuple(row["guidance_interval"]))
        groups.setdefault(key, []).append(row)
    for key, members in groups.items():
        members.sort(key=lambda r: r["strength"])
        label = key.label().split(", ", 1)[1]
        ax.plot([r[x] for r in members], [r[y] for r in members], "o-", ms=3, label=label)
    ax.plot([baseline[x]], [baseline[y]], "k*", ms=10, label="untranslated")
    ax.plot([chosen[x]], [chosen[y]], "o", ms=14, mfc="none", mec="red", label="chosen")
    ax.set_xlabel({"kept": "kept: nuclei IoU, translation vs original"}.get(x, x))
    ax.set_ylabel({"moved": "moved: classifier P(target)"}.get(y, y))
    ax.set_title(f"{title} (points: strength)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
