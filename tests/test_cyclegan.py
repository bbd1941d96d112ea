"""The CycleGAN baseline: architecture, training on the labelled folder, exact resume, translation through the
same API as PhenDiff, and the command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import napari_phendiff as pd
from napari_phendiff.cli import main
from napari_phendiff.core.errors import CheckpointError, DataError
from napari_phendiff.core.models.cyclegan import CycleGANModel, architecture
from napari_phendiff.core.models.cyclegan_networks import (
    PatchDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    receptive_field,
)
from napari_phendiff.core.simulate import simulate_field
from conftest import random_image


def config(data, out, **kw):
    base = dict(
        data=data,
        out=out,
        model="cyclegan",
        preset="tiny",
        image_size=32,
        steps=6,
        batch_size=2,
        checkpoint_every=3,
        device="cpu",
        channel_names=["DNA", "reporter"],
    )
    return pd.TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(sim_data, tmp_path_factory):
    """A straight 6-step run: its events and its checkpoint."""
    out = tmp_path_factory.mktemp("cyclegan") / "model"
    return list(pd.iter_train(config(sim_data, out))), out


@pytest.fixture(scope="module")
def model(run):
    return pd.load_checkpoint(run[1], device="cpu")


# --- architecture ------------------------------------------------------------------------------------------------


def test_discriminator_judges_70x70_patches():
    discriminator = PatchDiscriminator(channels=2, ndf=64)
    assert receptive_field(discriminator) == 70
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1] and [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert not isinstance(discriminator.model[1], nn.InstanceNorm2d)  # no norm on the first layer
    # Measured: with the instance norms (which mix the whole image) taken out, one output pixel depends on a
    # 70x70 patch of the input, and on nothing outside it.
    for i, layer in enumerate(discriminator.model):
        if isinstance(layer, nn.InstanceNorm2d):
            discriminator.model[i] = nn.Identity()
    x = torch.randn(1, 2, 128, 128, requires_grad=True)
    out = discriminator(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows, cols = np.nonzero(x.grad.abs().sum(dim=(0, 1)).numpy())
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (70, 70)


@pytest.mark.parametrize("size", [32, 48, 68])
def test_generator_output_has_input_size(size):
    generator = ResnetGenerator(channels=3, ngf=16, n_blocks=6)
    x = torch.randn(2, 3, size, size)
    y = generator(x)
    assert y.shape == x.shape and y.abs().max() <= 1  # tanh: the normalised range


def test_paper_preset_is_the_original_cyclegan():
    arch = architecture("paper", channels=3)
    assert (arch["ngf"], arch["ndf"], arch["n_blocks"], arch["n_layers"]) == (64, 64, 9, 3)
    generator = ResnetGenerator(3, arch["ngf"], arch["n_blocks"])
    discriminator = PatchDiscriminator(3, arch["ndf"], arch["n_layers"])
    assert sum(isinstance(m, ResnetBlock) for m in generator.modules()) == 9
    # The parameter counts the reference implementation prints for RGB images.
    assert sum(p.numel() for p in generator.parameters()) == 11_378_179
    assert sum(p.numel() for p in discriminator.parameters()) == 2_764_737


# --- training and translation -------------------------------------------------------------------------------------


def test_trains_and_writes_a_cyclegan_checkpoint(run):
    events, out = run
    kinds = [e.kind for e in events]
    assert kinds == ["start"] + ["step"] * 3 + ["checkpoint"] + ["step"] * 3 + ["done"]
    steps = [e for e in events if e.kind == "step"]
    assert all(np.isfinite(e.loss) and e.loss > 0 for e in steps)
    lrs = [e.lr for e in steps]  # constant for the first half, then linearly down to 0
    assert lrs[:2] == [2e-4, 2e-4] and lrs[2] > lrs[3] > lrs[4] > lrs[5] == 0
    manifest = json.loads((out / "phendiff.json").read_text())
    assert manifest["kind"] == "cyclegan" and manifest["trained_steps"] == 6
    assert manifest["conditions"] == ["TNFa", "untreated"] and manifest["channel_names"] == ["DNA", "reporter"]
    assert manifest["architecture"]["ngf"] == 16 and manifest["objective"]["lambda_cycle"] == 10
    assert {"normalization", "training", "provenance", "image_size"} <= manifest.keys()
    assert not [p for p in out.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".ckpt", ".pkl"}]


def test_checkpoint_translates_through_the_same_api(model):
    assert isinstance(model, CycleGANModel) and model.kind == "cyclegan"
    assert not model.generators.training
    image = random_image((2, 40, 52), seed=1)
    out = pd.translate(model, image, "untreated", "TNFa")
    assert out.shape == image.shape and out.dtype == np.uint16
    assert not np.array_equal(out, image)
    assert np.array_equal(pd.translate(model, image, "untreated", "untreated"), image)  # no change asked, none made
    stack = np.stack([simulate_field("translocation", "TNFa", 32, seed=s, cell_diameter=20.0).image for s in (1, 2)])
    both = pd.translate(model, stack.astype(np.float32), "TNFa", ["untreated", "TNFa"])
    assert both["untreated"].shape == stack.shape and both["untreated"].dtype == np.float32
    assert np.isfinite(both["untreated"]).all()
    events = list(pd.iter_translate(model, image, "untreated", "TNFa"))
    assert [e.phase for e in events][-1] == "done" and events[-1].step == events[-1].total


def test_stopped_run_resumes_and_ends_identical(run, sim_data, tmp_path):
    events = pd.iter_train(config(sim_data, tmp_path / "stopped"))
    for event in events:
        if event.kind == "step" and event.step == 2:
            break
    events.close()  # what a Stop button or Ctrl-C does: save, then end
    assert json.loads((tmp_path / "stopped" / "phendiff.json").read_text())["trained_steps"] == 2

    resumed = list(pd.iter_train(config(sim_data, tmp_path / "stopped", resume=True)))
    assert resumed[0].kind == "start" and "resuming at step 2" in resumed[0].message
    assert [e.step for e in resumed if e.kind == "step"] == [3, 4, 5, 6]
    for name in ("cyclegan.safetensors", "training/discriminators/model.safetensors", "training/pools.safetensors"):
        straight, stopped = load_file(run[1] / name), load_file(tmp_path / "stopped" / name)
        assert straight.keys() == stopped.keys()
        for key in straight:
            torch.testing.assert_close(straight[key], stopped[key], rtol=1e-5, atol=1e-6)


def test_refuses_overwrite_and_mismatched_resume(run, sim_data):
    with pytest.raises(CheckpointError, match="already holds a checkpoint.*--resume"):
        pd.train(config(sim_data, run[1]))
    with pytest.raises(CheckpointError, match="already trained 6 steps"):
        pd.train(config(sim_data, run[1], resume=True))


def test_needs_exactly_two_conditions(sim_data, tmp_path):
    three = tmp_path / "three"
    shutil.copytree(sim_data, three)
    shutil.copytree(three / "untreated", three / "LPS")
    with pytest.raises(DataError, match="exactly two conditions.*has 3.*two subfolders"):
        pd.train(config(three, tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_damaged_checkpoint_is_explained(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run[1], copy)
    manifest = json.loads((copy / "phendiff.json").read_text())
    manifest["architecture"]["ngf"] = 32
    (copy / "phendiff.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        pd.load_checkpoint(copy, device="cpu")


def test_command_line(sim_data, tmp_path, capsys):
    ckpt, out = tmp_path / "model", tmp_path / "translated"
    assert (
        main(
            [
                "train",
                str(sim_data),
                "--out",
                str(ckpt),
                "--model",
                "cyclegan",
                "--image-size",
                "32",
                "--steps",
                "2",
                "--batch-size",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    inputs = sorted((sim_data / "untreated").glob("*.tif"))[:1]
    assert (
        main(
            [
                "translate",
                str(ckpt),
                *map(str, inputs),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    written = pd.read_image(out / f"{inputs[0].stem}_to_TNFa.tif")
    assert written.shape == pd.read_image(inputs[0]).shape


def test_kept_channels_are_copied_from_the_input(model):
    image = random_image((2, 32, 32), seed=9)
    mapped = pd.translate(model, image, "untreated", "TNFa")
    kept = pd.translate(model, image, "untreated", "TNFa", keep_channels=("DNA",))
    np.testing.assert_array_equal(kept[0], image[0])
    np.testing.assert_array_equal(kept[1], mapped[1])  # a direct mapping does not see the kept channel change
