"""A labelled folder (one subfolder per condition) -> validated images -> training samples.

The training stream is a pure function of (seed, step, process rank): the batch of step s is the same whether
training ran straight through or was interrupted and resumed, and each process of a multi-GPU run draws its own
batches. That is why sampling is written here rather than left to a shuffling DataLoader, whose state would have
to be pickled to resume exactly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, PhenDiffWarning
from .options import condition_name
from .images import Normalization, is_image_file, read_channel_names, read_image, resize_fields

MAX_LISTED_PROBLEMS = 10


@dataclass
class LabelledFolder:
    """What a labelled folder holds, found without reading pixels (fast enough for a dock to show live)."""

    root: Path
    conditions: list[str]
    files: dict[str, list[Path]]

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(f) for c, f in self.files.items()}


def scan_folder(root: str | Path) -> LabelledFolder:
    """List conditions (non-hidden subfolders) and their image files; raise DataError if unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder. Give a folder with one subfolder of images per condition.")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    files = {condition_name(p.name): sorted(f for f in p.iterdir() if is_image_file(f)) for p in subfolders}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise DataError(
            f"{root}: condition folder(s) {', '.join(empty)} contain no images (.tif, .tiff, .png, .jpg). "
            "Add images or remove the empty folders."
        )
    if len(files) < 2:
        found = f"only '{next(iter(files))}'" if files else "none"
        loose = [f.name for f in root.iterdir() if is_image_file(f)][:3]
        hint = f" Images lying directly in the folder ({', '.join(loose)}...) are not used." if loose else ""
        raise DataError(
            f"{root}: needs at least two condition subfolders (e.g. {root}/untreated and {root}/treated), found "
            f"{found}.{hint} Put each condition's images in a subfolder named after the condition."
        )
    return LabelledFolder(root=root, conditions=list(files), files=files)


@dataclass
class LabelledImages:
    """All images of a labelled folder, read and checked: (C, Y, X) arrays with integer condition labels."""

    root: Path
    conditions: list[str]
    images: list[np.ndarray]
    labels: list[int]
    paths: list[Path]

    @property
    def channels(self) -> int:
        return self.images[0].shape[0]

    def recorded_channel_names(self) -> list[str] | None:
        """The channel names the files record (ImageJ `Labels`), if those that record any agree; None if none do.

        Files that record different names or orders are refused: one of them holds its channels in another order,
        and a model trained on both would learn a mix.
        """
        found: dict[tuple[str, ...], Path] = {}
        for path in self.paths:
            names = read_channel_names(path)
            if names is not None and len(names) == self.channels:
                found.setdefault(tuple(names), path)
        if len(found) > 1:
            listed = "; ".join(f"{path}: {', '.join(names)}" for names, path in list(found.items())[:3])
            raise DataError(
                f"{self.root}: the images record different channel names or orders ({listed}). Save "
                "them all with the same channels in the same order, or give the names yourself "
                "(--channel-names / the Train dock's channel names)."
            )
        return list(next(iter(found))) if found else None


def load_folder(root: str | Path, min_size: int | None = None) -> LabelledImages:
    """Read every image of a labelled folder, checking all of them before anything is trained or written.

    All problems are collected and reported together, each with its file, so one run shows everything to fix.
    """
    folder = scan_folder(root)
    images, labels, paths, problems = [], [], [], []
    for label, condition in enumerate(folder.conditions):
        for path in folder.files[condition]:
            try:
                image = read_image(path)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if min_size is not None and min(image.shape[1:]) < min_size:
                problems.append(
                    f"{path}: is {image.shape[1]}x{image.shape[2]} px, smaller than the model's image size "
                    f"{min_size} px. Use a smaller --image-size, or --resize to scale whole images to the model size."
                )
                continue
            images.append(image)
            labels.append(label)
            paths.append(path)
    if not problems:
        problems += _channel_problems(images, paths) + _dtype_problems(images, paths)
    if problems:
        more = f"\n... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DataError(
            f"{folder.root}: {len(problems)} problem(s) with the images:\n- "
            + "\n- ".join(problems[:MAX_LISTED_PROBLEMS])
            + more
        )
    _warn_about_label_images(images, labels, folder.conditions, folder.root)
    return LabelledImages(root=folder.root, conditions=folder.conditions, images=images, labels=labels, paths=paths)


