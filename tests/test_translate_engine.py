"""The translation engine's options: strength, guidance with a chosen negative, exact inversion, whole fields by
memory, checks before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

import napari_phendiff as pd
from napari_phendiff.core import tiling, walk
from napari_phendiff.core.errors import CheckpointError, ConfigError
from napari_phendiff.core.models.base import DiffusionModel
from napari_phendiff.core.options import TranslateOptions, resolve_options
from napari_phendiff.core.simulate import simulate_field
from conftest import CountingUNet


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return pd.load_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def demo():
    return pd.load_checkpoint("demo", device="cpu")


def field(size=32, seed=0, condition="untreated"):
    return simulate_field("translocation", condition, size, seed=seed, cell_diameter=20.0).image


def plain_diffusers_translation(model, image, source, target, steps):
    """The original PhenDiff translation written directly on diffusers: full DDIM inversion, then generation."""
    x = torch.from_numpy(model.normalization.forward(image[None]))
    inverse = DDIMInverseScheduler.from_config(model.scheduler_config)
    inverse.set_timesteps(steps)
    forward = DDIMScheduler.from_config(model.scheduler_config)
    forward.set_timesteps(steps)
    with torch.inference_mode():
        for t in inverse.timesteps:
            x = inverse.step(model.unet(x, t, class_labels=torch.tensor([source])).sample, t, x).prev_sample
        for t in forward.timesteps:
            x = forward.step(model.unet(x, t, class_labels=torch.tensor([target])).sample, t, x).prev_sample
    return model.normalization.inverse(x.numpy(), image.dtype)[0]


def test_full_strength_without_guidance_is_the_original_translation_bit_for_bit(model, every_step_whole):
    image = field(32, seed=21)
    ours = pd.translate(
        model, image, "untreated", "TNFa", steps=6, strength=1.0, guidance=1.0, tiles=False, precision="fp32"
    )
    source, target = model.condition_index("untreated"), model.condition_index("TNFa")
    assert np.array_equal(ours, plain_diffusers_translation(model, image, source, target, steps=6))


def test_strength_runs_that_share_of_the_grid_each_way(model, monkeypatch, every_step_whole):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    pd.translate(model, field(), "untreated", "TNFa", steps=10, strength=0.3, guidance=1.0)
    source, target = model.condition_index("untreated"), model.condition_index("TNFa")
    assert [labels[0] for _, labels, _ in counter.calls] == [source] * 3 + [target] * 3


@pytest.mark.slow
def test_lower_strength_reconstructs_closer(demo):
    fields = np.stack(
        [simulate_field("translocation", "untreated", 48, seed=s, cell_diameter=20.0).image for s in (31, 32)]
    )
    scaled = demo.normalization.forward(fields)
    error = {}
    for strength in (0.3, 1.0):
        back = pd.translate(demo, fields, "untreated", "untreated", steps=20, strength=strength, guidance=1.0)
        error[strength] = float(np.sqrt(np.mean((demo.normalization.forward(back) - scaled) ** 2)))
    # measured 0.029 and 0.17 (normalised units, data span about [-1, 1])
    assert error[0.3] < 0.05 and error[0.3] < 0.5 * error[1.0], error


@pytest.mark.slow
def test_exact_inversion_reconstructs_to_float_rounding(demo):
    image = field(48, seed=33)
    x = torch.from_numpy(demo.normalization.forward(image[None]))
    for strength in (0.1, 0.5, 1.0):
        inverted = walk.finish(
            walk.invert(demo, x, demo.condition_index("untreated"), 20, strength=strength, method="bdia")
        )
        back = walk.finish(walk.generate(demo, inverted, demo.condition_index("untreated"), 20, strength=strength))
        # measured 6e-7 to 2e-5 RMSE; plain DDIM inversion gives 0.02 to 0.15 on the same field
        assert float((back - x).pow(2).mean().sqrt()) < 1e-4, strength
        assert not torch.equal(inverted.states[-1], x)  # it did go somewhere
    out = pd.translate(demo, image, "untreated", "TNFa", steps=10, inversion="bdia", strength=0.5)
    assert out.shape == image.shape and np.isfinite(out.astype(np.float64)).all()
    # the demo's calibrated DNA keeping needs a DDIM walk: the exact inversion asked for wins over it
    assert resolve_options(demo.manifest, "untreated", "TNFa", {"inversion": "bdia"})[0].keep_channels == ()


def test_source_negative_guidance_at_scale_one_is_unguided(model):
    image = field(seed=2)
    unguided = pd.translate(model, image, "untreated", "TNFa", steps=4, strength=0.5, guidance=1.0)
    at_one = pd.translate(model, image, "untreated", "TNFa", steps=4, strength=0.5, guidance=1.0, negative="source")
    assert np.array_equal(unguided, at_one)
    # just above 1 the batched two-branch formula runs, and lands where the unguided walk does
    kw = dict(steps=4, strength=0.5, tiles=False, precision="fp32")  # fp32: the formula's rounding, not bf16's
    barely = pd.translate(model, image, "untreated", "TNFa", guidance=1.0 + 1e-6, negative="source", **kw)
    reference = pd.translate(model, image, "untreated", "TNFa", guidance=1.0, **kw)
    assert np.abs(barely.astype(np.int64) - reference.astype(np.int64)).max() <= 2


def test_guidance_batches_target_with_the_chosen_negative(model, monkeypatch, every_step_whole):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    pd.translate(model, field(), "untreated", "TNFa", steps=4, strength=0.5, guidance=3.0, negative="source")
    source, target = model.condition_index("untreated"), model.condition_index("TNFa")
    generation = counter.calls[2:]
    assert len(generation) == 2 and all(batch == 2 and labels == [target, source] for batch, labels, _ in generation)
    counter.calls.clear()
    pd.translate(model, field(), "untreated", "TNFa", steps=4, strength=0.5, guidance=3.0, negative="null")
    assert all(labels == [target, model.null_condition] for _, labels, _ in counter.calls[2:])
    counter.calls.clear()  # an interval that holds only the lower noise levels: the upper step runs unguided
    pd.translate(model, field(), "untreated", "TNFa", steps=10, strength=0.4, guidance=3.0, guidance_interval=(0, 0.15))
    assert [batch for batch, _, _ in counter.calls[4:]] == [1, 1, 2, 2]  # t/T = 0.3, 0.2 | 0.1, 0.0


def test_reused_deep_features_at_the_same_step_give_the_whole_networks_prediction(model):
    cache = model.deep_feature_cache()
    x, t, labels = torch.randn(2, 2, 32, 32), torch.tensor(500), torch.tensor([0, 1])
    with torch.inference_mode():
        whole = model.unet(x, t, class_labels=labels).sample
        assert torch.equal(cache.predict(x, t, labels, refresh=True), whole)
        # the outermost level on the deep features just kept: the partial forward is UNet2DModel.forward's own
        assert torch.equal(cache.predict(x, t, labels, refresh=False), whole)
        later = cache.predict(0.9 * x, torch.tensor(450), labels, refresh=False)
        assert not torch.equal(later, model.unet(0.9 * x, torch.tensor(450), class_labels=labels).sample)
        cache.predict(x[:1], t, labels[:1], refresh=False)  # another batch: nothing kept fits, the whole network runs
    assert (cache.full_calls, cache.reused_calls) == (2, 2)


def test_deep_cache_runs_the_whole_network_every_nth_regeneration_step_only(model, monkeypatch):
    image = field(seed=4)
    plain = pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.5, guidance=3.0, deep_cache=1)
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    reused = pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.5, guidance=3.0, deep_cache=2)
    assert [batch for batch, _, _ in counter.calls] == [1] * 5 + [2] * 3  # inversion whole; regeneration steps 0, 2, 4
    assert walk.whole_steps(5, 2) == 3  # what the estimate counts is what the walk ran
    assert reused.shape == plain.shape and reused.dtype == plain.dtype and not np.array_equal(reused, plain)
    counter.calls.clear()  # unguided upper steps, guided lower ones: a new batch shape runs the whole network
    kw = dict(steps=10, strength=0.4, guidance=3.0, guidance_interval=(0, 0.15))
    pd.translate(model, image, "untreated", "TNFa", deep_cache=3, **kw)
    assert [batch for batch, _, _ in counter.calls[4:]] == [1, 2, 2]  # t/T = 0.3 (0.2 reused) | 0.1, 0.0 (the 3rd)


def test_deep_cache_auto_is_the_kinds_own_and_is_recorded_as_the_number_that_ran(model):
    from napari_phendiff.core.models import KINDS
    from napari_phendiff.core.translate import translation_options

    assert TranslateOptions().deep_cache is None  # auto
    options, sources = translation_options(model, "untreated", "TNFa")
    assert options.deep_cache == KINDS["pixel"].deep_cache == 2 and sources["deep_cache"] == "default"
    options, sources = translation_options(model, "untreated", "TNFa", deep_cache=1)
    assert options.deep_cache == 1 and sources["deep_cache"] == "given"
    assert options.record()["deep_cache"] == 1


def test_deep_cache_is_refused_before_any_work_where_the_model_cannot_reuse_features(model, monkeypatch):
    monkeypatch.setattr(type(model), "deep_feature_cache", DiffusionModel.deep_feature_cache)
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    with pytest.raises(ConfigError, match="cannot reuse deep features"):
        pd.translate(model, field(), "untreated", "TNFa", deep_cache=2)
    assert counter.calls == []


def test_source_and_null_negatives_differ(model):
    image = field(seed=3)
    source = pd.translate(model, image, "untreated", "TNFa", steps=4, guidance=4.0, negative="source")
    null = pd.translate(model, image, "untreated", "TNFa", steps=4, guidance=4.0, negative="null")
    assert not np.array_equal(source, null)


@pytest.mark.parametrize(
    "option, value, phrase",
    [
        ("strength", 0.0, "strength must be in"),
        ("strength", 1.5, "strength must be in"),
        ("guidance", float("nan"), "guidance must be a finite"),
        ("guidance", -1.0, "guidance must be >= 0"),
        ("guidance", float("inf"), "guidance must be a finite"),
        ("guidance_interval", (0.5, 0.2), "guidance_interval must satisfy"),
        ("guidance_interval", (-0.1, 1.0), "guidance_interval must satisfy"),
        ("guidance_interval", (0.0, 1.2), "guidance_interval must satisfy"),
        ("steps", 0, "steps must be between"),
        ("steps", -3, "steps must be between"),
        ("steps", 100000, "steps must be between"),
        ("batch_size", -1, "batch_size must be at least 1"),
        ("negative", "target", "negative must be one of"),
        ("inversion", "edict", "inversion must be one of"),
        ("deep_cache", 0, "deep_cache must be at least 1"),
        ("deep_cache", 1.5, "deep_cache must be a whole number"),
    ],
)
def test_bad_values_are_clear_errors_before_any_work(model, monkeypatch, option, value, phrase):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    with pytest.raises(ConfigError, match=phrase):
        pd.translate(model, field(), "untreated", "TNFa", **{option: value})
    assert counter.calls == []


def test_whole_field_or_tiles_follows_the_memory_budget(model, monkeypatch):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    image = field(64, seed=4)  # the checkpoint was trained on 32 px: 9 tiles, or one whole field
    pd.translate(model, image, "untreated", "TNFa", steps=2, strength=0.5, guidance=1.0)
    assert {shape for _, _, shape in counter.calls} == {(64, 64)}
    counter.calls.clear()
    per_field = tiling.bytes_per_pixel(model) * 64 * 64
    monkeypatch.setattr(tiling, "CPU_BUDGET_BYTES", per_field - 1)  # no longer fits: tiles of the model's size
    pd.translate(model, image, "untreated", "TNFa", steps=2, strength=0.5, guidance=1.0)
    assert {shape for _, _, shape in counter.calls} == {(32, 32)}
    counter.calls.clear()
    pd.translate(model, image, "untreated", "TNFa", steps=2, strength=0.5, guidance=1.0, tiles=False)  # forced
    assert {shape for _, _, shape in counter.calls} == {(64, 64)}


def test_options_resolve_given_then_calibrated_then_default():
    manifest = {"calibration": {"untreated->TNFa": {"strength": 0.3, "guidance": 2.0, "negative": "null"}}}
    options, sources = resolve_options(manifest, "untreated", "TNFa", {"guidance": 5.0, "strength": None})
    assert (options.strength, options.guidance, options.negative, options.steps) == (
        0.3,
        5.0,
        "null",
        TranslateOptions().steps,
    )
    assert (sources["strength"], sources["guidance"], sources["steps"]) == ("calibrated", "given", "default")
    other, other_sources = resolve_options(manifest, "TNFa", "untreated")
    assert other == TranslateOptions() and set(other_sources.values()) == {"default"}
    with pytest.raises(ConfigError, match="Unknown translation option"):
        resolve_options(manifest, "untreated", "TNFa", {"strenght": 0.2})


def test_a_models_default_setting_sits_between_the_calibrated_one_and_the_projects():
    manifest = {
        "translation_defaults": {"strength": 1.0, "guidance": 4.0},
        "calibration": {"untreated->TNFa": {"strength": 0.6}},
    }
    options, sources = resolve_options(manifest, "untreated", "TNFa")
    assert (options.strength, options.guidance) == (0.6, 4.0)
    assert (sources["strength"], sources["guidance"], sources["steps"]) == ("calibrated", "model default", "default")
    back, back_sources = resolve_options(manifest, "TNFa", "untreated", {"guidance": 2.0})
    assert (back.strength, back.guidance) == (1.0, 2.0)
    assert (back_sources["strength"], back_sources["guidance"]) == ("model default", "given")
    with pytest.raises(CheckpointError, match=r"translation_defaults in its phendiff.json\) is not valid"):
        resolve_options({"translation_defaults": {"strength": 7}}, "untreated", "TNFa")
    with pytest.raises(CheckpointError, match="inside a list, not a table of directions"):
        resolve_options({"calibration": [0.3, 4]}, "untreated", "TNFa")


def test_kept_channels_stay_the_originals_and_the_others_are_regenerated_around_them(model):
    image = field(seed=6)
    plain = pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.6)
    kept = pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.6, keep_channels=("DNA",))
    np.testing.assert_array_equal(kept[0], image[0])  # DNA: the original's, to the last bit
    assert not np.array_equal(plain[0], image[0])  # without keeping it, the model changes it
    assert not np.array_equal(kept[1], image[1]) and not np.array_equal(kept[1], plain[1])  # conditioned on it


def test_kept_channels_follow_the_inversion_at_every_level(model, monkeypatch):
    """The kept channel of the state the network sees at each regeneration step is the inversion's at that level."""
    image = field(seed=7)
    x = torch.from_numpy(model.normalization.forward(image[None]))
    inverted = walk.finish(walk.invert(model, x, 0, 10, strength=0.5, keep=True))
    seen = []
    monkeypatch.setattr(
        walk, "predict", lambda m, x, t, labels, dtype, *cache: (seen.append(x[:1].clone()), torch.zeros_like(x))[1]
    )
    walk.finish(walk.generate(model, inverted, 1, 10, strength=0.5, keep=[0]))
    levels = list(range(inverted.depth, 0, -1))  # the states regeneration starts each step from
    assert len(seen) == len(levels)
    for state, level in zip(seen, levels):
        torch.testing.assert_close(state[:, 0], inverted.states[level][:, 0])


