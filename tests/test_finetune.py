"""Fine-tuning offline: the shipped microscopy base loads by name and a LoRA of it trains, is small, moves with its
folder and translates; a pixel run starts from any pixel checkpoint with the new folder's conditions; a hub id
without network fails in one line within seconds."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

import napari_phendiff as pd
from napari_phendiff.cli import main as cli
from napari_phendiff.core.calibrate import _base_options
from napari_phendiff.core.errors import CheckpointError, ConfigError
from napari_phendiff.core.models import bases
from napari_phendiff.core.models.bases import DEFAULT_BASE, SHIPPED_BASES
from napari_phendiff.core.models.latent import load_base, native_image_size
from napari_phendiff.core.simulate import simulate_dataset, simulate_field
from napari_phendiff.core.training.run import kept_nucleus
from napari_phendiff.core.translate import translation_options


@pytest.fixture(scope="module")
def lora(sim_data, tmp_path_factory):
    """A LoRA of the shipped base, 3 steps on 48-px simulated cells at the base's native 64 px (resized)."""
    out = tmp_path_factory.mktemp("finetune") / "lora"
    return pd.train(
        pd.TrainConfig(
            data=sim_data,
            out=out,
            model="latent",
            steps=3,
            batch_size=2,
            checkpoint_every=2,
            resize=True,
            device="cpu",
            channel_names=["DNA", "reporter"],
        )
    )


def test_the_shipped_base_loads_offline_by_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bases, "hub_reachable", lambda timeout=3.0: pytest.fail("the network was asked"))
    unet, vae, schedule = load_base(DEFAULT_BASE)
    assert native_image_size(DEFAULT_BASE) == 64  # 16 x 16 latents, a 4x autoencoder
    # one 16-channel block of latents per RGB slot, each channel encoded on its own (docs/benchmarks.md base_vae_slots)
    assert vae.config.in_channels == 1 and vae.config.latent_channels == 16 and unet.config.in_channels == 48
    assert schedule["prediction_type"] == "v_prediction" and not schedule["clip_sample"]
    size = sum(f.stat().st_size for f in SHIPPED_BASES[DEFAULT_BASE].rglob("*.safetensors"))
    assert size < 50e6  # a few tens of MB at most
    info = json.loads((SHIPPED_BASES[DEFAULT_BASE] / "base.json").read_text())
    assert info["held_out_phenotype"] == "translocation"
    assert not any(name.startswith("translocation") for name in info["corpus"]["images_per_kind"])


def test_the_latent_model_fine_tunes_the_shipped_base_by_default(sim_data, tmp_path):
    config = pd.TrainConfig(data=sim_data, out=tmp_path / "m", model="latent")
    assert config.base == DEFAULT_BASE and config.adapter == "lora"
    info = json.loads((SHIPPED_BASES[DEFAULT_BASE] / "base.json").read_text())
    assert (config.steps, config.lr) == (info["fine_tune_steps"], info["learning_rates"]["lora"])
    assert pd.TrainConfig(data=sim_data, out=tmp_path / "m").steps == 5000  # from scratch: the usual default
    assert pd.TrainConfig(data=sim_data, out=tmp_path / "m", model="latent", steps=7).steps == 7


