"""Feature extractors for the evaluation: one vector per image, on which FID, KID and precision/recall are computed.

- "classifier" (default, works offline): a small CNN trained on the real images of the evaluation folder to tell
  the conditions apart. Its pooled penultimate layer gives the features, and its predictions give the
  classifier translation rate. It sees microscopy channels as they are, at any image size (global pooling).
- "inception:PATH": Inception-v3 (the FID standard) from weights the user has on disk (torch-fidelity's
  `pt_inception-2015-12-05` file), through torchmetrics; channels are mapped to RGB like the latent model does.

Numbers from different extractors are not comparable; every report names the extractor it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError
from .images import Normalization


class ConditionClassifier(nn.Module):
    """Four convolution stages, global average pooling (the features), one linear layer (the conditions)."""

    def __init__(self, channels: int, n_conditions: int, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        layers, previous = [], channels
        for i, w in enumerate(widths):
            layers += [
                nn.Conv2d(previous, w, 3, stride=1 if i == 0 else 2, padding=1),
                nn.GroupNorm(4, w),
                nn.SiLU(),
                nn.Conv2d(w, w, 3, padding=1),
                nn.GroupNorm(4, w),
                nn.SiLU(),
            ]
            previous = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(previous, n_conditions)
        self.num_features = previous

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class TrainedClassifier:
    """A condition classifier with the normalisation it was trained with and its held-out accuracy."""

    network: ConditionClassifier
    normalization: Normalization
    conditions: list[str]
    accuracy: float  # on real images held out from its training
    n_held_out: int
    name: str = "condition classifier"

    @torch.inference_mode()
    def _run(self, images: list[np.ndarray], what: str) -> np.ndarray:
        self.network.eval()
        out = []
        for image in images:  # one at a time: images may differ in size
            x = torch.from_numpy(self.normalization.forward(np.asarray(image))[None]).float()
            out.append((self.network.features(x) if what == "features" else self.network(x)).numpy()[0])
        return np.stack(out)

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, F) pooled penultimate-layer features of (C, Y, X) images."""
        return self._run(images, "features")

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, conditions) probability of each condition for each image."""
        return torch.from_numpy(self._run(images, "logits")).softmax(dim=1).numpy()

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Index of the most likely condition for each image."""
        return self._run(images, "logits").argmax(axis=1)


