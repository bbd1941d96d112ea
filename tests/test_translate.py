"""Translation: shapes and dtypes, tiles, determinism, one inversion for several targets, stopping."""

from __future__ import annotations

import numpy as np
import pytest

import napari_phendiff as pd
from napari_phendiff.core.errors import ConfigError, DataError
from napari_phendiff.core.simulate import simulate_field
from conftest import CountingUNet, random_image


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return pd.load_checkpoint(tiny_checkpoint, device="cpu")


def field(size=32, seed=0, condition="untreated"):
    return simulate_field("translocation", condition, size, seed=seed, cell_diameter=20.0).image


@pytest.mark.parametrize("shape", [(2, 32, 32), (3, 2, 32, 32), (2, 50, 70), (2, 20, 24)])
def test_output_has_input_shape_and_dtype(model, shape):
    image = random_image(shape, seed=1)
    out = pd.translate(model, image, "untreated", "TNFa", steps=3)
    assert out.shape == image.shape and out.dtype == np.uint16


def test_float_input_stays_float(model):
    image = field().astype(np.float32)
    out = pd.translate(model, image, "untreated", "TNFa", steps=3)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_wrong_channels_and_shapes_are_explained(model):
    with pytest.raises(DataError, match="3 channel.*trained on 2: DNA, reporter"):
        pd.translate(model, random_image((3, 32, 32)), "untreated", "TNFa", steps=2)
    with pytest.raises(DataError, match=r"give \(C, Y, X\) or \(N, C, Y, X\)\."):
        pd.translate(model, random_image((32, 32)), "untreated", "TNFa", steps=2)
    nan = field().astype(np.float32)
    nan[0, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pd.translate(model, nan, "untreated", "TNFa", steps=2)


def test_same_seed_same_result(model):
    image = field(48, seed=2)
    first = pd.translate(model, image, "untreated", "TNFa", steps=4, seed=7)
    again = pd.translate(model, image, "untreated", "TNFa", steps=4, seed=7)
    assert np.array_equal(first, again)
    stochastic = [
        pd.translate(model, image, "untreated", "TNFa", steps=4, strength=1.0, seed=s, eta=1.0) for s in (1, 1, 2)
    ]
    assert np.array_equal(stochastic[0], stochastic[1]) and not np.array_equal(stochastic[0], stochastic[2])


def test_several_targets_share_one_inversion(model, monkeypatch, every_step_whole):
    image = field(seed=4)
    steps = 5
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    both = pd.translate(model, image, "untreated", ["TNFa", "untreated"], steps=steps, strength=1.0, guidance=1.0)
    source = model.condition_index("untreated")
    assert [labels[0] for _, labels, _ in counter.calls[:steps]] == [source] * steps  # one inversion ...
    assert len(counter.calls) == 3 * steps  # ... then one generation per target
    monkeypatch.setattr(model, "unet", counter.unet)  # (undo would also undo every_step_whole)
    assert set(both) == {"TNFa", "untreated"}
    assert np.array_equal(
        both["TNFa"], pd.translate(model, image, "untreated", "TNFa", steps=steps, strength=1.0, guidance=1.0)
    )


def test_guidance_runs_conditional_and_null_together(model, monkeypatch, every_step_whole):
    counter = CountingUNet(model.unet)
    monkeypatch.setattr(model, "unet", counter)
    pd.translate(model, field(), "untreated", "TNFa", steps=2, strength=1.0, guidance=3.0, negative="null")
    assert len(counter.calls) == 4  # 2 inversion + 2 guided generation passes (conditional and null batched)


def test_progress_events_then_one_result(model):
    events = list(
        pd.iter_translate(
            model,
            np.stack([field(), field(seed=1)]),
            "untreated",
            ["TNFa", "untreated"],
            steps=3,
            strength=1.0,
            batch_size=1,
        )
    )
    total = 2 * 3 * 3  # two single-tile batches x (inversion + two generations) x 3 steps
    assert [e.step for e in events[:-1]] == list(range(1, total + 1))
    assert all(e.total == total for e in events)
    assert [e.phase for e in events[:3]] == ["invert"] * 3 and events[3].target == "TNFa"
    assert events[-1].phase == "done" and set(events[-1].result) == {"TNFa", "untreated"}


def test_stopping_between_steps_returns_nothing(model):
    events = pd.iter_translate(model, field(), "untreated", "TNFa", steps=10)
    seen = [next(events) for _ in range(4)]
    events.close()
    assert all(e.result is None for e in seen)
    with pytest.raises(StopIteration):
        next(events)


def test_whole_field_matches_tiles_where_there_is_one_tile(model):
    image = field(32, seed=5)
    tiled = pd.translate(model, image, "untreated", "TNFa", steps=3, tiles=True)
    whole = pd.translate(model, image, "untreated", "TNFa", steps=3, tiles=False)
    assert np.array_equal(tiled, whole)


@pytest.mark.slow
def test_demo_model_reconstructs_source_to_source():
    """Inversion then regeneration with the SAME condition gives the input back (DDIM's near-exact inversion)."""
    model = pd.load_checkpoint("demo", device="cpu")
    fields = np.stack(
        [simulate_field("translocation", "untreated", 48, seed=s, cell_diameter=20.0).image for s in (11, 12)]
    )
    back = pd.translate(
        model, fields, "untreated", "untreated", steps=50, strength=1.0, guidance=1.0, tiles=True, keep_channels=()
    )  # the demo keeps its DNA by default: here every channel is regenerated
    scaled_in = model.normalization.forward(fields)
    scaled_out = model.normalization.forward(back)
    rmse = float(np.sqrt(np.mean((scaled_out - scaled_in) ** 2)))
    # measured 0.086 here (0.028 on 96-px fields, where overlapping tiles average out); a translation to the
    # other condition moves the same fields about 3x as far
    assert rmse < 0.1, f"round trip RMSE {rmse:.3f} in the normalised [-1, 1] range"
    changed = pd.translate(
        model, fields, "untreated", "TNFa", steps=50, strength=1.0, guidance=1.0, tiles=True, keep_channels=()
    )
    assert rmse < 0.5 * float(np.sqrt(np.mean((model.normalization.forward(changed) - scaled_in) ** 2)))


def test_sample_generates_images_of_a_condition(model):
    from napari_phendiff.core.walk import sample

    images = sample(model, "TNFa", n=3, steps=3, seed=1)
    assert images.shape == (3, 2, 32, 32) and images.dtype == np.uint16
    assert np.array_equal(images, sample(model, "TNFa", n=3, steps=3, seed=1))
    assert not np.array_equal(images, sample(model, "TNFa", n=3, steps=3, seed=2))


def test_lower_precision_stays_close_to_float32(tiny_checkpoint):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    image = np.random.default_rng(4).poisson(800, (2, 32, 32)).astype(np.uint16)
    reference = model.normalization.forward(pd.translate(model, image, "untreated", "TNFa", steps=2, precision="fp32"))
    fast = model.normalization.forward(pd.translate(model, image, "untreated", "TNFa", steps=2, precision="bf16"))
    psnr = 10 * np.log10(4 / np.mean((reference - fast) ** 2))  # normalised data span [-1, 1]: peak 2
    assert 25 < psnr < 200
    with pytest.raises(ValueError, match="precision must be one of"):
        pd.translate(model, image, "untreated", "TNFa", steps=2, precision="int8")


def test_samples_that_could_not_differ_are_refused_before_any_translation(tiny_checkpoint, sim_data, tmp_path):
    from napari_phendiff.core.batch import translate_files
    from napari_phendiff.core.explore import translate_samples

    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    image = pd.read_image(sorted((sim_data / "untreated").glob("*.tif"))[0])
    # strength 0.3 x 4 steps regenerates in one step, which adds no noise: the spread would be 0 everywhere
    with pytest.raises(ConfigError, match="regeneration is one step.*Use at least 5 steps"):
        translate_samples(model, image, "untreated", "TNFa", 2, steps=4, strength=0.3)
    with pytest.raises(ConfigError, match="BDIA"):
        translate_samples(model, image, "untreated", "TNFa", 2, steps=10, inversion="bdia")
    with pytest.raises(ConfigError, match="regeneration is one step"):
        translate_files(
            tiny_checkpoint,
            [sim_data / "untreated"],
            "untreated",
            ["TNFa"],
            tmp_path / "out",
            device="cpu",
            samples=2,
            steps=4,
            strength=0.3,
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tif"))
    mean, spread = translate_samples(model, image, "untreated", "TNFa", 2, steps=5, strength=0.3)
    assert spread.max() > 0  # two noisy regeneration steps: the samples differ


def test_a_model_trained_on_resized_images_translates_them_resized(sim_data, tmp_path):
    """`--resize` training scales whole images to the model's size; translation shows the model its inputs so and
    scales the result back (it used to run a 32-px model on the 48-px fields as they were)."""
    model = pd.load_checkpoint(
        pd.train(
            pd.TrainConfig(
                data=sim_data,
                out=tmp_path / "m",
                image_size=32,
                steps=2,
                batch_size=2,
                resize=True,
                device="cpu",
                channel_names=["DNA", "reporter"],
            )
        ),
        device="cpu",
    )
    image = pd.read_image(sorted((sim_data / "untreated").glob("*.tif"))[0])
    assert image.shape[-2:] == (48, 48)
    counter = CountingUNet(model.unet)
    model.unet = counter
    translated = pd.translate(model, image, "untreated", "TNFa", steps=4, strength=0.5)
    assert {size for _, _, size in counter.calls} == {(32, 32)}
    assert translated.shape == image.shape and translated.dtype == image.dtype
    kept = pd.translate(model, image, "untreated", "TNFa", steps=4, strength=0.5, keep_channels=("DNA",))
    np.testing.assert_array_equal(kept[0], image[0])  # kept channels stay the original's pixels, not rescaled ones
    with pytest.raises(ConfigError, match="trained on whole images scaled to 32 px"):
        pd.translate(model, image, "untreated", "TNFa", steps=4, tiles=True)


@pytest.mark.slow
def test_the_time_left_is_timed_on_the_runs_own_steps(model):
    events = list(
        pd.iter_translate(
            model,
            field(64, seed=2),
            "untreated",
            "TNFa",
            steps=10,
            strength=0.5,
            guidance=3.0,
            tiles=True,
            batch_size=1,
            deep_cache=3,
        )
    )
    lefts = [e.seconds_left for e in events[:-1]]
    # known once an inversion step and a deep-cache cycle of generation steps beyond the first of each were timed
    first = next(i for i, left in enumerate(lefts) if left is not None)
    assert [e.phase for e in events[: first + 1]] == ["invert"] * 5 + ["generate"] * 4
    assert all(left is not None and left >= 0 for left in lefts[first:])
    assert lefts[-1] == 0 and lefts[first] > lefts[(first + len(lefts)) // 2] > 0  # it falls as the work goes on


def test_pace_times_each_phase_per_tile():
    from napari_phendiff.core.pace import Pace, duration
    from napari_phendiff.core.translate import TranslateEvent

    pace = Pace(inverse_tiles=2 * 4, generate_tiles=2 * 4)  # two steps each way on batches of 4 tiles
    steps = iter(
        [
            TranslateEvent("invert", 1, 4),
            TranslateEvent("invert", 2, 4),
            TranslateEvent("generate", 3, 4),
            TranslateEvent("generate", 4, 4),
        ]
    )
    seen = list(pace.follow(steps, tiles=4))
    assert [e.seconds_left is None for e in seen] == [True, True, True, False] and seen[-1].seconds_left == 0
    assert pace.timed == {"invert": 4, "generate": 4}
    cycled = Pace(inverse_tiles=4, generate_tiles=4 * 4, cycle=3)  # a deep cache of 3: one whole cycle timed first
    events = [TranslateEvent("invert", 1, 5)] + [TranslateEvent("generate", i, 5) for i in range(2, 6)]
    seen = list(cycled.follow(iter(events), tiles=4))
    assert [e.seconds_left is None for e in seen] == [True, True, True, True, False] and seen[-1].seconds_left == 0
    assert [duration(s) for s in (40, 720, 3900, 6000)] == ["40 s", "12 min", "65 min", "1 h 40 min"]