def test_a_lora_of_the_shipped_base_is_small_portable_and_translates(lora, tmp_path):
    manifest = json.loads((lora / "phendiff.json").read_text())
    assert manifest["base"]["source"] == "microscopy" and len(manifest["base"]["weights_sha256"]) == 64
    assert "the base's own starting embedding" in manifest["conditioning"]["initialised_from"]
    info = json.loads((SHIPPED_BASES[DEFAULT_BASE] / "base.json").read_text())
    # a fresh fine-tune translates at its measured setting, its DNA channel kept (the walk holds the nuclei)
    measured = {k: v for k, v in info["translation"].items() if k != "keep_nuclear"}
    assert info["translation"]["keep_nuclear"] and manifest["translation_defaults"] == {
        **measured,
        "keep_channels": ["DNA"],
    }
    options, sources = translation_options(pd.load_checkpoint(lora, device="cpu"), "untreated", "TNFa")
    assert (options.strength, sources["strength"]) == (info["translation"]["strength"], "model default")
    assert (options.keep_channels, sources["keep_channels"]) == (("DNA",), "model default")
    assert (options.steps, sources["steps"]) == (info["translation"]["steps"], "model default")  # its finer grid
    undone, sources = translation_options(
        pd.load_checkpoint(lora, device="cpu"), "untreated", "TNFa", keep_channels=["none"]
    )
    assert (undone.keep_channels, sources["keep_channels"]) == ((), "given")
    # calibrate sweeps with the same defaults, so the choice it stores keeps the DNA too, made at the model's steps
    swept = _base_options(pd.load_checkpoint(lora, device="cpu"), None, 0, None, None)
    assert (swept.keep_channels, swept.steps) == (("DNA",), info["translation"]["steps"])
    assert _base_options(pd.load_checkpoint(lora, device="cpu"), 4, 0, None, ["none"]).steps == 4
    written = sum(f.stat().st_size for f in lora.rglob("*") if f.is_file() and "training" not in f.parts)
    assert written < 5e6  # the adapter and the embeddings, not the base
    moved = tmp_path / "elsewhere" / "lora"
    shutil.copytree(lora, moved)
    model = pd.load_checkpoint(moved, device="cpu")  # the base is found by name, wherever it is
    image = simulate_field("translocation", "untreated", 64, seed=5, cell_diameter=20.0).image
    out = pd.translate(model, image, "untreated", "TNFa", steps=4, keep_channels=("DNA",))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert np.array_equal(out[0], image[0]) and not np.array_equal(out[1], image[1])


@pytest.mark.parametrize(
    ("names", "kept"),
    [
        (["DNA", "reporter"], ["DNA"]),
        (["GFP", "Hoechst", "actin"], ["Hoechst"]),
        (["GFP", "actin"], None),  # no channel is named like a nuclear stain: nothing is kept rather than a guess
        (["DAPI"], None),  # the only channel: keeping it would leave nothing to translate
    ],
)
def test_a_fine_tune_keeps_only_a_channel_named_like_dna_by_default(names, kept):
    manifest = {"channel_names": names, "translation_defaults": {"strength": 1.0, "keep_nuclear": True}}
    made, note = kept_nucleus(manifest)
    assert (
        made["translation_defaults"].get("keep_channels") == kept and "keep_nuclear" not in made["translation_defaults"]
    )
    # the run's start message says when nothing will be kept though several channels could be
    assert ("No channel is named like a nuclear stain (GFP, actin)" in note) == (names == ["GFP", "actin"])
    assert kept_nucleus({"channel_names": names}) == ({"channel_names": names}, "")  # a model without the wish


