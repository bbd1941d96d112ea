"""The checkpoint folder: diffusers-native, complete, atomic, and never unpickled."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from diffusers import DDIMScheduler, UNet2DModel

import napari_phendiff as pd
from napari_phendiff.core import checkpoint as ckpt
from napari_phendiff.core import writing
from napari_phendiff.core.batch import iter_translate_files
from napari_phendiff.core.checkpoint import atomic_folder
from napari_phendiff.core.errors import CheckpointError


def test_round_trip_keeps_what_translation_needs(tiny_checkpoint, sim_data):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    assert model.conditions == ["TNFa", "untreated"]
    assert model.channels == 2 and model.channel_names == ["DNA", "reporter"]
    assert model.image_size == 32
    assert len(model.normalization.low) == 2 and all(
        h > lo for lo, h in zip(model.normalization.low, model.normalization.high)
    )
    manifest = json.loads((tiny_checkpoint / "phendiff.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["schedule"]["clip_sample"] is False
    assert manifest["trained_steps"] == 6 and manifest["provenance"]["data_folder"] == str(sim_data.resolve())
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())


def test_any_diffusers_user_can_open_it(tiny_checkpoint):
    unet = UNet2DModel.from_pretrained(tiny_checkpoint / "unet")
    scheduler = DDIMScheduler.from_pretrained(tiny_checkpoint / "scheduler")
    assert unet.config.num_class_embeds == 3  # two conditions + the null condition
    assert scheduler.config.clip_sample is False
    assert not list(tiny_checkpoint.rglob("*.bin"))


class _Exploit:
    """Unpickling this would create a file: proof that a loader executed the pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_weights_are_refused_without_being_opened(tiny_checkpoint, tmp_path):
    bad = shutil.copytree(tiny_checkpoint, tmp_path / "bad")
    marker = tmp_path / "executed"
    (bad / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match="pickled weights.*diffusion_pytorch_model.bin"):
        pd.load_checkpoint(bad, device="cpu")
    assert not marker.exists()


def test_incomplete_or_foreign_folders_are_explained(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder.*'demo'"):
        pd.load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    with pytest.raises(CheckpointError, match="phendiff.json is missing"):
        pd.load_checkpoint(tmp_path / "other")
    partial = shutil.copytree(tiny_checkpoint, tmp_path / "partial")
    (partial / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        pd.load_checkpoint(partial)
    future = shutil.copytree(tiny_checkpoint, tmp_path / "future")
    manifest = json.loads((future / "phendiff.json").read_text())
    (future / "phendiff.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        pd.load_checkpoint(future)


def test_atomic_folder_leaves_old_checkpoint_on_failure(tmp_path):
    out = tmp_path / "ckpt"
    previous = os.umask(0o022)
    try:
        with atomic_folder(out) as folder:
            (folder / "a.txt").write_text("first")
    finally:
        os.umask(previous)
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as folder:
            (folder / "a.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (out / "a.txt").read_text() == "first"
    assert out.stat().st_mode & 0o055 == 0o055 and (out / "a.txt").stat().st_mode & 0o044 == 0o044  # not private
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_unknown_condition_lists_the_known_ones(tiny_checkpoint):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(CheckpointError, match="knows TNFa, untreated"):
        pd.translate(model, np.zeros((2, 32, 32), np.uint16), "treated", "untreated")


def test_demo_checkpoint_is_shipped_and_small():
    model = pd.load_checkpoint("demo", device="cpu")
    assert model.conditions == ["TNFa", "untreated"] and model.channel_names == ["DNA", "reporter"]
    size = sum(p.stat().st_size for p in model.path.rglob("*") if p.is_file())
    assert size < 12e6
    assert not (model.path / "training").exists()


# --- one writer per output -----------------------------------------------------------------------------------------


@pytest.fixture
def other_process():
    """A live process that is not this one (its pid stands for another phendiff run)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hold_lock(out, pid, what="training"):
    lock = out.with_name(f".{out.name}.lock")
    lock.write_text(json.dumps({"pid": pid, "host": writing._HOST, "what": what, "since": "2026-12-04T10:00:00"}))
    return lock


def test_a_second_training_into_the_same_folder_is_refused_at_once(sim_data, tmp_path, other_process):
    from napari_phendiff.core.options import TrainConfig

    out = tmp_path / "model"
    lock = hold_lock(out, other_process)
    config = TrainConfig(data=sim_data, out=out, image_size=32, steps=2, batch_size=2, device="cpu")
    with pytest.raises(
        CheckpointError, match=f"training \\(process {other_process} on .*since 2026-12-04T10:00:00\\) is writing it"
    ):
        pd.train(config)
    assert not out.exists() and lock.is_file()  # the other run's lock stays
    with pytest.raises(CheckpointError, match="is writing it"):
        list(iter_translate_files("demo", [sim_data / "untreated"], "untreated", ["TNFa"], out, device="cpu"))


def test_a_lock_left_by_a_killed_process_is_taken_over_and_released(sim_data, tmp_path):
    from napari_phendiff.core.options import TrainConfig

    out = tmp_path / "model"
    lock = hold_lock(out, dead_pid())
    pd.train(TrainConfig(data=sim_data, out=out, image_size=32, steps=2, batch_size=2, device="cpu"))
    assert (out / "phendiff.json").is_file() and not lock.exists()


def test_atomic_folder_leaves_a_live_writers_temporary_alone(tmp_path, other_process):
    out = tmp_path / "model"
    live = tmp_path / f".model.writing-{writing._HOST}-{other_process}-abc123"
    dead = tmp_path / f".model.writing-{writing._HOST}-{dead_pid()}-def456"
    for folder in (live, dead):
        folder.mkdir()
    with ckpt.atomic_folder(out) as folder:
        (folder / "x").write_text("1")
    assert live.is_dir() and not dead.exists() and (out / "x").read_text() == "1"


def test_two_writers_of_one_output_in_this_process_exclude_each_other(tmp_path):
    out = tmp_path / "report"
    with ckpt.output_lock(out, "an evaluation"):
        with pytest.raises(CheckpointError, match=f"an evaluation \\(process {os.getpid()}"):
            with ckpt.output_lock(out, "another evaluation"):
                pass
    with ckpt.output_lock(out, "a later evaluation"):  # released after the first
        assert json.loads(out.with_name(".report.lock").read_text())["what"] == "a later evaluation"