@pytest.mark.parametrize(
    "keep, phrase",
    [
        (("Actin",), "the checkpoint's channels are DNA, reporter"),
        (("DNA", "reporter"), "nothing would be translated"),
        (("DNA", "DNA"), "must be distinct"),
    ],
)
def test_bad_kept_channels_are_clear_errors_before_any_work(model, monkeypatch, keep, phrase):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    with pytest.raises(ConfigError, match=phrase):
        pd.translate(model, field(), "untreated", "TNFa", keep_channels=keep)
    with pytest.raises(ConfigError, match="use inversion 'ddim'"):
        pd.translate(model, field(), "untreated", "TNFa", keep_channels=("DNA",), inversion="bdia")
    assert counter.calls == []


@pytest.mark.slow
def test_embedding_morph_shares_one_inversion_and_ends_at_the_translation(model, monkeypatch):
    from napari_phendiff.core.explore import translate_morph

    image = field(seed=8)
    plain = pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.5)
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    frames = translate_morph(model, image, "untreated", "TNFa", 3, steps=10, strength=0.5, path="embedding")
    assert frames.shape == (4, *image.shape) and frames.dtype == image.dtype
    np.testing.assert_array_equal(frames[0], image)
    np.testing.assert_array_equal(frames[-1], plain)  # full weight: the target's own embedding, bit for bit
    assert not np.array_equal(frames[1], frames[2]) and not np.array_equal(frames[2], frames[3])
    inverting = [c for c in counter.calls if set(c[1]) == {model.condition_index("untreated")}]  # inverting
    assert len(inverting) == 5  # strength 0.5 of a 10-step grid, once for all three frames
    # the blend touched only those frames: the model's target embedding is its own again
    monkeypatch.undo()
    np.testing.assert_array_equal(pd.translate(model, image, "untreated", "TNFa", steps=10, strength=0.5), plain)