def train_classifier(
    images: list[np.ndarray],
    labels: list[int],
    conditions: list[str],
    *,
    steps: int = 400,
    batch_size: int = 16,
    crop: int = 48,
    held_out: float = 0.2,
    seed: int = 0,
) -> TrainedClassifier:
    """Train a condition classifier on real (C, Y, X) images: random crops, flips and rotations, AdamW.

    A share `held_out` of each condition's images is kept aside to measure its accuracy: a classifier that cannot
    tell the real conditions apart cannot judge translations, and the report says so.
    """
    label_array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(len(conditions)):
        members = rng.permutation(np.flatnonzero(label_array == c))
        if len(members) < 2:
            raise DataError(
                f"Condition {conditions[c]!r} has {len(members)} image(s); the condition classifier "
                "needs at least 2 per condition (one to train on, one to test on)."
            )
        n_test = max(1, int(round(held_out * len(members))))
        test_idx += list(members[:n_test])
        train_idx += list(members[n_test:])
    normalization = Normalization.fit([images[i] for i in train_idx])
    scaled = [normalization.forward(images[i]) for i in train_idx]
    crop = min(crop, *(min(im.shape[1:]) for im in scaled))
    torch.manual_seed(seed)
    network = ConditionClassifier(images[0].shape[0], len(conditions))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps)
    train_labels = label_array[train_idx]
    network.train()
    for _ in range(steps):
        picks = rng.integers(len(scaled), size=batch_size)
        batch = []
        for i in picks:
            image = scaled[i]
            y, x = rng.integers(image.shape[1] - crop + 1), rng.integers(image.shape[2] - crop + 1)
            patch = np.rot90(image[:, y : y + crop, x : x + crop], k=int(rng.integers(4)), axes=(1, 2))
            batch.append(np.ascontiguousarray(patch[:, :, ::-1] if rng.integers(2) else patch))
        loss = F.cross_entropy(
            network(torch.from_numpy(np.stack(batch)).float()), torch.from_numpy(train_labels[picks])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    trained = TrainedClassifier(
        network.eval(), normalization, list(conditions), accuracy=float("nan"), n_held_out=len(test_idx)
    )
    predicted = trained.predict([images[i] for i in test_idx])
    trained.accuracy = float(np.mean(predicted == label_array[test_idx]))
    return trained


class InceptionFeatures:
    """Inception-v3 pool features (2048) from local weights, via torchmetrics (needs torch-fidelity installed)."""

    def __init__(self, weights: str | Path, normalization: Normalization):
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise DataError(
                f"{weights}: Inception weights not found. Give the path of torch-fidelity's "
                "pt_inception-2015-12-05 weights file, or use the offline default --features classifier."
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.network = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights)
            )
        except ModuleNotFoundError as exc:
            raise DataError(
                "Inception features need torch-fidelity: pip install torch-fidelity "
                "(or use the offline default --features classifier)."
            ) from exc
        self.normalization = normalization
        self.name = f"Inception-v3 ({weights.name})"

    @torch.inference_mode()
    def features(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        for image in images:
            rgb = to_rgb(self.normalization.forward(np.asarray(image)))
            uint8 = np.clip((rgb + 1) * 127.5, 0, 255).astype(np.uint8)
            out.append(self.network(torch.from_numpy(uint8[None])).reshape(-1).numpy())
        return np.stack(out)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(C, Y, X) with 1-3 channels to 3 channels: grey is repeated, two channels fill red and green."""
    channels = image.shape[0]
    if channels == 1:
        return np.repeat(image, 3, axis=0)
    if channels == 2:
        return np.concatenate([image, np.full_like(image[:1], image.min())], axis=0)
    if channels == 3:
        return image
    raise DataError(
        f"Inception features take 1-3 channels, these images have {channels}. Use the default "
        "--features classifier, which takes any number of channels."
    )


CLASSIFIER_FOLDER = "condition_classifier"  # in a checkpoint: the classifier its last stored calibration trusted


def save_classifier(trained: TrainedClassifier, checkpoint: Path) -> Path:
    """Write `trained` into <checkpoint>/condition_classifier (weights in safetensors, the rest in JSON), all at once:
    reveal (core/reveal.py) scores masks with it after a calibration."""
    import json

    from safetensors.torch import save_file

    from .writing import atomic_folder

    with atomic_folder(Path(checkpoint) / CLASSIFIER_FOLDER) as folder:
        save_file(
            {k: v.contiguous() for k, v in trained.network.state_dict().items()}, folder / "classifier.safetensors"
        )
        (folder / "classifier.json").write_text(
            json.dumps(
                {
                    "conditions": trained.conditions,
                    "channels": trained.network.body[0].in_channels,
                    "width": trained.network.body[0].out_channels,
                    "accuracy": trained.accuracy,
                    "n_held_out": trained.n_held_out,
                    "normalization": trained.normalization.to_dict(),
                },
                indent=2,
            )
        )
    return Path(checkpoint) / CLASSIFIER_FOLDER


def stored_classifier(checkpoint: Path | None, target: str | None = None) -> TrainedClassifier | None:
    """The classifier a calibration stored in `checkpoint` (one that knows `target` when it is given), or None when
    there is none or it cannot be read: reveal then chooses its masks by the cells' measurements alone."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(checkpoint) / CLASSIFIER_FOLDER if checkpoint is not None else None
    if folder is None or not (folder / "classifier.json").is_file():
        return None
    try:
        record = json.loads((folder / "classifier.json").read_text())
        network = ConditionClassifier(record["channels"], len(record["conditions"]), record["width"])
        network.load_state_dict(load_file(folder / "classifier.safetensors"))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None
    if target is not None and target not in record["conditions"]:
        return None
    return TrainedClassifier(
        network.eval(),
        Normalization.from_dict(record["normalization"]),
        list(record["conditions"]),
        float(record["accuracy"]),
        int(record["n_held_out"]),
    )
