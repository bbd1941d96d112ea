"""`phendiff generalization`: does a model generalise, or does it memorise its training images?

The analysis of the Phen-LDiff paper (after Kadkhodaie et al.): train two models on disjoint subsets of K images per
condition, then generate from the same seeds with both.
- Generalisation: when the two models learned the same distribution, they map the same noise to nearly the same
  image, so the similarity of same-seed images is near 1 even though they never saw a common image.
- Memorisation: a model that memorised its training set returns copies of it, so the similarity of each generated
  image to its nearest training image is near 1 (and the two models disagree, having memorised different images).
Similarity is the cosine similarity of mean-centred images (Pearson correlation of pixels), so the uniform dark
background does not make every pair look alike.
- Not yet decided: a model that has learned little returns images that still resemble the noise they started from,
  and two such models agree because they were given the same noise. The similarity of each generated image to its
  starting noise is the check: only when the two models agree more than that does their agreement mean anything.
  The two models also start from different random weights (seeds derived from the training seed), since models
  sharing their initial weights agree before they have learned anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import atomic_folder, claim_new_folder
from .models import KINDS, load_checkpoint
from .dataset import scan_folder
from .errors import ConfigError, DataError
from .images import read_image
from .options import TrainConfig, check_count
from .training.run import TrainEvent, iter_train
from .walk import SAMPLE_STEPS, sample, starting_noise


def generalization(
    data: str | Path,
    out: str | Path,
    n_per_class: int,
    config: TrainConfig,
    *,
    n_samples: int = 16,
    steps: int = SAMPLE_STEPS,
    seed: int = 0,
    on_train_event: Callable[[str, TrainEvent], None] | None = None,
) -> dict:
    """Train two models (settings from `config`, its data/out ignored) on disjoint subsets of `n_per_class` images
    per condition of `data`, generate `n_samples` images per condition from the same seeds, and write histograms
    and a JSON summary into `out` (with the two models in out/model_a and out/model_b).

    `on_train_event(name, event)` is called with every training event of model "a" and "b".
    """
    out = claim_new_folder(out, "the analysis")
    _check_settings(config, n_per_class, n_samples, steps)
    folder = scan_folder(data)
    subsets = _disjoint_subsets(folder, n_per_class, seed)
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    seeds = model_seeds(config.seed)
    models = _train_pair(config, subsets, work, seeds, on_train_event)
    same_seed, nearest, noise = _similarities(models, folder.conditions, subsets, n_samples, steps, seed)
    all_same, all_nearest, all_noise = _pooled(same_seed, nearest, noise)
    medians = [float(np.median(v)) for v in (all_same, all_nearest, all_noise)]
    results: dict[str, Any] = {
        "conditions": _medians_per_condition(folder.conditions, same_seed, nearest, noise),
        "same_seed_similarity_median": medians[0],
        "nearest_training_similarity_median": medians[1],
        "starting_noise_similarity_median": medians[2],
        "verdict": _verdict(*medians),
        **_settings(data, config, n_per_class, n_samples, steps, seed, seeds),
    }
    try:
        _write(out, work, models, results, all_same, all_nearest, all_noise)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _check_settings(config: TrainConfig, n_per_class: int, n_samples: int, steps: int) -> None:
    """Refuse counts below 1 and a kind that cannot generate from noise, before anything is trained."""
    for name, value in (("n_per_class", n_per_class), ("n_samples", n_samples), ("steps", steps)):
        check_count(name, value)
    if not config.kind.generates:
        able = ", ".join(name for name, kind in KINDS.items() if kind.generates)
        raise ConfigError(
            f"The generalization analysis generates images from noise, which a {config.model} model "
            f"cannot do; train one of: {able}."
        )


def _pooled(same_seed: dict, nearest: dict, noise: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three similarities of every condition (and, for nearest and noise, of both models) in one array each."""
    return (
        np.concatenate(list(same_seed.values())),
        np.concatenate([v for per in nearest.values() for v in per.values()]),
        np.concatenate([v for per in noise.values() for v in per.values()]),
    )


