"""The `phendiff` command end to end on tiny data, as a user would type it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_phendiff.core.simulate import simulate_field

from napari_phendiff.cli import main

GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui")


@pytest.mark.slow
def test_cli_starts_without_any_gui_stack():
    code = (
        "import sys; from napari_phendiff.cli.parser import build_parser; build_parser(); "
        "import napari_phendiff.core.translate, napari_phendiff.core.training.run; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    entry = shutil.which("phendiff") or str(__import__("pathlib").Path(sys.executable).parent / "phendiff")
    helped = subprocess.run([entry, "translate", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "example:" in helped.stdout and "--target" in helped.stdout


def test_simulate_train_translate(tmp_path, capsys):
    data = tmp_path / "cells"
    assert main(["simulate", str(data), "--phenotype", "golgi", "--n-per-class", "3", "--size", "48"]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["nocodazole", "untreated"]
    assert (tmp_path / "cells_truth" / "truth.csv").is_file()

    ckpt = tmp_path / "model"
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(ckpt),
                "--image-size",
                "32",
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--channel-names",
                "DNA",
                "Golgi",
                "tubulin",
            ]
        )
        == 0
    )
    assert json.loads((ckpt / "phendiff.json").read_text())["trained_steps"] == 3

    inputs = sorted((data / "untreated").glob("*.tif"))[:2]
    out = tmp_path / "translated"
    assert (
        main(
            [
                "translate",
                str(ckpt),
                *map(str, inputs),
                "--source",
                "untreated",
                "--target",
                "nocodazole",
                "--target",
                "untreated",
                "--out",
                str(out),
                "--steps",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [f"{p.stem}_to_{t}.tif" for p in inputs for t in ("nocodazole", "untreated")] + ["summary.json"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 4 and summary["processes"] == 1
    with tifffile.TiffFile(out / f"{inputs[0].stem}_to_nocodazole.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["channels"] == 3
        assert tif.asarray().shape == (3, 48, 48) and tif.asarray().dtype == np.uint16
        meta = json.loads(tif.imagej_metadata["Info"])
    assert meta["source"] == "untreated" and meta["target"] == "nocodazole" and meta["steps"] == 3
    assert meta["checkpoint"] == str(ckpt) and meta["seed"] == 0


def test_errors_are_one_clear_line_not_a_traceback(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a folder" in err and "Traceback" not in err
    assert (
        main(
            [
                "translate",
                str(tmp_path),
                str(tmp_path / "x.tif"),
                "--source",
                "a",
                "--target",
                "b",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "phendiff.json is missing" in capsys.readouterr().err


def test_demo_writes_figure_tiffs_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "1", "--steps", "5", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "demo.png") in printed
    assert printed.startswith("phenotype: ") and "untreated -> TNFa: " in printed  # the summary, shown by the CLI
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "demo.png",
            "summary.txt",
            "untreated_0.tif",
            "untreated_0_to_TNFa.tif",
            "TNFa_0.tif",
            "TNFa_0_to_untreated.tif",
        ]
    )
    assert "untreated -> TNFa" in (out / "summary.txt").read_text()
    assert tifffile.imread(out / "untreated_0_to_TNFa.tif").dtype == np.uint16


import pytest  # noqa: E402


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--strength", "0"], "strength must be in"),
        (["--strength", "1.5"], "strength must be in"),
        (["--guidance", "nan"], "guidance must be a finite"),
        (["--guidance", "inf"], "guidance must be a finite"),
        (["--steps", "0"], "steps must be between"),
        (["--steps", "-3"], "steps must be between"),
        (["--steps", "100000"], "steps must be between"),
        (["--batch-size", "-1"], "batch_size must be at least 1"),
        (["--guidance-interval", "0.6", "0.2"], "guidance_interval must satisfy"),
        (["--keep-channels", "Actin"], "the checkpoint's channels are DNA, reporter"),
        (["--keep-channels", "DNA", "reporter"], "nothing would be translated"),
    ],
)
def test_bad_translation_settings_fail_before_anything_is_written(tmp_path, capsys, flags, phrase):
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.full((2, 32, 32), 500, np.uint16))
    out = tmp_path / "out"
    code = main(
        ["translate", "demo", str(image), "--source", "untreated", "--target", "TNFa", "--out", str(out), *flags]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and phrase in err and "Traceback" not in err
    assert not out.exists()


def test_the_demo_keeps_its_dna_by_default_and_says_so(tmp_path, capsys):
    image = tmp_path / "in.tif"
    field = simulate_field("translocation", "untreated", 48, seed=3, cell_diameter=20.0).image
    tifffile.imwrite(image, field, imagej=True, metadata={"axes": "CYX"})
    assert (
        main(
            [
                "translate",
                "demo",
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(tmp_path / "out"),
                "--steps",
                "10",
            ]
        )
        == 0
    )
    assert "kept DNA (calibrated)" in capsys.readouterr().out
    translated = tifffile.imread(tmp_path / "out" / "in_to_TNFa.tif")
    np.testing.assert_array_equal(translated[0], field[0])
    assert not np.array_equal(translated[1], field[1])


def test_translate_writes_a_morph_by_embedding(tmp_path):
    image = tmp_path / "in.tif"
    field = simulate_field("translocation", "untreated", 48, seed=4, cell_diameter=20.0).image
    tifffile.imwrite(image, field, imagej=True, metadata={"axes": "CYX"})
    assert (
        main(
            [
                "translate",
                "demo",
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(tmp_path / "out"),
                "--steps",
                "10",
                "--morph",
                "2",
                "--morph-path",
                "embedding",
            ]
        )
        == 0
    )
    with tifffile.TiffFile(tmp_path / "out" / "in_to_TNFa_morph.tif") as tif:
        frames = tif.asarray()
        info = json.loads(tif.imagej_metadata["Info"])
    assert frames.shape[0] == 3 and info["morph_path"] == "embedding"
    np.testing.assert_array_equal(frames[-1], tifffile.imread(tmp_path / "out" / "in_to_TNFa.tif"))


def test_out_of_memory_is_one_line_with_what_to_change(sim_data, tmp_path, capsys, monkeypatch):
    import torch

    from napari_phendiff.core.training import run

    def exhausted(config, previews=0):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield

    monkeypatch.setattr(run, "_train_run", exhausted)
    assert main(["train", str(sim_data), "--out", str(tmp_path / "m"), "--device", "cpu", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory on cpu. Lower --batch-size or --image-size") and "Traceback" not in err


def test_the_translation_bar_shows_percent_and_time_left_not_tile_steps(capsys):
    from napari_phendiff.cli.progress import TranslationBar
    from napari_phendiff.core.translate import TranslateEvent

    bar = TranslationBar("field.tif")
    bar(TranslateEvent("invert", 0, 1008))
    bar(TranslateEvent("invert", 252, 1008, seconds_left=1800.0))
    assert bar.bar.n == 25 and bar.bar.total == 100
    assert str(bar.bar).endswith("| about 30 min left")
    bar(TranslateEvent("done", 1008, 1008))
    shown = capsys.readouterr().err
    assert "100%" in shown and "1008" not in shown
    assert "field.tif: about 30 min more on this computer" in shown


def test_the_calibration_bar_names_its_stages_and_times_what_follows(monkeypatch):
    from napari_phendiff.cli.progress import CountingBar

    now = [0.0]
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])
    bar = CountingBar("calibrating", percent=True)
    bar(0, 103, "reading the folder")
    assert str(bar.bar).startswith("calibrating (reading the folder):   0%") and "left" not in str(bar.bar)
    now[0] = 1.0
    bar(1, 103, "training")
    assert str(bar.bar).startswith("calibrating (training):") and "left" not in str(bar.bar)
    now[0] = 10.0
    bar(2, 103, "translating")  # the clock starts again here
    assert "left" not in str(bar.bar)
    now[0] = 30.0
    bar(22, 103)  # 20 calls in the 20 s since the last stage (not 22 in 30): 81 more take 81 s
    assert str(bar.bar).startswith("calibrating:  21%") and str(bar.bar).endswith("| 01:21 left")
    bar.close()