def test_the_middle_of_an_embedding_morph_is_a_blend_of_the_two_conditions(model):
    """Half way, the target's label looks up the mean of the source's and the target's class embeddings."""
    table = model.unet.class_embedding
    with model.blended_condition(1, 0, 0.5):
        mixed = table(torch.tensor([1, 0]))
    torch.testing.assert_close(mixed[0], 0.5 * (table.weight[0] + table.weight[1]))
    torch.testing.assert_close(mixed[1], table.weight[0])  # the other label untouched
    torch.testing.assert_close(table(torch.tensor([1]))[0], table.weight[1])  # and the blend gone afterwards


def test_embedding_morph_is_refused_where_it_cannot_run(model):
    from napari_phendiff.core.explore import translate_morph

    with pytest.raises(ConfigError, match="morph path must be one of strength, embedding"):
        translate_morph(model, field(), "untreated", "TNFa", 2, path="dose")


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_precision_auto_is_bf16_only_where_the_cpu_computes_it_and_is_recorded_as_such(
    model, native, monkeypatch, tmp_path
):
    """The default precision "auto" runs (and records) bf16 on a CPU with native bf16, fp32 elsewhere: the result is
    the one of the precision it stands for, and a folder rerun with the default is not taken for other settings."""
    from napari_phendiff.core import device
    from napari_phendiff.core.images import read_provenance
    from napari_phendiff.core.batch import translate_files
    from napari_phendiff.core.translate import translation_options

    monkeypatch.setattr(device, "native_bf16", lambda where: native and where.type == "cpu")
    means = "bf16" if native else "fp32"
    assert TranslateOptions().precision == "auto"
    chosen, _ = translation_options(model, "untreated", "TNFa", steps=3)
    assert chosen.precision == means
    image = field(seed=3)
    auto = pd.translate(model, image, "untreated", "TNFa", steps=3, strength=0.6)
    meant = pd.translate(model, image, "untreated", "TNFa", steps=3, strength=0.6, precision=means)
    np.testing.assert_array_equal(auto, meant)
    if native:  # and it is not fp32's result
        other = pd.translate(model, image, "untreated", "TNFa", steps=3, strength=0.6, precision="fp32")
        assert np.abs(auto.astype(float) - other).max() > 0

    from conftest import write_tif

    write_tif(tmp_path / "in" / "a.tif", image)
    translate_files(model.path, [tmp_path / "in"], "untreated", ["TNFa"], tmp_path / "out", steps=3, device="cpu")
    assert read_provenance(tmp_path / "out" / "a_to_TNFa.tif")["precision"] == means
    again = translate_files(
        model.path, [tmp_path / "in"], "untreated", ["TNFa"], tmp_path / "out", steps=3, device="cpu"
    )
    assert again.skipped == [tmp_path / "in" / "a.tif"]


def test_native_bf16_is_a_cpu_question():
    from napari_phendiff.core.device import auto_precision, native_bf16

    assert not native_bf16(torch.device("meta"))
    probes = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16(torch.device("cpu")) == probes
    assert auto_precision(torch.device("cpu")) == ("bf16" if probes else "fp32")
