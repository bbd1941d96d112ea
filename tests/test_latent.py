"""Phen-LDiff on a tiny, randomly initialised Stable-Diffusion-style base saved in diffusers layout: every adapter
trains, saves only what it trained, reloads and translates; the LoRA file is a diffusers LoRA; wrong bases and too
many channels are refused with an explanation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from torch import nn

import napari_phendiff as pd
from napari_phendiff.cli import main as cli
from napari_phendiff.core.errors import CheckpointError, ConfigError, DataError
from napari_phendiff.core.models.adapters import LORA_TARGETS
from napari_phendiff.core.models.latent_base import from_vae, to_vae
from napari_phendiff.core.simulate import simulate_field
from napari_phendiff.core.translate import translation_options
from napari_phendiff.core.walk import finish, generate, invert
from conftest import random_image, tiny_base, write_tif

ADAPTERS = ["lora", "svdiff", "attention", "full"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("base") / "sd")


def latent_config(data, out, base, **kw):
    settings = dict(
        data=data,
        out=out,
        model="latent",
        base=str(base),
        steps=3,
        batch_size=2,
        checkpoint_every=2,
        lr=1e-3,
        device="cpu",
    )
    return pd.TrainConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def checkpoints(sim_data, base, tmp_path_factory):
    """One checkpoint per adapter, trained 3 steps on the simulated two-channel cells."""
    root = tmp_path_factory.mktemp("latent")
    return {
        adapter: pd.train(latent_config(sim_data, root / adapter, base, adapter=adapter, rank=2))
        for adapter in ADAPTERS
    }


def field(size=32, seed=0, condition="untreated"):
    return simulate_field("translocation", condition, size, seed=seed, cell_diameter=20.0).image


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_adapter_saves_only_what_it_trained_reloads_and_translates(checkpoints, base, adapter):
    folder = checkpoints[adapter]
    manifest = json.loads((folder / "phendiff.json").read_text())
    assert manifest["kind"] == "latent" and manifest["adapter"] == adapter and manifest["trained_steps"] == 3
    assert manifest["image_size"] == 16  # the base's own size: 8 latent pixels x VAE factor 2
    saved = {
        "lora": "lora/pytorch_lora_weights.safetensors",
        "svdiff": "svdiff.safetensors",
        "attention": "attention.safetensors",
        "full": "unet/diffusion_pytorch_model.safetensors",
    }
    assert (folder / saved[adapter]).is_file() and (folder / "conditions.safetensors").is_file()
    assert (folder / "unet").exists() == (adapter == "full") and not (folder / "vae").exists()

    model = pd.load_checkpoint(folder, device="cpu")
    assert model.kind == "latent" and model.conditions == ["TNFa", "untreated"] and model.size_multiple == 4
    base_unet = UNet2DConditionModel.from_pretrained(base / "unet")
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500]), model.contexts[:1]
    with torch.no_grad():
        assert not torch.allclose(
            model.unet(x, t, encoder_hidden_states=context).sample,
            base_unet(x, t, encoder_hidden_states=context).sample,
        )  # the fine-tuning is there
    image = field(40)
    out = pd.translate(model, image, "untreated", "TNFa", steps=3)
    assert out.shape == image.shape and out.dtype == image.dtype
    if adapter == "lora":  # deep cache "auto" is off for latent checkpoints; asking for it is refused
        assert translation_options(model, "untreated", "TNFa")[0].deep_cache == 1
        with pytest.raises(ConfigError, match="latent checkpoints cannot reuse deep features"):
            pd.translate(model, image, "untreated", "TNFa", steps=3, deep_cache=2)


def test_trained_parameter_counts_match_the_method(checkpoints, base):
    counts = {a: json.loads((checkpoints[a] / "phendiff.json").read_text())["trained_parameters"] for a in ADAPTERS}
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    total = sum(p.numel() for p in unet.parameters())
    lora = sum(
        2 * (m.in_features + m.out_features)
        for name, m in unet.named_modules()  # rank 2
        if isinstance(m, nn.Linear) and any(name.endswith(t) for t in LORA_TARGETS)
    )
    singular_values = sum(
        min(m.weight.shape[0], m.weight[0].numel()) for m in unet.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    )
    assert counts["lora"]["adapter"] == lora and counts["svdiff"]["adapter"] == singular_values
    assert counts["full"]["adapter"] == total
    assert counts["attention"]["adapter"] < total / 5
    assert max(counts["lora"]["adapter"], counts["svdiff"]["adapter"]) < total / 50
    assert all(c["conditions"] == 3 * 77 * 32 for c in counts.values())  # 2 conditions + null, 77 tokens, 32 dims


def test_lora_file_is_a_diffusers_lora(checkpoints, base):
    model = pd.load_checkpoint(checkpoints["lora"], device="cpu")
    pipeline = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, feature_extractor=None)
    pipeline.load_lora_weights(checkpoints["lora"] / "lora")
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), model.contexts[:2]
    with torch.no_grad():
        torch.testing.assert_close(
            pipeline.unet(x, t, encoder_hidden_states=context).sample,
            model.unet(x, t, encoder_hidden_states=context).sample,
        )


@pytest.mark.slow
def test_source_to_source_round_trip_gives_the_vae_reconstruction_back(checkpoints):
    """Encoding is deterministic (the distribution's mean); DDIM inversion then regeneration under the same condition
    returns to the starting latents up to the discretisation error, which shrinks with more steps; so the output is
    what the VAE alone would reconstruct."""
    model = pd.load_checkpoint(checkpoints["lora"], device="cpu")
    fields = np.stack([field(32, seed=s)[:, 8:24, 8:24] for s in (11, 12)])  # one 16-px tile each
    scaled = torch.from_numpy(model.normalization.forward(fields))
    untreated = model.condition_index("untreated")
    with torch.no_grad():
        latents = model.encode(scaled)
        assert torch.equal(latents, model.encode(scaled))
        assert 0.5 < float(latents.std()) < 2  # scaled like Stable Diffusion's latents
        reconstructed = model.normalization.inverse(model.decode(latents).numpy(), fields.dtype)
    errors = {}
    for steps in (10, 50):
        noise = finish(invert(model, latents, untreated, steps))
        back = finish(generate(model, noise, untreated, steps))
        errors[steps] = float((back - latents).norm() / latents.norm())
    # measured 0.73 and 0.36 with this random UNet after 3 training steps, which predicts noise far less smoothly than
    # a pre-trained one
    assert errors[50] < 0.45 and errors[50] < 0.6 * errors[10], errors
    back = pd.translate(model, fields, "untreated", "untreated", steps=50, strength=1.0, guidance=1.0, tiles=True)
    rmse = float(
        np.sqrt(np.mean((model.normalization.forward(back) - model.normalization.forward(reconstructed)) ** 2))
    )
    assert rmse < 0.25, rmse  # measured 0.16, in the normalised [-1, 1] range


@pytest.mark.slow
def test_resumed_run_ends_identical_to_a_straight_one(sim_data, base, tmp_path):
    straight = pd.train(latent_config(sim_data, tmp_path / "straight", base, adapter="svdiff"))
    events = pd.iter_train(latent_config(sim_data, tmp_path / "stopped", base, adapter="svdiff"))
    for event in events:
        if event.kind == "step" and event.step == 1:
            break
    events.close()
    resumed = list(pd.iter_train(latent_config(sim_data, tmp_path / "stopped", base, adapter="svdiff", resume=True)))
    assert [e.step for e in resumed if e.kind == "step"] == [2, 3]
    from safetensors.torch import load_file

    for name in ("svdiff.safetensors", "conditions.safetensors", "training/model.safetensors"):
        a, b = load_file(straight / name), load_file(tmp_path / "stopped" / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="adapter: checkpoint 'svdiff', now 'lora'"):
        pd.train(latent_config(sim_data, tmp_path / "stopped", base, adapter="lora", resume=True, steps=5))


def test_a_different_or_missing_base_is_refused(checkpoints, tmp_path):
    other = tiny_base(tmp_path / "other", cross_attention_dim=16, text_encoder=False)
    copy = tmp_path / "copy"
    shutil.copytree(checkpoints["attention"], copy)
    manifest = json.loads((copy / "phendiff.json").read_text())
    manifest["base"]["source"] = str(other)
    (copy / "phendiff.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="fine-tuned from a different base model"):
        pd.load_checkpoint(copy, device="cpu")
    manifest["base"].update(source=str(tmp_path / "gone"), relative_to_checkpoint="../gone-too")  # not moved along
    (copy / "phendiff.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="which is not there"):
        pd.load_checkpoint(copy, device="cpu")


def test_base_without_text_encoder_and_more_than_three_channels(sim_data, tmp_path):
    plain = tiny_base(tmp_path / "plain", text_encoder=False)
    out = pd.train(latent_config(sim_data, tmp_path / "m", plain, adapter="lora", steps=1))
    conditioning = json.loads((out / "phendiff.json").read_text())["conditioning"]
    assert conditioning["initialised_from"].startswith("random")

    for condition in ("a", "b"):
        write_tif(tmp_path / "four" / condition / "1.tif", random_image((4, 24, 24)))
    with pytest.raises(DataError, match="4 channels.*at most 3.*--model pixel"):
        pd.train(latent_config(tmp_path / "four", tmp_path / "m4", plain))
    # no --base: the base shipped with the plugin, named rather than a path, so the manifest stays portable
    assert pd.TrainConfig(data=sim_data, out=tmp_path / "x", model="latent").base == "microscopy"


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_channels_map_to_rgb_and_back(channels):
    x = torch.randn(2, channels, 4, 4)
    rgb = to_vae(x, 3)
    assert rgb.shape == (2, 3, 4, 4)
    torch.testing.assert_close(from_vae(rgb, channels), x)
    if channels == 2:
        assert torch.all(rgb[:, 2] == -1)  # blue is black


def test_command_line_trains_and_translates(sim_data, base, tmp_path):
    out = tmp_path / "cli-model"
    assert (
        cli(
            [
                "train",
                str(sim_data),
                "--out",
                str(out),
                "--model",
                "latent",
                "--base",
                str(base),
                "--adapter",
                "lora",
                "--rank",
                "2",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    image = next((sim_data / "untreated").iterdir())
    assert (
        cli(
            [
                "translate",
                str(out),
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "translated"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    written = pd.read_image(tmp_path / "translated" / f"{image.stem}_to_TNFa.tif")
    assert written.shape == pd.read_image(image).shape


def test_kept_channels_of_a_latent_model_are_the_originals_and_the_others_change(checkpoints):
    model = pd.load_checkpoint(checkpoints["lora"], device="cpu")
    image = field(32, seed=1)
    free = pd.translate(model, image, "untreated", "TNFa", steps=4, strength=0.5)
    kept = pd.translate(
        model, image, "untreated", "TNFa", steps=4, strength=0.5, keep_channels=("DNA",)
    )  # names read from the files
    assert np.array_equal(kept[0], image[0])  # pasted after decoding: exactly the original's
    assert not np.array_equal(free[0], image[0])  # without keeping, the autoencoder changes it
    assert not np.array_equal(kept[1], image[1])  # the reporter is regenerated


def test_a_base_with_channel_slots_keeps_each_channels_latents_apart_and_holds_the_kept_ones(sim_data, tmp_path):
    base = tiny_base(tmp_path / "slots", text_encoder=False, slots=3)
    out = pd.train(latent_config(sim_data, tmp_path / "lora", base, adapter="lora", rank=2, steps=1))
    assert json.loads((out / "phendiff.json").read_text())["vae"]["slots"] == 3
    model = pd.load_checkpoint(out, device="cpu")
    assert model.slots == 3 and model.kept_in_walk([0]) == [0, 1, 2, 3]  # 4 latent channels per slot
    image = field(32, seed=2)[:, 8:24, 8:24]  # one 16-px tile, the base's size
    x = torch.from_numpy(model.normalization.forward(image[None]))
    brighter = x.clone()
    brighter[:, 1] += 0.5
    with torch.no_grad():
        z, z_brighter = model.encode(x), model.encode(brighter)
        assert z.shape == (1, 12, 8, 8) and model.decode(z).shape == (1, 2, 16, 16)
        torch.testing.assert_close(z[:, :4], z_brighter[:, :4])  # the DNA's latents do not see the reporter
        assert not torch.allclose(z[:, 4:8], z_brighter[:, 4:8])
        inverted = finish(invert(model, z, model.condition_index("untreated"), 4, keep=True))
        kept = finish(generate(model, inverted, model.condition_index("TNFa"), 4, keep=model.kept_in_walk([0])))
    torch.testing.assert_close(kept[:, :4], z[:, :4])  # the walk ends at the original's DNA latents
    assert not torch.allclose(kept[:, 4:8], z[:, 4:8], atol=1e-3)  # the reporter's were drawn again

    mixed = tiny_base(tmp_path / "mixed", text_encoder=False)
    config = json.loads((mixed / "unet" / "config.json").read_text())
    (mixed / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 12, "out_channels": 12}))
    with pytest.raises(CheckpointError, match="UNet takes 12 channels and its VAE gives 4 from 3"):
        pd.train(latent_config(sim_data, tmp_path / "bad", mixed, adapter="lora", steps=1))


def test_a_checkpoint_moved_together_with_its_base_finds_it(sim_data, tmp_path):
    work = tmp_path / "project"
    base = tiny_base(work / "sd", text_encoder=False)
    out = pd.train(latent_config(sim_data, work / "lora", base, adapter="lora", steps=1))
    manifest = json.loads((out / "phendiff.json").read_text())
    assert manifest["base"]["source"] == str(base) and manifest["base"]["relative_to_checkpoint"] == "../sd"
    moved = tmp_path / "other-computer"
    work.rename(moved)  # both travel; the absolute path recorded is gone
    model = pd.load_checkpoint(moved / "lora", device="cpu")
    assert model.conditions == ["TNFa", "untreated"]


def test_a_fine_tuning_that_cannot_fit_is_refused_before_the_base_is_loaded(sim_data, tmp_path, base, monkeypatch):
    from napari_phendiff.core.models import latent, latent_base

    monkeypatch.setattr(latent_base, "available_memory", lambda device: 2**20)  # 1 MiB left
    monkeypatch.setattr(latent, "load_base", lambda *a, **k: pytest.fail("the base was loaded"))
    with pytest.raises(ConfigError) as refused:
        pd.train(latent_config(sim_data, tmp_path / "full", base, adapter="full", steps=1))
    message = str(refused.value)
    assert "(--adapter full) of this base needs at least" in message and "GiB on cpu" in message
    assert "0.0 GiB is available" in message and "Use --adapter lora" in message
    assert "--optimizer adamw8bit (" in message and "GiB; pip install bitsandbytes)" in message
    assert not (tmp_path / "full").exists()
    monkeypatch.setattr(latent_base, "available_memory", lambda device: 2**40)  # plenty: the check lets it through
    with pytest.raises(pytest.fail.Exception, match="the base was loaded"):
        pd.train(latent_config(sim_data, tmp_path / "full2", base, adapter="full", steps=1))


def test_svdiff_decompositions_are_cached_per_base(base, tmp_path, monkeypatch, caplog):
    """The first SVDiff start on a base decomposes every weight and caches the factors; the next start (or load) of
    the same base reads them, a changed base or a damaged cache file decomposes again."""
    from napari_phendiff.core.models import adapters

    monkeypatch.setenv("PHENDIFF_CACHE", str(tmp_path / "cache"))
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))

    def shifted(unet):
        adapters.apply_adapter(unet, "svdiff")
        with torch.no_grad():
            for p in adapters.trained_parameters(unet).values():
                p.fill_(0.1)  # a shift of every singular value: the result depends on the factors
        return {n: m.weight.detach().clone() for n, m in adapters.decomposable(unet).items()}

    layers = len(adapters.decomposable(UNet2DConditionModel.from_pretrained(base / "unet")))
    with caplog.at_level("INFO", logger="napari_phendiff"):
        first = shifted(UNet2DConditionModel.from_pretrained(base / "unet"))
    assert len(calls) == layers and layers > 10
    assert f"decomposed {layers} of {layers} weights" in caplog.text
    assert len(list((tmp_path / "cache" / "svdiff").glob("*.safetensors"))) == 1

    calls.clear()
    again = shifted(UNet2DConditionModel.from_pretrained(base / "unet"))
    assert calls == []
    assert all(torch.allclose(first[n], again[n], atol=1e-6) for n in first)  # the same factors (memory layout aside)

    changed = UNet2DConditionModel.from_pretrained(base / "unet")
    with torch.no_grad():
        next(iter(adapters.decomposable(changed).values())).weight.add_(1.0)
    shifted(changed)
    assert len(calls) == layers
    assert len(list((tmp_path / "cache" / "svdiff").glob("*.safetensors"))) == 2

    calls.clear()
    for file in (tmp_path / "cache" / "svdiff").glob("*.safetensors"):
        file.write_bytes(b"damaged")
    with caplog.at_level("WARNING", logger="napari_phendiff"):
        damaged = shifted(UNet2DConditionModel.from_pretrained(base / "unet"))
    assert len(calls) == layers and "cannot be read" in caplog.text
    assert all(torch.allclose(first[n], damaged[n], atol=1e-6) for n in first)


def test_the_command_line_shows_what_the_core_logs(capsys):
    """The core logs (it never prints); the command line shows those lines on stderr."""
    import logging

    from napari_phendiff.cli import show_core_log

    show_core_log()
    show_core_log()  # once, however often it is called
    logging.getLogger("napari_phendiff.core.models.adapters").info("SVDiff: decomposed 3 of 3 weights of the base")
    assert capsys.readouterr().err.count("SVDiff: decomposed 3 of 3 weights of the base") == 1


def test_previews_of_a_fine_tune_come_from_the_base_in_memory(sim_data, base, tmp_path, monkeypatch):
    from napari_phendiff.core.models import latent
    from napari_phendiff.core.walk import sample

    loads = []
    real = latent.load_base
    monkeypatch.setattr(latent, "load_base", lambda *a, **k: loads.append(a) or real(*a, **k))
    config = latent_config(sim_data, tmp_path / "lora", base, steps=2, checkpoint_every=2, rank=2)
    events = list(pd.iter_train(config, previews=1))
    assert len(loads) == 1  # the base is read once, to train; the previews use it where it is
    made = [e for e in events if e.kind == "previews"]
    assert [e.step for e in made] == [2] and events[-1].kind == "done"
    saved = pd.load_checkpoint(tmp_path / "lora", device="cpu")
    for condition, images in made[0].previews.items():
        expected = sample(saved, condition, 1, steps=20, seed=0).astype(float)
        assert images.shape == expected.shape == (1, 2, saved.image_size, saved.image_size)
        assert abs(images.astype(float) - expected).max() <= 0.01 * expected.max()
