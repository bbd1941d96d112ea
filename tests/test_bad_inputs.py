"""What a careful user tries that should not work, or should not work silently: each case gives a clear error (or a
warning where the user may mean it) and writes nothing it should not; signals during training and translation
keep what was done."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import tifffile
import torch

import napari_phendiff as pd
from napari_phendiff.cli import main
from napari_phendiff.core import checkpoint as ckpt
from napari_phendiff.core import writing
from napari_phendiff.core.errors import CheckpointError, ConfigError, DataError, PhenDiffWarning
from napari_phendiff.core.images import read_image, read_provenance, write_image
from napari_phendiff.core.simulate import simulate_field

from conftest import random_image, write_tif


def tifs(folder):
    return sorted(p.name for p in folder.rglob("*.tif*")) if folder.exists() else []


def translate_cli(checkpoint, inputs, out, *extra):
    return main(
        [
            "translate",
            str(checkpoint),
            *map(str, inputs),
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(out),
            "--steps",
            "2",
            "--device",
            "cpu",
            *extra,
        ]
    )


def small_config(data, out, **kw):
    settings = dict(data=data, out=out, image_size=32, steps=2, batch_size=2, checkpoint_every=100, device="cpu")
    return pd.TrainConfig(**{**settings, **kw})


@pytest.fixture
def copy_of(tiny_checkpoint, tmp_path):
    """A fresh copy of the tiny checkpoint to tamper with."""

    def make(name="copy"):
        return shutil.copytree(tiny_checkpoint, tmp_path / name)

    return make


def edit_manifest(folder, change):
    manifest = json.loads((folder / "phendiff.json").read_text())
    change(manifest)
    (folder / "phendiff.json").write_text(json.dumps(manifest))


# --- translation: outputs never collide, never feed back, one bad file does not stop the others -----------------


def test_two_inputs_with_one_stem_are_refused_naming_both(tiny_checkpoint, tmp_path, capsys):
    a = write_tif(tmp_path / "a" / "img.tif", random_image((2, 32, 32)))
    b = write_tif(tmp_path / "b" / "img.tif", random_image((2, 32, 32), seed=1))
    assert translate_cli(tiny_checkpoint, [a, b], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "would both be written" in err and str(a) in err and str(b) in err
    assert tifs(tmp_path / "out") == []


def test_tif_and_tiff_of_one_name_in_a_folder_are_refused(tiny_checkpoint, tmp_path, capsys):
    write_tif(tmp_path / "in" / "img.tif", random_image((2, 32, 32)))
    write_tif(tmp_path / "in" / "img.tiff", random_image((2, 32, 32), seed=1))
    assert translate_cli(tiny_checkpoint, [tmp_path / "in"], tmp_path / "out") == 2
    assert "would both be written" in capsys.readouterr().err and tifs(tmp_path / "out") == []


def test_targets_that_give_one_file_name_are_refused(tiny_checkpoint, tmp_path, capsys):
    image = write_tif(tmp_path / "img.tif", random_image((2, 32, 32)))
    assert (
        main(
            [
                "translate",
                str(tiny_checkpoint),
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNF a",
                "--target",
                "TNF_a",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "would write the same files" in capsys.readouterr().err


def test_out_inside_the_input_folder_is_refused(tiny_checkpoint, tmp_path, capsys):
    write_tif(tmp_path / "in" / "img.tif", random_image((2, 32, 32)))
    assert translate_cli(tiny_checkpoint, [tmp_path / "in"], tmp_path / "in" / "translated") == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert tifs(tmp_path / "in") == ["img.tif"]


def test_one_bad_file_is_reported_and_the_others_are_translated(tiny_checkpoint, tmp_path, capsys):
    write_tif(tmp_path / "in" / "a.tif", random_image((2, 32, 32)))
    (tmp_path / "in" / "b.tif").write_bytes(b"not a tiff")
    write_tif(tmp_path / "in" / "c.tif", random_image((2, 32, 32), seed=2))
    assert translate_cli(tiny_checkpoint, [tmp_path / "in"], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "1 of 3 input(s) could not be translated (the others were)" in err
    assert err.count(str(tmp_path / "in" / "b.tif")) == 1  # named once, with why
    assert tifs(tmp_path / "out") == ["a_to_TNFa.tif", "c_to_TNFa.tif"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["failed"]) == [str(tmp_path / "in" / "b.tif")] and summary["written"] == 2
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.tif").write_bytes(b"not a tiff")
    assert translate_cli(tiny_checkpoint, [tmp_path / "only"], tmp_path / "out2") == 2
    err = capsys.readouterr().err
    assert "None of the 1 input(s) could be translated" in err and "the others" not in err


def test_a_rerun_keeps_the_first_runs_record(tiny_checkpoint, tmp_path):
    image = write_tif(tmp_path / "img.tif", random_image((2, 32, 32)))
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out") == 0
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["written"] == 0 and summary["skipped_inputs"] == 1
    assert summary["files"] == [str(tmp_path / "out" / "img_to_TNFa.tif")]
    assert [run["written"] for run in summary["earlier_runs"]] == [1]


def test_a_rerun_with_other_settings_is_refused_naming_the_difference(tiny_checkpoint, tmp_path, capsys):
    image = write_tif(tmp_path / "img.tif", random_image((2, 32, 32)))
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out", "--strength", "0.3") == 0
    before = (tmp_path / "out" / "img_to_TNFa.tif").read_bytes()
    capsys.readouterr()
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out", "--strength", "0.5") == 2
    err = capsys.readouterr().err
    assert "1 translation(s) already in the output folder were made with other settings" in err
    assert "img_to_TNFa.tif: strength 0.3 there, 0.5 now" in err and "--overwrite" in err
    assert (tmp_path / "out" / "img_to_TNFa.tif").read_bytes() == before
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out", "--strength", "0.3", "--batch-size", "2") == 0
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out", "--strength", "0.5", "--overwrite") == 0
    assert pd.read_image(tmp_path / "out" / "img_to_TNFa.tif").shape == (2, 32, 32)
    assert read_provenance(tmp_path / "out" / "img_to_TNFa.tif")["strength"] == 0.5


# --- images that are not what they look like ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "array, phrase",
    [
        (np.zeros((2, 32, 32), bool), "true/false"),
        (np.zeros((2, 32, 32), complex), "complex numbers"),
        (np.full((2, 32, 32), None, dtype=object), "Python objects"),
    ],
)
def test_arrays_that_are_not_intensities_are_refused(tiny_checkpoint, array, phrase):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(DataError, match=phrase):
        pd.translate(model, array, "untreated", "TNFa", steps=2)


def test_a_tensor_that_tracks_gradients_is_translated(tiny_checkpoint):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    image = torch.tensor(random_image((2, 32, 32)).astype(np.float32), requires_grad=True)
    assert pd.translate(model, image, "untreated", "TNFa", steps=2).shape == (2, 32, 32)


def test_another_dtype_than_training_is_translated_with_a_warning(tiny_checkpoint):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.warns(PhenDiffWarning, match="uint8 but the model was trained on uint16"):
        pd.translate(model, random_image((2, 32, 32), dtype=np.uint8, mean=100), "untreated", "TNFa", steps=2)


def test_cells_larger_than_the_training_cells_are_warned_about(tiny_checkpoint):
    model = pd.load_checkpoint(tiny_checkpoint, device="cpu")
    seen = model.manifest["training_images"]
    assert seen["nuclear_channel"] == "DNA" and 8 < seen["nucleus_diameter_px"] < 20  # cells of 20 px
    big = simulate_field("translocation", "untreated", 96, seed=2, cell_diameter=40.0).image
    with pytest.warns(PhenDiffWarning, match="nuclei measure about .* training images'"):
        pd.translate(model, big, "untreated", "TNFa", steps=2)


def test_the_demo_knows_its_training_cells_and_warns_about_others():
    demo = pd.load_checkpoint("demo", device="cpu")
    seen = demo.manifest["training_images"]  # measured as training measures it, on the demo's own simulated data
    assert seen["nuclear_channel"] == "DNA" and 7 < seen["nucleus_diameter_px"] < 10
    big = simulate_field("translocation", "untreated", 96, seed=0, cell_diameter=40.0).image
    with pytest.warns(PhenDiffWarning, match="nuclei measure about .* training images' 8 px"):
        pd.translate(demo, big, "untreated", "TNFa", steps=2)


def test_a_tiff_without_axes_is_read_as_channels_with_a_warning(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, random_image((5, 32, 32)))
    with pytest.warns(PhenDiffWarning, match="without axes metadata.*Z stack"):
        assert read_image(path).shape == (5, 32, 32)


def test_reading_a_folder_as_an_image_says_so(tmp_path):
    with pytest.raises(DataError, match="is a folder, not an image file"):
        read_image(tmp_path)


def test_a_one_pixel_two_channel_translation_reads_back_as_two_channels(tiny_checkpoint, tmp_path):
    image = write_image(tmp_path / "dot.tif", random_image((2, 1, 1)), channel_names=["DNA", "reporter"])
    assert read_image(image).shape == (2, 1, 1)
    assert translate_cli(tiny_checkpoint, [image], tmp_path / "out") == 0
    assert read_image(tmp_path / "out" / "dot_to_TNFa.tif").shape == (2, 1, 1)


# --- training data and settings ------------------------------------------------------------------------------------


def test_mixed_dtypes_in_a_training_folder_are_refused(tmp_path):
    write_tif(tmp_path / "d" / "a" / "1.tif", random_image((2, 32, 32), dtype=np.uint16))
    write_tif(tmp_path / "d" / "b" / "1.tif", random_image((2, 32, 32), dtype=np.uint8, mean=100))
    with pytest.raises(DataError, match="different data types.*uint16.*uint8|different data types.*uint8.*uint16"):
        pd.train(small_config(tmp_path / "d", tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_label_masks_as_a_condition_are_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_tif(tmp_path / "d" / "raw" / f"{i}.tif", random_image((1, 32, 32), seed=i))
        write_tif(tmp_path / "d" / "labels" / f"{i}.tif", rng.integers(0, 5, (1, 32, 32)).astype(np.uint16))
    with pytest.warns(PhenDiffWarning, match="labels: its images hold at most 16 distinct values"):
        pd.train(small_config(tmp_path / "d", tmp_path / "m", steps=1))


def test_an_image_size_the_model_cannot_take_fails_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 8"):
        pd.train(small_config(tmp_path / "no-such-folder", tmp_path / "m", image_size=30))


def test_a_checkpoint_inside_the_data_folder_is_refused(sim_data):
    with pytest.raises(ConfigError, match="inside the data folder"):
        pd.train(small_config(sim_data, sim_data / "model"))
    assert not (sim_data / "model").exists()


def test_resume_with_other_optimisation_settings_is_refused(sim_data, tmp_path):
    out = pd.train(small_config(sim_data, tmp_path / "m", steps=1, lr=1e-4))
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.0001, now 0.0002"):
        pd.train(small_config(sim_data, out, steps=2, resume=True))
    with pytest.raises(CheckpointError, match="seed: checkpoint 0, now 5"):
        pd.train(small_config(sim_data, out, steps=2, resume=True, lr=1e-4, seed=5))


def test_a_resumed_run_keeps_its_channel_names_and_refuses_others(sim_data, tmp_path):
    out = pd.train(small_config(sim_data, tmp_path / "m", steps=1, channel_names=["DNA", "reporter"]))
    with pytest.raises(CheckpointError, match="channel names: checkpoint DNA, reporter, now reporter, DNA"):
        pd.train(small_config(sim_data, out, steps=2, resume=True, channel_names=["reporter", "DNA"]))
    pd.train(small_config(sim_data, out, steps=2, resume=True))  # none given: the checkpoint's
    assert json.loads((out / "phendiff.json").read_text())["channel_names"] == ["DNA", "reporter"]
    other = tmp_path / "other images"
    shutil.copytree(sim_data, other)
    with pytest.raises(CheckpointError, match="data: checkpoint trained on .*, now .*other images"):
        pd.train(small_config(other, out, steps=3, resume=True))


def test_a_run_that_replaces_its_checkpoint_needs_room_for_two(sim_data, tmp_path, monkeypatch):
    one = {}

    def free(path):  # room for one checkpoint and a half, whatever its size
        return shutil._ntuple_diskusage(10**12, 10**12, one.get("free", 10**12))

    monkeypatch.setattr(writing.shutil, "disk_usage", free)
    original = ckpt.check_free_space

    def measured(out, needed, copies=1):
        one["free"] = int(1.5 * 1.2 * needed + 2**20)
        return original(out, needed, copies)

    monkeypatch.setattr("napari_phendiff.core.training.run.check_free_space", measured)
    pd.train(small_config(sim_data, tmp_path / "once", steps=2, checkpoint_every=100))  # saves once: fits
    with pytest.raises(CheckpointError, match=r"two checkpoints of about .* \(a new one is written whole"):
        pd.train(small_config(sim_data, tmp_path / "twice", steps=2, checkpoint_every=1))
    assert not (tmp_path / "twice" / "phendiff.json").exists()


def test_an_output_folder_that_cannot_be_made_or_replaced_is_refused_before_the_work(tmp_path, monkeypatch):
    (tmp_path / "a file").write_text("")
    with pytest.raises(CheckpointError, match="cannot be made"):
        with ckpt.output_lock(tmp_path / "a file" / "out", "a test"):
            pass
    (tmp_path / "mounted").mkdir()

    def busy(self):
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(type(tmp_path), "rmdir", busy)
    with pytest.raises(CheckpointError, match="cannot be replaced by the report .Device or resource busy"):
        ckpt.claim_new_folder(tmp_path / "mounted", "the report")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DataError, match="already exists and is not empty"):
        ckpt.claim_new_folder(tmp_path / "full", "the report")


def test_a_diverging_run_stops_with_advice_and_saves_nothing(sim_data, tmp_path):
    with pytest.raises(ConfigError, match="diverged at step .* lower one"):
        pd.train(small_config(sim_data, tmp_path / "m", steps=20, lr=1e30, grad_clip=1e30, warmup_steps=0))
    assert not (tmp_path / "m" / "phendiff.json").exists()


def test_too_little_disk_space_fails_before_the_first_step(sim_data, tmp_path, monkeypatch):
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10_000))
    with pytest.raises(CheckpointError, match="MB free, this run needs .* MB: a checkpoint of about"):
        pd.train(small_config(sim_data, tmp_path / "m"))
    assert not (tmp_path / "m" / "phendiff.json").exists()


def test_a_failed_checkpoint_write_says_what_was_kept(sim_data, tmp_path, monkeypatch):
    from napari_phendiff.core.training import run

    def full(folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "stamp_weights", full)
    with pytest.raises(
        CheckpointError, match="step 2 could not be written .No space left on device.; nothing was saved"
    ):
        pd.train(small_config(sim_data, tmp_path / "m"))
    assert not list(tmp_path.glob(".m.writing-*")) and not (tmp_path / "m" / "phendiff.json").exists()

    from safetensors import SafetensorError

    def weights_full(folder):  # safetensors' own error for a full disk (os error 28), not an OSError
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(run, "stamp_weights", weights_full)
    with pytest.raises(CheckpointError, match="step 2 could not be written .*No space left on device"):
        pd.train(small_config(sim_data, tmp_path / "n"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_output_folder_fails_before_training(sim_data, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o555)
    with pytest.raises(CheckpointError, match="nothing can be written there"):
        pd.train(small_config(sim_data, tmp_path / "locked" / "m"))


# --- checkpoints that were damaged or edited -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda m: m["conditions"].reverse(), "do not belong together"),
        (lambda m: m["conditions"].append("extra"), "do not belong together"),
        (lambda m: m.update(image_size=0), "image_size must be a whole number"),
        (lambda m: m["normalization"].update(high=m["normalization"]["low"]), "high > low"),
        (lambda m: m["normalization"].update(low=[float("nan")] * 2), "must be finite"),
        (lambda m: m.pop("channel_names"), "lacks channel_names"),
        (lambda m: m["channel_names"].append("third"), "2 low and 2 high values for 3 channel"),
    ],
)
def test_an_edited_manifest_is_refused(copy_of, change, phrase):
    folder = copy_of()
    edit_manifest(folder, change)
    with pytest.raises(CheckpointError, match=phrase):
        pd.load_checkpoint(folder, device="cpu")


def test_a_manifest_without_a_digest_is_refused_until_signed_and_still_checked(copy_of, capsys):
    folder = copy_of()
    edit_manifest(folder, lambda m: (m.pop("weights_sha256"), m["conditions"].append("extra")))
    with pytest.raises(CheckpointError, match=f"records no digest of its weights' bytes.*phendiff sign {folder}"):
        pd.load_checkpoint(folder, device="cpu")
    assert main(["sign", str(folder)]) == 0 and f"signed {folder}" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="the UNet knows 2 condition"):  # signing does not make it fit
        pd.load_checkpoint(folder, device="cpu")
    assert main(["sign", "demo"]) == 2 and "shipped checkpoint" in capsys.readouterr().err


def test_weights_swapped_for_another_checkpoints_of_the_same_shape_are_refused(copy_of, sim_data, tmp_path):
    folder = copy_of()
    other = pd.train(
        small_config(sim_data, tmp_path / "other", image_size=32, steps=1, channel_names=["DNA", "reporter"])
    )
    weights = "unet/diffusion_pytorch_model.safetensors"
    before = pd.load_checkpoint(folder, device="cpu")  # read once: the digest of the file is cached by its stat
    shutil.copy2(other / weights, folder / weights)  # same architecture and header, other values
    with pytest.raises(CheckpointError, match="do not belong together.*phendiff sign"):
        pd.load_checkpoint(folder, device="cpu")
    assert main(["sign", str(folder)]) == 0  # edited on purpose: signed, it loads with the new weights
    after = pd.load_checkpoint(folder, device="cpu")
    assert after.manifest["weights_sha256"] != before.manifest["weights_sha256"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
def test_damaged_weights_are_one_clear_error(copy_of, damage, capsys, tmp_path):
    folder = copy_of()
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "pickle": b"\x80\x04\x95" + data[:64]}[damage]
    )
    image = write_tif(tmp_path / "img.tif", random_image((2, 32, 32)))
    assert translate_cli(folder, [image], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(folder) in err and "Traceback" not in err
    assert tifs(tmp_path / "out") == []


def test_a_truncated_training_state_cannot_be_resumed_and_says_why(sim_data, tmp_path):
    out = pd.train(small_config(sim_data, tmp_path / "m", steps=1))
    state = out / "training" / "optimizer.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="training state cannot be read"):
        pd.train(small_config(sim_data, out, steps=2, resume=True))


def test_a_kill_between_the_two_renames_of_a_save_is_recovered(copy_of, tmp_path):
    folder = copy_of("model")
    folder.rename(tmp_path / ".model.old")  # what atomic_folder leaves when killed between its renames
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # the writer of the temporary folder below, gone
    (tmp_path / f".model.writing-{writing._HOST}-{killed.pid}-abc").mkdir()
    assert pd.load_checkpoint(tmp_path / "model", device="cpu").conditions == ["TNFa", "untreated"]
    with ckpt.atomic_folder(tmp_path / "model") as new:
        shutil.copytree(tmp_path / "model", new, dirs_exist_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == []


# --- signals: what a scheduler or Ctrl-C does -----------------------------------------------------------------------


def launch(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # a shell's background job starts with SIGINT ignored, which the child would inherit: give it the default back,
    # as a terminal's Ctrl-C finds it
    return subprocess.Popen(
        [sys.executable, "-m", "napari_phendiff.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_saves_a_loadable_checkpoint(sim_data, tmp_path, signum, code):
    out = tmp_path / "m"
    process = launch(
        [
            "train",
            str(sim_data),
            "--out",
            str(out),
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--steps",
            "100000",
            "--checkpoint-every",
            "1",
            "--device",
            "cpu",
        ]
    )
    deadline = time.monotonic() + 120
    while not (out / "phendiff.json").is_file() and time.monotonic() < deadline:  # a first step was trained
        time.sleep(0.1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert "resumable checkpoint of" in err
    steps = json.loads((out / "phendiff.json").read_text())["trained_steps"]
    assert steps >= 1 and pd.load_checkpoint(out, device="cpu").conditions == ["TNFa", "untreated"]


@pytest.mark.slow
def test_sigterm_during_translation_leaves_no_partial_file(tiny_checkpoint, tmp_path):
    for i in range(30):
        write_tif(tmp_path / "in" / f"{i:02d}.tif", random_image((2, 32, 32), seed=i))
    out = tmp_path / "out"
    settings = ["--steps", "8", "--strength", "1", "--batch-size", "1", "--device", "cpu"]
    process = launch(
        [
            "translate",
            str(tiny_checkpoint),
            str(tmp_path / "in"),
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(out),
            *settings,
        ]
    )
    deadline = time.monotonic() + 120
    while not [n for n in tifs(out) if not n.startswith(".")] and time.monotonic() < deadline:  # one file finished,
        time.sleep(0.2)  # not one being written (which the stop removes)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "terminated" in err
    written = tifs(out)
    assert 1 <= len(written) < 30 and not any(p.name.startswith(".") for p in out.rglob("*.tif*"))
    for name in written:
        assert tifffile.imread(out / name).shape == (2, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the rerun takes the same settings (other ones are refused, naming the difference) and does the rest
        assert (
            main(
                [
                    "translate",
                    str(tiny_checkpoint),
                    str(tmp_path / "in"),
                    "--source",
                    "untreated",
                    "--target",
                    "TNFa",
                    "--out",
                    str(out),
                    *settings,
                ]
            )
            == 0
        )
    assert len(tifs(out)) == 30


def test_a_disk_that_fills_during_a_folder_run_is_one_clear_error(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from napari_phendiff.core import batch

    for i in range(3):
        write_tif(tmp_path / "in" / f"{i}.tif", random_image((2, 32, 32), seed=i))
    real, calls = batch.write_translation, []

    def filling(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "write_translation", filling)
    assert translate_cli(tiny_checkpoint, [tmp_path / "in"], tmp_path / "out", "--batch-size", "1") == 2
    err = capsys.readouterr().err
    assert re.search(
        r"could not be written \(No space left on device; \d+ MB free on its disk\)\. The 1 file\(s\) "
        r"written before it are complete",
        err,
    )
    assert "Traceback" not in err and len(tifs(tmp_path / "out")) == 1
