"""The Train dock's first choice: fine-tune (the shipped base, a PhenDiff checkpoint, a Stable Diffusion folder or hub
id) or train from scratch; the TrainConfig each builds, the checks it runs before the click, and resuming."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_phendiff.core.checkpoint import DEMO_CHECKPOINT  # noqa: E402
from napari_phendiff.core.models import KINDS, read_manifest  # noqa: E402
from napari_phendiff.core.options import (
    ADAPTER_LR,
    ADAPTERS,
    PRESET_SIZES,
    TrainConfig,
    default_lr,  # noqa: E402
    default_steps,
)
from napari_phendiff.core.training.run import train  # noqa: E402
from napari_phendiff.widgets import _train_choice  # noqa: E402
from napari_phendiff.widgets.train_dock import TrainDock  # noqa: E402

from conftest import tiny_base, wait_for  # noqa: E402

WAIT_MS = 120_000
COSTS = {
    "measured_on": "a test computer",
    "image_size": 64,
    "batch_size": 16,
    "adapters": {
        "lora": {"seconds_per_step": 0.5, "peak_memory_mb": 900.0, "checkpoint_mb": 1.2},
        "full": {"seconds_per_step": 2.0, "peak_memory_mb": 4100.0, "checkpoint_mb": 350.0},
    },
}


# the docks' list of recent checkpoints is kept out of the user's own (conftest.py)
pytestmark = pytest.mark.usefixtures("isolated_recent_checkpoints")


@pytest.fixture
def dock(make_napari_viewer):
    return TrainDock(make_napari_viewer())


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny random Stable Diffusion 2-shaped pipeline (16 px images), without a text encoder."""
    return tiny_base(tmp_path_factory.mktemp("base") / "sd", text_encoder=False)


