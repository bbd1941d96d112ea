"""Every model kind of the registry, through the same path: train 2 steps, save, load, translate with the engine and
through the Translate dock, and resume exactly."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

import napari_phendiff as pd
from napari_phendiff.core.models import KINDS
from napari_phendiff.core.translate import iter_translate

from conftest import random_image, tiny_base, wait_for

pytest.importorskip("napari")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("registry-base") / "sd")


def config(kind, data, out, base, **kw):
    settings = dict(
        data=data,
        out=out,
        model=kind,
        image_size=32,
        steps=2,
        batch_size=2,
        checkpoint_every=5,
        device="cpu",
        channel_names=["DNA", "reporter"],
    )
    if KINDS[kind].fine_tunes:
        settings.update(base=str(base), adapter="lora", rank=2)
    return pd.TrainConfig(**{**settings, **kw})


def tensors(folder):
    """Every tensor the checkpoint holds (its weights and training state), by file and name."""
    return {
        f"{path.relative_to(folder)}:{name}": value
        for path in sorted(folder.rglob("*.safetensors"))
        for name, value in load_file(path).items()
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_trains_loads_translates_and_resumes_exactly(
    kind, sim_data, base, tmp_path, make_napari_viewer, qtbot
):
    straight = pd.train(config(kind, sim_data, tmp_path / "straight", base))
    model = pd.load_checkpoint(straight, device="cpu")
    assert model.kind == kind and model.conditions == ["TNFa", "untreated"]

    image = random_image((2, 32, 32), seed=1)
    events = list(iter_translate(model, image, "untreated", "TNFa", steps=2))
    assert events[-1].phase == "done" and events[-1].result.shape == image.shape

    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    dock.select_checkpoint(straight)
    dock.steps.setValue(2)
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.source.setCurrentText("untreated")
    dock.target.setCurrentText("TNFa")
    viewer.add_image(image, name="cells")
    dock.set_channel_layers(["cells"])
    worker = dock.translate()
    assert worker is not None
    wait_for(qtbot, worker, 120_000)
    name = "cells_reporter_to_TNFa" if kind == "cyclegan" else "cells_reporter_to_TNFa_s0.3_w4"  # direct: no settings
    assert viewer.layers[name].data.shape == image.shape[1:]
    assert "Done" in dock.status.text() and dock.translate_button.isEnabled()

    stopped = tmp_path / "stopped"
    run = pd.iter_train(config(kind, sim_data, stopped, base))
    for event in run:
        if event.kind == "step":
            break
    run.close()  # Stop after one step: saves a resumable checkpoint
    resumed = list(pd.iter_train(config(kind, sim_data, stopped, base, resume=True)))
    assert resumed[0].message.startswith("resuming at step 1") and resumed[-1].step == 2
    ours, theirs = tensors(stopped), tensors(straight)
    assert ours.keys() == theirs.keys() and ours
    different = [name for name in ours if not (ours[name] == theirs[name]).all()]
    assert different == []
