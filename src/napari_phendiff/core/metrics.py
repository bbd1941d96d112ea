"""Distances between sets of images, computed on features (one vector per image) from one feature extractor.

FID and KID come from torchmetrics, fed with features we computed already (so the same features serve FID, KID
and precision/recall, and the extractor can be any network, see features.py). Numbers from different extractors
are not comparable, so every result carries the extractor's name.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .errors import DataError


class _Precomputed(torch.nn.Module):
    """The 'network' handed to torchmetrics when the features are already computed: it passes them through."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (0 for identical sets)."""
    real, fake = _check(real, fake, minimum=2)
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    return float(metric.compute())


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (polynomial-kernel MMD, unbiased): mean and std over random subsets."""
    real, fake = _check(real, fake, minimum=2)
    subset_size = min(len(real), len(fake), 1000)
    with warnings.catch_warnings():  # it warns that it keeps all features: ours are few and small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=subset_size)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    with _seeded(seed):  # torchmetrics draws the subsets with torch's global generator
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), by k-nearest-neighbour manifolds.

    Precision: share of generated samples inside the real manifold (the union of balls around each real sample
    reaching its k-th nearest real neighbour), i.e. how realistic they are. Recall: share of real samples inside
    the generated manifold, i.e. how much of the real variety is covered. Written here because torchmetrics
    has no implementation of it.
    """
    real, fake = _check(real, fake, minimum=k + 1)
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    return _coverage(real_t, fake_t, k), _coverage(fake_t, real_t, k)


def _coverage(manifold: torch.Tensor, queries: torch.Tensor, k: int) -> float:
    """Share of `queries` within the k-NN radius of at least one sample of `manifold`."""
    within = torch.cdist(manifold, manifold)
    radii = within.kthvalue(k + 1, dim=1).values  # k+1: the nearest is the sample itself, at distance 0
    across = torch.cdist(queries, manifold)
    return float((across <= radii[None, :]).any(dim=1).double().mean())


def cycle_distance(images: np.ndarray, round_trip: np.ndarray) -> tuple[float, float]:
    """L2 distance between images and their A->B->A round trips: (mean per image, mean square per pixel).

    Give normalised images (same normalisation for both) so channels and bit depths compare. The per-pixel
    figure does not grow with the image size, so results on different sizes compare.
    """
    a, b = np.asarray(images, np.float64), np.asarray(round_trip, np.float64)
    if a.shape != b.shape:
        raise DataError(f"images {a.shape} and round trips {b.shape} differ in shape")
    squared = (a - b) ** 2
    per_image = np.sqrt(squared.reshape(len(a), -1).sum(axis=1))
    return float(per_image.mean()), float(squared.mean())


def effect_size(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d of b against a (pooled standard deviation): how many spreads apart the two means are."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((b.mean() - a.mean()) / pooled) if pooled > 0 else float("nan")


def rank_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U test p-value: could a and b come from the same distribution?"""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 1 or len(b) < 1:
        return float("nan")
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _check(real: np.ndarray, fake: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    for name, array in (("real", real), ("generated", fake)):
        if array.ndim != 2:
            raise DataError(f"{name} features must be (samples, features), got shape {array.shape}")
        if len(array) < minimum:
            raise DataError(
                f"Too few {name} images to compare distributions: {len(array)}, need at least "
                f"{minimum}. Evaluate on more images."
            )
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"real and generated features differ in length: {real.shape[1]} vs {fake.shape[1]}")
    return real, fake


class _seeded:
    """Run a block with torch's global RNG seeded, restoring its state afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        torch.random.set_rng_state(self.state)