@pytest.fixture(scope="module")
def latent_checkpoint(sim_data, sd_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent") / "model"
    return train(
        TrainConfig(
            data=sim_data,
            out=out,
            model="latent",
            base=str(sd_folder),
            image_size=16,
            steps=1,
            batch_size=2,
            checkpoint_every=1,
            device="cpu",
            channel_names=["DNA", "reporter"],
        )
    )


def on_cpu(dock, data, out, steps=2, previews=0):
    """Small, fast settings for a run in the dock."""
    dock.set_data_folder(data)
    dock.out.setText(str(out))
    for box, value in (
        (dock.steps, steps),
        (dock.batch_size, 2),
        (dock.checkpoint_every, steps),
        (dock.previews, previews),
    ):
        box.setValue(value)
    dock.device.setCurrentIndex(dock.device.findData("cpu"))


def test_the_default_fine_tunes_the_shipped_base_with_lora(dock, sim_data, tmp_path):
    assert dock.what.currentData() == "fine-tune" and dock.source.currentData() == "shipped"
    assert not dock.adapter.isHidden() and dock.model.isHidden() and dock.preset.isHidden()
    dock.set_data_folder(sim_data)
    dock.out.setText(str(tmp_path / "model"))
    config = dock.config()
    assert (config.model, config.base, config.adapter, config.rank) == ("latent", "microscopy", "lora", 4)
    assert config.start_from is None and config.image_size == 64  # the shipped base's own size
    assert config.lr == pytest.approx(default_lr("latent", "lora", "microscopy"))  # the base's own (base.json)
    assert config.steps == default_steps("latent", "microscopy") < 5000  # minutes, not hours, on a CPU
    dock.what.setCurrentIndex(dock.what.findData("scratch"))
    assert dock.config().steps == 5000  # a model from random weights


def test_train_for_a_time_budget_replaces_the_steps(dock, sim_data, tmp_path):
    dock.set_data_folder(sim_data)
    dock.out.setText(str(tmp_path / "model"))
    assert dock.config().minutes is None and dock.steps.isEnabled()
    dock.resume.setChecked(True)
    dock.minutes.setValue(15)
    config = dock.config()
    assert config.minutes == 15 and not config.resume and not dock.steps.isEnabled()
    assert "about 15 min of training (the time budget)" in dock.costs.text()
    dock.minutes.setValue(0)
    assert dock.config().minutes is None and dock.steps.isEnabled()


@pytest.mark.parametrize("name", ["tiny_checkpoint", "demo"])
def test_a_phendiff_checkpoint_starts_a_pixel_run_at_its_preset_and_size(dock, name, request):
    checkpoint = str(request.getfixturevalue(name)) if name != "demo" else "demo"
    manifest = read_manifest(checkpoint)
    dock.set_start_from(checkpoint)
    assert dock.source.currentData() == "checkpoint" and not dock.start_from.isHidden()
    assert not dock.preset.isHidden() and not dock.preset.isEnabled()  # the checkpoint fixes it
    assert dock.adapter.isHidden()
    config = dock.config()
    assert (config.model, config.start_from, config.preset) == ("pixel", checkpoint, manifest["preset"])
    assert config.image_size == manifest["image_size"] and config.lr == pytest.approx(KINDS["pixel"].lr)
    info = dock.source_info.text()
    assert "TNFa, untreated" in info and "DNA, reporter" in info and f"{manifest['trained_steps']} trained" in info


def test_train_from_scratch_offers_the_kinds_that_do_not_fine_tune(dock):
    dock.set_start_from("demo")
    dock.what.setCurrentIndex(dock.what.findData("scratch"))
    offered = [dock.model.itemData(i) for i in range(dock.model.count())]
    assert offered == [name for name, kind in KINDS.items() if not kind.fine_tunes] == ["pixel", "cyclegan"]
    assert dock.source.isHidden() and dock.start_from_row.isHidden() and dock.preset.isEnabled()
    dock.preset.setCurrentIndex(dock.preset.findData("small"))
    config = dock.config()
    assert (config.model, config.preset, config.image_size) == ("pixel", "small", PRESET_SIZES["small"])
    assert config.start_from is None and config.base is None
    dock.model.setCurrentIndex(dock.model.findData("cyclegan"))
    assert dock.config().model == "cyclegan" and not dock.previews.isEnabled()


def test_a_checkpoint_that_cannot_start_a_run_is_refused_in_one_line(dock, latent_checkpoint, tmp_path, sim_data):
    dock.set_start_from(latent_checkpoint)
    assert "is a 'latent' checkpoint" in dock.source_info.text() and "e06c75" in dock.source_info.text()
    dock.set_start_from(tmp_path / "nowhere")
    assert "no such checkpoint folder" in dock.source_info.text()
    dock.set_start_from("")
    dock.set_data_folder(sim_data)
    assert dock.train() is None and "Give the PhenDiff checkpoint to start from" in dock.source_info.text()
    assert "Give" not in dock.status.text()  # next to the control it concerns, not at the bottom


def test_a_hub_id_is_read_off_the_ui_thread_and_fails_fast_offline(dock, qtbot):
    began = time.monotonic()
    worker = dock.set_base("nobody/no-such-model")
    assert worker is not None and time.monotonic() - began < 0.5  # the UI thread only started it
    assert not dock.train_button.isEnabled() and dock.train() is None  # Train waits for the answer
    qtbot.waitUntil(lambda: "nobody/no-such-model:" in dock.source_info.text(), timeout=5_000)
    assert time.monotonic() - began < 5 and "e06c75" in dock.source_info.text()  # one error line, in seconds
    qtbot.waitUntil(dock.train_button.isEnabled, timeout=5_000)


@pytest.mark.slow
def test_a_stable_diffusion_folder_is_read_then_fine_tuned_in_the_dock(dock, qtbot, sd_folder, sim_data, tmp_path):
    worker = dock.set_base(sd_folder)
    assert dock.source.currentData() == "stable-diffusion" and not dock.train_button.isEnabled()
    assert worker is not None
    qtbot.waitUntil(lambda: dock.train_button.isEnabled(), timeout=30_000)
    assert dock.image_size.value() == 16 and "16 px" in dock.source_info.text()  # the base's own size
    assert [dock.adapter.itemData(i) for i in range(dock.adapter.count())] == list(ADAPTERS)
    dock.adapter.setCurrentIndex(dock.adapter.findData("svdiff"))
    assert not dock.rank.isEnabled() and dock.lr.value() == pytest.approx(ADAPTER_LR["svdiff"])
    config = dock.config()
    assert (config.model, config.base, config.adapter, config.start_from) == ("latent", str(sd_folder), "svdiff", None)
    on_cpu(dock, sim_data, tmp_path / "dock-model", previews=1)
    wait_for(qtbot, dock.train(), WAIT_MS)
    manifest = json.loads((tmp_path / "dock-model" / "phendiff.json").read_text())
    assert manifest["kind"] == "latent" and manifest["adapter"] == "svdiff" and manifest["trained_steps"] == 2
    assert dock.viewer.layers["preview: TNFa"].data.shape == (1, 2, 16, 16)


def test_resume_refuses_a_checkpoint_without_training_state(dock):
    dock.out.setText(str(DEMO_CHECKPOINT))
    dock.resume.setChecked(True)
    assert not dock.resume.isChecked()
    assert "holds no training state, so it cannot be resumed" in dock.status.text()
    assert "choose Fine-tune > a PhenDiff checkpoint" in dock.status.text()


def test_resume_takes_the_settings_of_a_checkpoint_trained_from_scratch_and_says_which(dock, tiny_checkpoint):
    dock.out.setText(str(tiny_checkpoint))
    dock.resume.setChecked(True)
    assert dock.resume.isChecked() and dock.what.currentData() == "scratch"
    assert (dock.model.currentData(), dock.preset.currentData(), dock.image_size.value()) == ("pixel", "tiny", 32)
    assert dock.channel_names.text() == "DNA, reporter" and dock.batch_size.value() == 4
    said = dock.status.text()
    for taken in ("model pixel", "preset tiny", "image size 32 px", "channels DNA, reporter", "batch size 4"):
        assert taken in said


def test_resume_of_a_fine_tuned_latent_checkpoint_chooses_its_base(dock, latent_checkpoint, sd_folder):
    dock.out.setText(str(latent_checkpoint))
    dock.resume.setChecked(True)
    assert (dock.what.currentData(), dock.source.currentData()) == ("fine-tune", "stable-diffusion")
    assert dock.base.text() == str(sd_folder.resolve()) and dock.image_size.value() == 16
    config = dock.config()
    assert (config.model, config.base, config.adapter, config.resume) == (
        "latent",
        str(sd_folder.resolve()),
        "lora",
        True,
    )
    assert f"base {sd_folder.resolve()}" in dock.status.text() and "adapter lora (rank 4)" in dock.status.text()


@pytest.mark.slow
def test_a_run_fine_tuned_from_a_phendiff_checkpoint_trains_and_resumes_as_one(
    qtbot, make_napari_viewer, tiny_checkpoint, sim_data, tmp_path
):
    viewer = make_napari_viewer()
    first = TrainDock(viewer)
    first.set_start_from(tiny_checkpoint)
    on_cpu(first, sim_data, tmp_path / "tuned")
    wait_for(qtbot, first.train(), WAIT_MS)
    manifest = read_manifest(tmp_path / "tuned")
    assert manifest["started_from"]["checkpoint"] == str(tiny_checkpoint.resolve()) and manifest["trained_steps"] == 2

    again = TrainDock(viewer)  # a fresh dock: the default choice is the shipped base
    again.out.setText(str(tmp_path / "tuned"))
    again.resume.setChecked(True)
    assert (again.what.currentData(), again.source.currentData()) == ("fine-tune", "checkpoint")
    assert again.start_from.text() == str(tiny_checkpoint) and f"started from {tiny_checkpoint}" in again.status.text()
    again.steps.setValue(3)
    again.device.setCurrentIndex(again.device.findData("cpu"))
    wait_for(qtbot, again.train(), WAIT_MS)
    assert read_manifest(tmp_path / "tuned")["trained_steps"] == 3


def test_the_adapter_costs_and_the_run_estimate_are_shown_before_the_click(dock, qtbot, monkeypatch):
    monkeypatch.setattr(_train_choice, "adapter_costs", lambda base: COSTS if base == "microscopy" else None)
    dock.steps.setValue(1000)
    dock.batch_size.setValue(32)
    dock.image_size.setValue(128)
    text = dock.costs.text()
    assert "Measured on a test computer, at 64 px, batch 16" in text
    assert "lora: 0.5 s/step, 900 MB peak memory, checkpoint 1.2 MB" in text and "full: 2 s/step" in text
    # 1000 steps x 0.5 s, twice the batch, four times the pixels: 4000 s
    assert "This run (lora, 1000 steps, batch 32, 128 px): about 67 min, an estimate" in text
    dock.adapter.setCurrentIndex(dock.adapter.findData("svdiff"))
    assert "svdiff: not measured" in dock.costs.text()

    dock.set_base("/no/such/base")  # a folder never measured
    assert "not measured for this base (docs/benchmarks.md)" in dock.costs.text()
    qtbot.waitUntil(dock.train_button.isEnabled, timeout=5_000)
    dock.what.setCurrentIndex(dock.what.findData("scratch"))
    assert dock.costs.isHidden()


def test_the_shipped_base_is_fine_tuned_offline_in_the_dock(dock, qtbot, sim_data, tmp_path):
    on_cpu(dock, sim_data, tmp_path / "shipped")
    assert dock.image_size.value() == 64  # the base's own size, larger than these 48-px images: refused in the dock
    wait_for(qtbot, dock.train(), WAIT_MS)
    assert "smaller than the model's image size 64 px" in dock.status.text()
    dock.image_size.setValue(48)  # 12 x 12 latents: the base's UNet takes any multiple of 16 px
    wait_for(qtbot, dock.train(), WAIT_MS)
    manifest = read_manifest(tmp_path / "shipped")
    assert manifest["kind"] == "latent" and manifest["base"]["source"] == "microscopy"


def test_whole_images_mixed_precision_and_min_snr_reach_the_run(dock, sim_data, tmp_path):
    """The settings the command line has for every kind (--resize, --mixed-precision, --snr-gamma) are in the dock,
    at the command line's defaults, and reach the TrainConfig."""
    dock.set_data_folder(sim_data)
    dock.out.setText(str(tmp_path / "model"))
    config = dock.config()
    assert (config.resize, config.mixed_precision, config.snr_gamma) == (False, "auto", 0.0)
    dock.resize.setChecked(True)
    dock.mixed_precision.setCurrentIndex(dock.mixed_precision.findData("bf16"))
    dock.snr_gamma.setValue(5.0)
    assert config.noise_offset == 0.0 and dock.noise_offset.specialValueText() == "off"
    dock.noise_offset.setValue(0.1)
    assert config.optimizer == "adamw"
    dock.optimizer.setCurrentIndex(dock.optimizer.findData("adamw8bit"))
    config = dock.config()
    assert config.optimizer == "adamw8bit" and "bitsandbytes" in dock.optimizer.toolTip()
    assert (config.resize, config.mixed_precision, config.snr_gamma) == (True, "bf16", 5.0)
    assert config.noise_offset == pytest.approx(0.1)
    assert "Hang et al. 2023" in dock.snr_gamma.toolTip() and dock.snr_gamma.specialValueText() == "off"


def test_resume_takes_whole_images_and_min_snr_from_the_checkpoint(dock, tiny_checkpoint, tmp_path):
    """A resumed run must keep them (the core refuses a change): the dock sets them as the checkpoint has them."""
    import shutil

    copy = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    manifest = json.loads((copy / "phendiff.json").read_text())
    manifest["training"].update(resize=True, snr_gamma=5.0, noise_offset=0.1, optimizer="adamw8bit")
    (copy / "phendiff.json").write_text(json.dumps(manifest))
    dock.out.setText(str(copy))
    dock.resume.setChecked(True)
    assert dock.resume.isChecked() and dock.resize.isChecked() and dock.snr_gamma.value() == 5.0
    assert dock.noise_offset.value() == pytest.approx(0.1)
    assert "whole images scaled" in dock.status.text() and "min-SNR γ 5" in dock.status.text()
    assert "noise offset 0.1" in dock.status.text() and "optimizer adamw8bit" in dock.status.text()
    assert dock.optimizer.currentData() == "adamw8bit"
