"""The training loop: checkpoints, refusal to overwrite, and exact resume after an interruption."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import napari_phendiff as pd
from napari_phendiff.core.errors import CheckpointError, ConfigError


def config(data, out, **kw):
    base = dict(
        data=data, out=out, preset="tiny", image_size=32, steps=6, batch_size=4, checkpoint_every=2, device="cpu"
    )
    return pd.TrainConfig(**{**base, **kw})


def weights(folder):
    return (
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"),
        load_file(folder / "training" / "model.safetensors"),
    )


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped_and_ends_identical(sim_data, tmp_path):
    straight = pd.train(config(sim_data, tmp_path / "straight"))

    events, losses = pd.iter_train(config(sim_data, tmp_path / "stopped")), []
    for event in events:
        losses += [(event.step, event.loss)] if event.kind == "step" else []
        if event.kind == "step" and event.step == 3:
            break
    events.close()  # what a Stop button or Ctrl-C does: save, then end
    stopped = json.loads((tmp_path / "stopped" / "phendiff.json").read_text())
    assert stopped["trained_steps"] == 3

    resumed = list(pd.iter_train(config(sim_data, tmp_path / "stopped", resume=True)))
    assert resumed[0].kind == "start" and resumed[0].step == 3 and "resuming at step 3" in resumed[0].message
    assert resumed[0].history == tuple(losses)  # the loss curve of the steps trained before
    assert [e.step for e in resumed if e.kind == "step"] == [4, 5, 6]
    for a, b in zip(weights(straight), weights(tmp_path / "stopped")):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_refuses_to_overwrite_and_checks_resume_settings(sim_data, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="already holds a checkpoint.*--resume"):
        pd.train(config(sim_data, tiny_checkpoint))
    with pytest.raises(CheckpointError, match="image_size: checkpoint 32, now 48"):
        pd.train(config(sim_data, tiny_checkpoint, resume=True, image_size=48, steps=10))
    with pytest.raises(CheckpointError, match="already trained 6 steps"):
        pd.train(config(sim_data, tiny_checkpoint, resume=True, steps=6))


@pytest.mark.slow
def test_loss_goes_down_on_real_data(sim_data, tmp_path):
    losses = [
        e.loss
        for e in pd.iter_train(
            config(sim_data, tmp_path / "m", steps=40, checkpoint_every=100, lr=1e-3, warmup_steps=5)
        )
        if e.kind == "step"
    ]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5


def test_pixel_checkpoint_without_a_saved_average_resumes_from_its_unet(sim_data, tmp_path):
    first = config(sim_data, tmp_path / "m", steps=2, batch_size=2)
    pd.train(first)
    (first.out / "training" / "average.safetensors").unlink()  # as napari-phendiff 0.1.0 wrote them
    pd.train(config(sim_data, first.out, steps=3, batch_size=2, resume=True))
    assert json.loads((first.out / "phendiff.json").read_text())["trained_steps"] == 3


def test_learning_rate_defaults_follow_the_model_and_adapter(tmp_path):
    assert config(tmp_path, tmp_path).lr == 2e-4
    assert pd.TrainConfig(data=tmp_path, out=tmp_path, model="latent", base="sd", adapter="full").lr == 1e-5
    assert pd.TrainConfig(data=tmp_path, out=tmp_path, model="latent", base="sd", adapter="svdiff").lr == 1e-3
    assert pd.TrainConfig(data=tmp_path, out=tmp_path, model="latent", base="sd", lr=3e-4).lr == 3e-4


def test_min_snr_weights_follow_the_paper_for_v_and_noise_prediction():
    from diffusers import DDPMScheduler

    from napari_phendiff.core.models.pixel import SCHEDULE_DEFAULTS
    from napari_phendiff.core.training.diffusion import loss_weights

    timesteps = torch.tensor([0, 100, 500, 900, 999])
    for prediction in ("v_prediction", "epsilon"):
        scheduler = DDPMScheduler.from_config({**SCHEDULE_DEFAULTS, "prediction_type": prediction})
        snr = scheduler.alphas_cumprod[timesteps] / (1 - scheduler.alphas_cumprod[timesteps])
        assert torch.equal(loss_weights(scheduler, timesteps, 0.0), torch.ones(5))
        weights = loss_weights(scheduler, timesteps, 5.0)
        # Hang et al.: min(SNR, gamma) / SNR on the noise loss; the v loss is (SNR + 1) times the noise loss.
        expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1 if prediction == "v_prediction" else snr)
        torch.testing.assert_close(weights, expected.float(), rtol=1e-4, atol=1e-6)
        assert weights[0] < 0.01  # almost clean samples are weighted down
        assert torch.isfinite(weights).all()


def test_min_snr_training_changes_the_loss_and_is_checked_on_resume(sim_data, tmp_path):
    plain = [e.loss for e in pd.iter_train(config(sim_data, tmp_path / "plain", steps=2)) if e.kind == "step"]
    weighted = [
        e.loss for e in pd.iter_train(config(sim_data, tmp_path / "snr", steps=2, snr_gamma=5.0)) if e.kind == "step"
    ]
    assert weighted[0] < plain[0]  # same batch and noise, every weight <= 1 and most well below
    assert json.loads((tmp_path / "snr" / "phendiff.json").read_text())["training"]["snr_gamma"] == 5.0
    with pytest.raises(CheckpointError, match="snr_gamma: checkpoint 5.0, now 0.0"):
        pd.train(config(sim_data, tmp_path / "snr", steps=4, resume=True))
    with pytest.raises(ConfigError, match="snr_gamma must be in"):
        config(sim_data, tmp_path / "bad", snr_gamma=-1)


def test_noise_offset_shifts_each_image_and_channel_and_is_checked_on_resume(sim_data, tmp_path, monkeypatch):
    from napari_phendiff.core.training import diffusion

    seen = []  # the noise the scheduler adds, per run
    real = diffusion.DDPMScheduler.add_noise
    monkeypatch.setattr(
        diffusion.DDPMScheduler, "add_noise", lambda self, x, noise, t: seen.append(noise) or real(self, x, noise, t)
    )
    pd.train(config(sim_data, tmp_path / "plain", steps=1))
    pd.train(config(sim_data, tmp_path / "offset", steps=1, noise_offset=0.5))
    plain, offset = seen
    shift = offset - plain  # the same draw, plus one constant per image and channel
    assert shift.shape == plain.shape and float(shift.abs().max()) > 0.05
    torch.testing.assert_close(shift, shift.mean(dim=(2, 3), keepdim=True).expand_as(shift))
    assert 0.2 < float(shift[:, :, 0, 0].std()) < 1.0  # about 0.5 x a standard normal
    with pytest.raises(CheckpointError, match="noise_offset: checkpoint 0.5, now 0.0"):
        pd.train(config(sim_data, tmp_path / "offset", steps=4, resume=True))
    with pytest.raises(ConfigError, match="noise_offset must be in"):
        config(sim_data, tmp_path / "bad", noise_offset=1.5)


@pytest.mark.slow
def test_a_time_budget_times_the_run_first_and_takes_the_steps_that_fit(sim_data, tmp_path):
    from napari_phendiff.core.training.run import PROBE_STEPS, iter_train

    events = list(iter_train(config(sim_data, tmp_path / "m", steps=None, minutes=0.05, checkpoint_every=500)))
    probes = [e for e in events if e.kind == "probe"]
    assert [e.step for e in probes] == list(range(1, PROBE_STEPS + 1)) and events[len(probes)].kind == "start"
    manifest = json.loads((tmp_path / "m" / "phendiff.json").read_text())
    budget = manifest["metadata"]["budget"]
    assert budget["steps"] == max(10, int(3.0 / budget["seconds_per_step"])) == manifest["trained_steps"]
    assert events[-1].kind == "done" and events[-1].step == budget["steps"]
    assert "fit 0.05 min" in events[len(probes)].message
    assert not list(tmp_path.glob("phendiff-probe-*"))  # the probe's folder is gone
    with pytest.raises(ConfigError, match="resume without minutes"):
        config(sim_data, tmp_path / "m", minutes=1, resume=True)
    with pytest.raises(ConfigError, match="above 0"):
        config(sim_data, tmp_path / "n", minutes=0)


def test_previews_come_from_the_model_being_trained_and_leave_the_run_unchanged(sim_data, tmp_path, monkeypatch):
    from napari_phendiff.core import models
    from napari_phendiff.core.walk import sample

    plain = pd.train(config(sim_data, tmp_path / "plain", steps=4))
    loads = []
    real_load = models.load_checkpoint
    monkeypatch.setattr(models, "load_checkpoint", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    events = list(pd.iter_train(config(sim_data, tmp_path / "previewed", steps=4), previews=2))
    kinds = [e.kind for e in events if e.kind != "step"]
    assert kinds == ["start", "checkpoint", "preview", "preview", "previews", "preview", "preview", "previews", "done"]
    assert "Making previews of step 2: untreated (2 of 2), 2 at 32 px…" in [e.message for e in events]
    assert loads == []  # no second copy of the model read from disk
    last = [e for e in events if e.kind == "previews"][-1]
    assert last.step == 4 and set(last.previews) == {"untreated", "TNFa"}

    # the previews are what the written checkpoint (its averaged weights) generates, and the run is the one it
    # would have been without them: the raw weights and train mode come back after each preview
    saved = pd.load_checkpoint(tmp_path / "previewed", device="cpu")
    for condition, images in last.previews.items():
        assert images.shape == (2, 2, 32, 32) and images.dtype == saved.normalization.dtype
        expected = sample(saved, condition, 2, steps=20, seed=0).astype(float)
        assert abs(images.astype(float) - expected).max() <= 0.01 * expected.max()
    for a, b in zip(weights(plain), weights(tmp_path / "previewed")):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_previews_are_generated_small_and_refused_for_a_kind_that_cannot_generate(sim_data, tmp_path):
    from napari_phendiff.core.training.previews import preview_side

    assert [preview_side(size, 8) for size in (32, 128, 512, 100)] == [32, 128, 128, 96]
    assert preview_side(4, 8) == 8
    with pytest.raises(ConfigError, match="cannot generate images: ask for no previews"):
        next(pd.iter_train(config(sim_data, tmp_path / "gan", model="cyclegan", preset="tiny"), previews=1))


def test_an_8bit_optimizer_trains_saves_its_state_and_resumes_identically(sim_data, tmp_path):
    straight = pd.train(config(sim_data, tmp_path / "straight", steps=4, optimizer="adamw8bit"))
    moments = load_file(straight / "training" / "optimizer.safetensors")
    assert any(v.dtype == torch.uint8 for v in moments.values())  # 8-bit moments, blockwise
    state = json.loads((straight / "training" / "state.json").read_text())
    assert set(state["optimizer_scalars"].values()) == {4}  # bitsandbytes' own step counts, kept as numbers

    pd.train(config(sim_data, tmp_path / "resumed", steps=2, optimizer="adamw8bit"))
    resumed = pd.train(config(sim_data, tmp_path / "resumed", steps=4, optimizer="adamw8bit", resume=True))
    for a, b in zip(weights(straight), weights(resumed)):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="optimizer: checkpoint 'adamw8bit', now 'adamw'"):
        pd.train(config(sim_data, tmp_path / "resumed", steps=6, resume=True))


def test_the_8bit_optimizer_is_refused_without_bitsandbytes_and_for_the_cyclegan(sim_data, tmp_path, monkeypatch):
    import importlib.util

    with pytest.raises(ConfigError, match="The CycleGAN baseline trains with its paper's Adam"):
        pd.train(config(sim_data, tmp_path / "gan", model="cyclegan", optimizer="adamw8bit"))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="needs bitsandbytes, which is not installed: pip install bitsandbytes"):
        pd.train(config(sim_data, tmp_path / "pixel", optimizer="adamw8bit"))
    assert not (tmp_path / "pixel").exists()
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        config(sim_data, tmp_path / "bad", optimizer="sgd")
