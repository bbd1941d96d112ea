"""`phendiff calibrate`: the sweep shares one inversion, the frontier and the choice are written, and the stored
choice becomes the checkpoint's default for that direction."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import napari_phendiff as pd
from napari_phendiff.cli import main
from napari_phendiff.core import calibrate as cal
from napari_phendiff.core.errors import CheckpointError, ConfigError
from napari_phendiff.core.options import TranslateOptions
from napari_phendiff.core.translate import translation_options


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


@pytest.mark.slow
def test_sweep_equals_one_translation_per_setting(checkpoint, sim_data):
    model = pd.load_checkpoint(checkpoint, device="cpu")
    stack = np.stack([pd.read_image(p) for p in sorted((sim_data / "untreated").glob("*.tif"))[:2]])
    settings = cal.grid([0.25, 0.5], [1.0, 3.0])
    base = TranslateOptions(steps=8, tiles=False)
    swept = cal.sweep(model, stack, "untreated", "TNFa", settings, base)
    assert len(swept) == 4
    for setting, result in swept.items():
        alone = pd.translate(model, stack, "untreated", "TNFa", setting.options(base))
        assert np.array_equal(result, alone), setting


def test_choice_moves_most_among_settings_that_keep_the_cells():
    rows = [dict(strength=1.0, guidance=4.0, moved=0.99, kept=0.3, change_DNA=0.5),   # moves, loses the cells
            dict(strength=0.4, guidance=4.0, moved=0.90, kept=0.85, change_DNA=0.1),
            dict(strength=0.3, guidance=4.0, moved=0.89, kept=0.9, change_DNA=0.08),  # tied on moved, keeps more
            dict(strength=0.3, guidance=1.0, moved=0.10, kept=0.99, change_DNA=0.02)]
    assert cal.choose(rows, ["DNA"]) is rows[2]
    rows[2]["change_DNA"] = 0.5  # its DNA changed too much: out
    assert cal.choose(rows, ["DNA"]) is rows[1]
    lost = [dict(strength=1.0, guidance=1.0, moved=0.9, kept=0.2, change_DNA=0.0)]
    assert cal.choose(lost) is lost[0]


def test_with_the_nuclei_kept_the_choice_is_the_gentlest_setting_as_treated_as_real_images():
    rows = [dict(strength=0.5, guidance=8.0, moved=1.0, kept=1.0),   # overshoots the real condition
            dict(strength=0.3, guidance=4.0, moved=0.96, kept=1.0),  # as treated-looking as real images: chosen
            dict(strength=0.4, guidance=4.0, moved=0.97, kept=1.0),
            dict(strength=0.3, guidance=2.0, moved=0.60, kept=1.0)]  # not far enough
    assert cal.choose(rows, real_moved=0.97) is rows[1]
    assert cal.choose(rows) is rows[0]  # without the real images' rate: the most moved
    assert cal.choose(rows, real_moved=1.5) is rows[0]  # none reaches it: the most moved


def test_a_choice_that_exaggerates_the_target_is_flagged():
    from napari_phendiff.core.cellstats import overshoots
    from napari_phendiff.core.simulate import simulate_field

    rng = np.random.default_rng(0)
    fields = [simulate_field("translocation", "untreated", 64, seed=i, cell_diameter=20.0) for i in range(4)]

    def with_reporter(field, level):  # the reporter as bright as `level` inside every cell
        return np.stack([field.image[0], 100 + level * (field.cells > 0) + rng.normal(0, 5, field.cells.shape)])

    names = ["DNA", "reporter"]
    originals = np.stack([with_reporter(f, 100) for f in fields])
    targets = [with_reporter(f, 200) for f in fields]
    over = overshoots(originals, np.stack([with_reporter(f, 600) for f in fields]), targets, names)
    assert "reporter_integrated" in [m["measurement"] for m in over] and min(m["moved"] for m in over) > 2
    assert overshoots(originals, np.stack(targets), targets, names) == []  # as the target: fine
    kept = originals.copy()  # the reporter kept as the original's: it cannot overshoot, nor can the areas
    assert overshoots(originals, kept, targets, names) == []


def test_calibrating_with_kept_channels_stores_them_as_the_default(checkpoint, sim_data, tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "calibration"
    exaggerated = [{"measurement": "reporter_integrated", "moved": 3.0}]
    monkeypatch.setattr(cal, "overshoots", lambda *args, **kwargs: exaggerated)
    assert main(["calibrate", str(checkpoint), str(sim_data), "--source", "untreated", "--target", "TNFa",
                 "--out", str(out), "--strengths", "0.25", "0.5", "--guidances", "3", "--n", "2", "--steps", "4",
                 "--classifier-steps", "5", "--keep-channels", "DNA"]) == 0
    printed = capsys.readouterr()
    assert "kept as the original's: DNA" in printed.out
    assert "went far past the real TNFa cells (reporter_integrated 3.0x" in printed.err
    chosen = json.loads((out / "calibration.json").read_text())["chosen"]
    assert chosen["keep_channels"] == ["DNA"] and 0 <= chosen["real_target_moved"] <= 1
    assert chosen["overshot_measurements"] == exaggerated
    model = pd.load_checkpoint(checkpoint, device="cpu")
    options, sources = translation_options(model, "untreated", "TNFa")
    assert options.keep_channels == ("DNA",) and sources["keep_channels"] == "calibrated"
    image = pd.read_image(sorted((sim_data / "untreated").glob("*.tif"))[0])
    np.testing.assert_array_equal(pd.translate(model, image, "untreated", "TNFa", steps=4)[0], image[0])
    with pytest.raises(ConfigError, match="the checkpoint's channels are DNA, reporter"):
        cal.calibrate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "c4", keep_channels=["Hoechst"])


@pytest.mark.slow
def test_calibrate_writes_the_frontier_and_becomes_the_default(checkpoint, sim_data, tmp_path, capsys):
    out = tmp_path / "calibration"
    code = main(["calibrate", str(checkpoint), str(sim_data), "--source", "untreated", "--target", "TNFa",
                 "--out", str(out), "--strengths", "0.25", "0.5", "--guidances", "1", "3", "--n", "2",
                 "--steps", "8", "--classifier-steps", "5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen: strength" in printed
    saved = json.loads((out / "calibration.json").read_text())
    assert len(saved["rows"]) == 4 and (out / "frontier.png").stat().st_size > 0
    header = (out / "frontier.csv").read_text().splitlines()[0].split(",")
    assert {"strength", "guidance", "moved", "kept", "change_DNA"} <= set(header)
    chosen = saved["chosen"]
    manifest = json.loads((checkpoint / "phendiff.json").read_text())
    stored = manifest["calibration"]["untreated->TNFa"]
    assert (stored["strength"], stored["guidance"]) == (chosen["strength"], chosen["guidance"])
    model = pd.load_checkpoint(checkpoint, device="cpu")
    options, sources = translation_options(model, "untreated", "TNFa")
    assert (options.strength, options.guidance) == (chosen["strength"], chosen["guidance"])
    assert sources["strength"] == "calibrated" and sources["steps"] == "default"
    assert translation_options(model, "TNFa", "untreated")[1]["strength"] == "default"  # other direction untouched
    given, given_from = translation_options(model, "untreated", "TNFa", strength=0.7)
    assert given.strength == 0.7 and given_from["strength"] == "given"
    # the CLI's translate now says where its settings came from
    image = sorted((sim_data / "untreated").glob("*.tif"))[0]
    assert main(["translate", str(checkpoint), str(image), "--source", "untreated", "--target", "TNFa",
                 "--out", str(tmp_path / "t"), "--steps", "4"]) == 0
    assert f"strength {chosen['strength']} (calibrated)" in capsys.readouterr().out


def test_calibrate_refuses_what_it_cannot_do(checkpoint, sim_data, tmp_path):
    with pytest.raises(CheckpointError, match="shipped checkpoint"):
        cal.calibrate("demo", sim_data, "untreated", "TNFa", tmp_path / "c")
    with pytest.raises(ConfigError, match="same condition"):
        cal.calibrate(checkpoint, sim_data, "untreated", "untreated", tmp_path / "c2")
    with pytest.raises(ConfigError, match="Unaffected channel"):
        cal.calibrate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "c3", unaffected=["Hoechst"])
    assert not (tmp_path / "c").exists() and not (tmp_path / "c2").exists()


def test_folder_of_small_images_is_translated_in_batches(checkpoint, sim_data, tmp_path, monkeypatch):
    from napari_phendiff.core import batch

    calls = []
    real = batch.iter_translate

    def counting(model, images, *args, **kwargs):
        calls.append(len(images))
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(batch, "iter_translate", counting)
    result = batch.translate_files(checkpoint, [sim_data / "untreated"], "untreated", ["TNFa"], tmp_path / "out",
                                   device="cpu", steps=4, strength=0.5)
    assert calls == [4] and len(result.written) == 4  # four 48-px fields, one call
    model = pd.load_checkpoint(checkpoint, device="cpu")
    for path in sorted((sim_data / "untreated").glob("*.tif")):
        alone = pd.translate(model, pd.read_image(path), "untreated", "TNFa", steps=4, strength=0.5)
        written = pd.read_image(tmp_path / "out" / f"{path.stem}_to_TNFa.tif")
        # batched convolutions round differently from single ones: a count or two out of thousands
        assert np.abs(written.astype(np.int64) - alone.astype(np.int64)).max() <= 3, path.name
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["strength"] == 0.5 and summary["options_from"]["strength"] == "given"