def _dtype_problems(images: list[np.ndarray], paths: list[Path]) -> list[str]:
    """One normalisation and one output dtype serve the whole set: mixed dtypes (uint8 beside uint16) would put
    the same intensity at two places on its scale."""
    kinds: dict[str, list[Path]] = {}
    for image, path in zip(images, paths):
        kinds.setdefault(str(image.dtype), []).append(path)
    if len(kinds) <= 1:
        return []
    listing = "; ".join(f"{d}: {len(p)} files, e.g. {p[0]}" for d, p in sorted(kinds.items()))
    return [
        f"images have different data types ({listing}). Convert them to one type (as acquired, e.g. all "
        "uint16) so intensities mean the same in every image."
    ]


def _warn_about_label_images(images: list[np.ndarray], labels: list[int], conditions: list[str], root) -> None:
    """A condition whose images hold only a few whole values looks like segmentation labels, not intensities."""
    for index, condition in enumerate(conditions):
        sample = [image for image, label in zip(images, labels) if label == index][:8]
        if sample and all(image.dtype.kind in "ui" and np.unique(image[:, ::2, ::2]).size <= 16 for image in sample):
            warnings.warn(
                f"{root}/{condition}: its images hold at most 16 distinct values, as label masks do, "
                "not fluorescence intensities. Train on the raw images.",
                PhenDiffWarning,
                stacklevel=3,
            )


def _channel_problems(images: list[np.ndarray], paths: list[Path]) -> list[str]:
    counts: dict[int, list[Path]] = {}
    for image, path in zip(images, paths):
        counts.setdefault(image.shape[0], []).append(path)
    if len(counts) <= 1:
        return []
    listing = "; ".join(f"{n} channel(s): {len(p)} files, e.g. {p[0]}" for n, p in sorted(counts.items()))
    return [
        f"images have different channel counts ({listing}). Every image must have the same channels in the "
        "same order; convert or remove the odd ones."
    ]


class TrainingSamples:
    """Random crops (or whole resized images) with dihedral augmentation, balanced over conditions."""

    def __init__(
        self,
        data: LabelledImages,
        normalization: Normalization,
        image_size: int,
        *,
        resize: bool = False,
        seed: int = 0,
    ):
        self.size = image_size
        self.seed = seed
        self.n_conditions = len(data.conditions)
        scaled = [normalization.forward(image) for image in data.images]
        if resize:
            scaled = [resize_fields(im, (image_size, image_size)) for im in scaled]
        self.images = scaled
        labels = np.asarray(data.labels)
        self.by_condition = [np.flatnonzero(labels == c) for c in range(self.n_conditions)]

    def batch(self, step: int, rank: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for one training step of one process: images (B, C, S, S) float32 and labels (B,)."""
        rng = np.random.default_rng([self.seed, step, rank])
        labels = rng.integers(self.n_conditions, size=batch_size)
        crops = []
        for label in labels:
            image = self.images[rng.choice(self.by_condition[label])]
            y = rng.integers(image.shape[1] - self.size + 1)
            x = rng.integers(image.shape[2] - self.size + 1)
            crop = image[:, y : y + self.size, x : x + self.size]
            crop = np.rot90(crop, k=int(rng.integers(4)), axes=(1, 2))
            if rng.integers(2):
                crop = crop[:, :, ::-1]
            crops.append(np.ascontiguousarray(crop))
        return torch.from_numpy(np.stack(crops)), torch.from_numpy(labels.astype(np.int64))


class SampleStream(torch.utils.data.IterableDataset):
    """Batches for steps [start, stop) of one process; DataLoader workers split the steps round-robin, which
    keeps the order (the DataLoader reads workers in turn)."""

    def __init__(self, samples: TrainingSamples, start: int, stop: int, rank: int, batch_size: int):
        self.samples, self.start, self.stop, self.rank, self.batch_size = samples, start, stop, rank, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + worker, self.stop, workers):
            yield self.samples.batch(step, self.rank, self.batch_size)
