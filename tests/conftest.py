"""Shared fixtures: a small simulated dataset and a tiny checkpoint trained on it (built once per session)."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import tifffile
import torch

from napari_phendiff.core.simulate import simulate_dataset
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.training.run import train


# bitsandbytes (the 8-bit optimizer; diffusers imports it when installed) warns at import about optional 4-bit CPU
# kernels nothing here uses, as the CLI silences it
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """What napari-phendiff caches (SVDiff's decompositions) goes to a folder of the test session, not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PHENDIFF_CACHE", str(folder))
        yield folder


@pytest.fixture
def isolated_recent_checkpoints(tmp_path, monkeypatch):
    """Keep the docks' recent-checkpoint list of a test out of the user's own (imports Qt: dock tests only)."""
    from napari_phendiff.widgets import _shared

    monkeypatch.setattr(_shared, "RECENT_FILE", tmp_path / "recent.json")
    _shared.CHECKPOINTS.recent = ()
    yield _shared.CHECKPOINTS
    _shared.CHECKPOINTS.recent = ()


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "cells"
    return simulate_dataset(out, "translocation", n_per_class=4, size=48, seed=3, cell_diameter=20.0)


@pytest.fixture(scope="session")
def tiny_checkpoint(sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "model"
    config = TrainConfig(
        data=sim_data,
        out=out,
        preset="tiny",
        image_size=32,
        steps=6,
        batch_size=4,
        checkpoint_every=3,
        device="cpu",
        channel_names=["DNA", "reporter"],
    )
    return train(config)


@pytest.fixture
def every_step_whole(monkeypatch):
    """Pixel translations run the whole network on every step (deep cache off), as the tests of the walk's own
    network calls expect; the deep cache has its own tests."""
    from napari_phendiff.core.models import KINDS

    monkeypatch.setitem(KINDS, "pixel", dataclasses.replace(KINDS["pixel"], deep_cache=1))


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


# The random VAE's latents have a standard deviation of about 0.4; Stable Diffusion's scaling factor is chosen to
# bring them to about 1, and so is this one.
SCALING_FACTOR = 2.5


def tiny_base(folder, cross_attention_dim=32, text_encoder=True, slots=1):
    """A Stable Diffusion 2.x-shaped pipeline, tiny and random: UNet (two levels, cross-attention), VAE (factor 2),
    SD 2's PNDM scheduler config, and optionally a CLIP text encoder with a character-level tokenizer. With `slots`
    > 1 the VAE takes one channel and the UNet one block of latents per slot, as the shipped base."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4 * slots,
        out_channels=4 * slots,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3 if slots == 1 else 1,
        out_channels=3 if slots == 1 else 1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        latent_channels=4,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        sample_size=16,
        layers_per_block=1,
        scaling_factor=SCALING_FACTOR,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    tokenizer = encoder = None
    if text_encoder:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        for char in "abcdefghijklmnopqrstuvwxyz0123456789":
            vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
        words = folder.parent / f"{folder.name}-words"
        words.mkdir(parents=True)
        (words / "vocab.json").write_text(json.dumps(vocab))
        (words / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=77)
        encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=cross_attention_dim,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def wait_for(qtbot, worker, timeout=120_000):
    """Wait until a dock has handled the end of its worker's run (a fast run may end before a signal could be
    waited for, so this waits on the dock's own flag)."""
    assert worker is not None
    qtbot.waitUntil(lambda: worker.dock_done, timeout=timeout)