def _medians_per_condition(conditions: list[str], same_seed: dict, nearest: dict, noise: dict) -> dict:
    """The median of each similarity, condition by condition."""
    return {
        condition: {
            "same_seed_similarity_median": float(np.median(same_seed[condition])),
            "nearest_training_similarity_median": float(np.median(np.concatenate(list(nearest[condition].values())))),
            "starting_noise_similarity_median": float(np.median(np.concatenate(list(noise[condition].values())))),
        }
        for condition in conditions
    }


def _settings(
    data: str | Path,
    config: TrainConfig,
    n_per_class: int,
    n_samples: int,
    steps: int,
    seed: int,
    seeds: dict[str, int],
) -> dict[str, Any]:
    """How the analysis was run, for generalization.json: its sizes, the two models' training and the data."""
    return {
        "n_per_class": n_per_class,
        "n_samples_per_condition": n_samples,
        "steps": steps,
        "seed": seed,
        "model": config.model,
        "training": {
            "steps": config.steps,
            "preset": config.preset,
            "image_size": config.image_size,
            "adapter": config.adapter,
            "seeds": seeds,
        },
        "data": str(Path(data).resolve()),
        "similarity": "cosine similarity of mean-centred images, in model a's normalised units (starting noise: in "
        "each model's own units, compared where the model diffuses: pixels or latents)",
    }


def _train_pair(
    config: TrainConfig,
    subsets: dict[str, dict[str, list[Path]]],
    work: Path,
    seeds: dict[str, int],
    on_train_event: Callable[[str, TrainEvent], None] | None,
) -> dict:
    """Models a and b, each trained on its own subset (copied into `work`, where the model is written too)."""
    models = {}
    for name, files in subsets.items():
        subset = work / f"data_{name}"
        for condition, paths in files.items():
            (subset / condition).mkdir(parents=True)
            for path in paths:
                shutil.copy2(path, subset / condition / path.name)
        run = replace(config, data=subset, out=work / f"model_{name}", resume=False, seed=seeds[name])
        for event in iter_train(run):
            if on_train_event is not None:
                on_train_event(name, event)
        models[name] = load_checkpoint(run.out, device=config.device)
    return models


def _similarities(
    models: dict,
    conditions: list[str],
    subsets: dict[str, dict[str, list[Path]]],
    n_samples: int,
    steps: int,
    seed: int,
) -> tuple[dict, dict, dict]:
    """Per condition, the images both models generate from the same seeds compared: with each other (same seed),
    with the nearest training image of each model's subset, and with the noise each started from."""
    reference = models["a"].normalization  # one intensity scale for every image compared
    same_seed, nearest, noise = {}, {}, {}
    for condition in conditions:
        raw = {name: sample(model, condition, n_samples, steps=steps, seed=seed) for name, model in models.items()}
        generated = {name: reference.forward(images) for name, images in raw.items()}
        same_seed[condition] = _similarity(generated["a"], generated["b"])
        nearest[condition] = {
            name: nearest_training(
                generated[name], [reference.forward(read_image(p)) for p in subsets[name][condition]]
            )
            for name in models
        }
        noise[condition] = {name: _noise_similarity(model, raw[name], seed) for name, model in models.items()}
    return same_seed, nearest, noise


def _write(
    out: Path, work: Path, models: dict, results: dict, same_seed: np.ndarray, nearest: np.ndarray, noise: np.ndarray
) -> None:
    """The analysis (JSON, similarities, histograms) and the two models with their data, into `out` at once."""
    with atomic_folder(out) as final:
        (final / "generalization.json").write_text(json.dumps(results, indent=2))
        np.savez(final / "similarities.npz", same_seed=same_seed, nearest_training=nearest, starting_noise=noise)
        _histograms(final / "generalization.png", same_seed, nearest, results)
        for name in models:
            shutil.move(str(work / f"model_{name}"), final / f"model_{name}")
            shutil.move(str(work / f"data_{name}"), final / f"data_{name}")


def model_seeds(seed: int) -> dict[str, int]:
    """Training seeds of model a and b: different initial weights (and crops), reproducible from one seed."""
    return {"a": seed, "b": seed + 1}