def test_a_checkpoint_of_another_shipped_base_version_is_refused(lora, tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(lora, copy)
    manifest = json.loads((copy / "phendiff.json").read_text())
    manifest["base"]["weights_sha256"] = "0" * 64
    (copy / "phendiff.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="another version of the shipped base|digest"):
        pd.load_checkpoint(copy, device="cpu")


def test_a_hub_id_without_network_fails_in_one_line_within_seconds(sim_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub cache is read without asking the network
    monkeypatch.setattr(bases, "hub_reachable", lambda timeout=3.0: False)
    started = time.monotonic()
    code = cli(
        [
            "train",
            str(sim_data),
            "--out",
            str(tmp_path / "m"),
            "--model",
            "latent",
            "--base",
            "nobody/no-such-stable-diffusion",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and time.monotonic() - started < 10
    assert "no network" in error and "hf download nobody/no-such-stable-diffusion" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "m").exists()


def test_starting_from_a_pixel_checkpoint_keeps_all_but_the_condition_rows(tiny_checkpoint, tmp_path):
    data = simulate_dataset(tmp_path / "new", "translocation", n_per_class=3, size=48, seed=9, cell_diameter=20.0)
    (data / "TNFa").rename(data / "IL1b")  # a new condition; "untreated" is kept
    out = tmp_path / "started"
    config = pd.TrainConfig(
        data=data,
        out=out,
        start_from=str(tiny_checkpoint),
        steps=2,
        batch_size=2,
        image_size=32,
        checkpoint_every=1,
        device="cpu",
        channel_names=["DNA", "reporter"],
        ema_decay=0,
        lr=1e-3,
    )
    events = pd.iter_train(config)
    start = next(events)
    assert "started from" in start.message and "IL1b <- null" in start.message
    old = UNet2DModel.from_pretrained(tiny_checkpoint / "unet").state_dict()
    step_one = None
    for event in events:
        if event.kind == "checkpoint" and event.step == 1:
            step_one = UNet2DModel.from_pretrained(out / "unet").state_dict()
    new = UNet2DModel.from_pretrained(out / "unet").state_dict()
    assert step_one is not None and set(old) == set(new)
    assert any(not torch.equal(step_one[k], new[k]) for k in new)  # it trains
    manifest = json.loads((out / "phendiff.json").read_text())
    assert manifest["conditions"] == ["IL1b", "untreated"]
    assert manifest["started_from"]["condition_rows"] == {"IL1b": "null", "untreated": "untreated"}


def test_the_start_keeps_every_weight_but_the_condition_rows(tiny_checkpoint):
    from napari_phendiff.core.models.pixel import start_from

    unet, schedule, info = start_from(str(tiny_checkpoint), ["IL1b", "untreated"], 2)
    old = UNet2DModel.from_pretrained(tiny_checkpoint / "unet")
    old_conditions = json.loads((tiny_checkpoint / "phendiff.json").read_text())["conditions"]
    for name, value in old.state_dict().items():
        if not name.startswith("class_embedding."):
            assert torch.equal(value, unet.state_dict()[name]), name
    table, new = old.class_embedding.weight, unet.class_embedding.weight
    assert torch.equal(new[1], table[old_conditions.index("untreated")])  # same name: its own row
    assert torch.equal(new[0], table[len(old_conditions)])  # new: the null row
    assert torch.equal(new[2], table[len(old_conditions)])  # the null row stays the null row
    assert (
        schedule["prediction_type"]
        == json.loads((tiny_checkpoint / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
    )


@pytest.mark.parametrize(
    "change, phrase",
    [
        (dict(model="cyclegan"), "cannot start from a checkpoint"),
        (dict(model="latent"), "starts from its base model"),
        (dict(preset="small"), "is a 'tiny' model"),
    ],
)
def test_starting_from_a_checkpoint_refuses_what_cannot_fit(tiny_checkpoint, sim_data, tmp_path, change, phrase):
    with pytest.raises(ConfigError, match=phrase):
        config = pd.TrainConfig(
            data=sim_data, out=tmp_path / "m", start_from=str(tiny_checkpoint), steps=1, device="cpu", **change
        )
        pd.train(config)


def test_starting_from_a_checkpoint_of_other_channels_is_explained(tiny_checkpoint, tmp_path):
    data = simulate_dataset(tmp_path / "golgi", "golgi", n_per_class=2, size=48, seed=1, cell_diameter=20.0)
    with pytest.raises(ConfigError, match="channel"):
        pd.train(
            pd.TrainConfig(
                data=data, out=tmp_path / "m", start_from=str(tiny_checkpoint), steps=1, image_size=32, device="cpu"
            )
        )
    assert not (tmp_path / "m" / "phendiff.json").exists()


@pytest.mark.slow
def test_a_hub_base_is_recorded_with_its_commit_and_reloaded_at_it(sim_data, tmp_path, monkeypatch):
    """A fine-tune of a hub id records the commit its cache held; reloading reads that commit's snapshot even when the
    cache's main has moved on, and refuses (saying how to get it) when only another commit is there."""
    import huggingface_hub.constants

    from conftest import tiny_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bases, "hub_reachable", lambda timeout=3.0: pytest.fail("the network was asked"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--lab--tiny-sd"
    first, second = "1" * 40, "2" * 40
    tiny_base(repo / "snapshots" / first, text_encoder=False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(first)
    out = pd.train(
        pd.TrainConfig(
            data=sim_data, out=tmp_path / "m", model="latent", base="lab/tiny-sd", image_size=16, steps=1,
            batch_size=2, checkpoint_every=1, device="cpu", channel_names=["DNA", "reporter"],
        )
    )  # fmt: skip
    manifest = json.loads((out / "phendiff.json").read_text())
    assert manifest["base"]["source"] == "lab/tiny-sd" and manifest["base"]["revision"] == first

    shutil.copytree(repo / "snapshots" / first, repo / "snapshots" / second)
    (repo / "refs" / "main").write_text(second)  # the cache moved on; the first commit is still there
    from napari_phendiff.core.models.latent import check_base

    assert pd.load_checkpoint(out, device="cpu").conditions == ["TNFa", "untreated"]

    assert check_base(out, manifest) == str(repo / "snapshots" / first)
    shutil.rmtree(repo / "snapshots" / first)
    with pytest.raises(CheckpointError, match=f"fine-tuned on its commit {first[:12]}.*hf download lab/tiny-sd"):
        pd.load_checkpoint(out, device="cpu")
