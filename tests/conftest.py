"""Shared fixtures: a small simulated dataset and a tiny checkpoint trained on it (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_phendiff.core.simulate import simulate_dataset
from napari_phendiff.core.train import TrainConfig, train


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "cells"
    return simulate_dataset(out, "translocation", n_per_class=4, size=48, seed=3, cell_diameter=20.0)


@pytest.fixture(scope="session")
def tiny_checkpoint(sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "model"
    config = TrainConfig(data=sim_data, out=out, preset="tiny", image_size=32, steps=6, batch_size=4,
                         checkpoint_every=3, device="cpu", channel_names=["DNA", "reporter"])
    return train(config)


def write_tif(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(array), **kwargs)
    return path


def random_image(shape, seed=0, dtype=np.uint16, mean=800):
    return np.random.default_rng(seed).poisson(mean, shape).astype(dtype)


class CountingUNet:
    """Wraps the UNet to record each forward pass: its batch size, labels and spatial size."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def __call__(self, x, t, class_labels):
        self.calls.append((x.shape[0], class_labels.tolist(), tuple(x.shape[-2:])))
        return self.unet(x, t, class_labels=class_labels)