def _disjoint_subsets(folder, n_per_class: int, seed: int) -> dict[str, dict[str, list[Path]]]:
    short = {c: len(f) for c, f in folder.files.items() if len(f) < 2 * n_per_class}
    if n_per_class < 1 or short:
        listing = ", ".join(f"{c}: {k}" for c, k in short.items())
        raise DataError(
            f"{folder.root}: two disjoint subsets of {n_per_class} images per condition need "
            f"{2 * n_per_class} per condition ({listing}). Lower --n-per-class."
        )
    rng = np.random.default_rng(seed)
    subsets: dict[str, dict[str, list[Path]]] = {"a": {}, "b": {}}
    for condition, files in folder.files.items():
        order = rng.permutation(len(files))
        subsets["a"][condition] = [files[i] for i in order[:n_per_class]]
        subsets["b"][condition] = [files[i] for i in order[n_per_class : 2 * n_per_class]]
    return subsets


def _centred(images: np.ndarray) -> np.ndarray:
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of mean-centred images, pair by pair."""
    return np.sum(_centred(a) * _centred(b), axis=1)


def nearest_training(generated: np.ndarray, training: list[np.ndarray]) -> np.ndarray:
    """For each generated (C, S, S) image, the highest similarity to any S x S window of any training image
    (stride S/4, the four rotations and their mirrors: training saw crops under those augmentations)."""
    size = generated.shape[-1]
    stride = max(1, size // 4)
    windows = []
    for image in training:
        for y in range(0, image.shape[1] - size + 1, stride):
            for x in range(0, image.shape[2] - size + 1, stride):
                crop = image[:, y : y + size, x : x + size]
                for k in range(4):
                    rotated = np.rot90(crop, k, axes=(1, 2))
                    windows += [rotated, rotated[:, :, ::-1]]
    if not windows:
        raise DataError(f"Training images are smaller than the generated images ({size} px).")
    bank = _centred(np.stack(windows))
    return (_centred(generated) @ bank.T).max(axis=1)


def _noise_similarity(model, generated: np.ndarray, seed: int) -> np.ndarray:
    """Similarity of each image `sample(model, ..., seed=seed)` generated to the noise it started from, where the
    model diffuses (the normalised image, or a latent model's latents)."""
    noise = starting_noise(model, len(generated), seed)
    with torch.inference_mode():
        diffused = model.encode(torch.from_numpy(model.normalization.forward(generated)).to(model.device))
    return _similarity(diffused.float().cpu().numpy(), noise.numpy())


def _verdict(same_seed: float, nearest: float, noise: float) -> str:
    """The highest of the three similarities decides."""
    if noise >= max(same_seed, nearest):
        return (
            "not decided: the generated images still resemble the noise they started from more than anything "
            "else, so the two models agree only because they were given the same noise; train longer (or "
            "generate with more --sample-steps) before reading this analysis"
        )
    if same_seed > nearest:
        return "generalises: the two models agree with each other more than with any training image"
    return "memorises: generated images resemble training images more than the other model's images"


def _histograms(path: Path, same_seed: np.ndarray, nearest: np.ndarray, results: dict) -> Path:
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe inside napari

    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    bins = np.linspace(-0.2, 1, 49)
    axes[0].hist(same_seed, bins=bins, color="tab:blue")
    axes[0].set_title(
        f"model a vs model b, same seed\nmedian {np.median(same_seed):.3f} (generalisation → 1)", fontsize=9
    )
    axes[1].hist(nearest, bins=bins, color="tab:red")
    axes[1].set_title(
        f"generated vs nearest training image\nmedian {np.median(nearest):.3f} (memorisation → 1)", fontsize=9
    )
    for ax in axes:
        ax.set_xlabel("cosine similarity (mean-centred)")
    verdict = results["verdict"].split(":")[0]
    fig.suptitle(
        f"{results['model']} model, {results['n_per_class']} training images per condition; generated vs "
        f"starting noise: median {results['starting_noise_similarity_median']:.3f}; {verdict}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
