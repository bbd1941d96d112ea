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
from napari_phendiff.core import calibration_rule as rule
from napari_phendiff.core import calibration_store
from napari_phendiff.core import witnesses
from napari_phendiff.core import translate as translate_module
from napari_phendiff.core.errors import CheckpointError, ConfigError
from napari_phendiff.core.evaluate import evaluate
from napari_phendiff.core.options import TranslateOptions
from napari_phendiff.core.translate import translation_options


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


@pytest.mark.slow
def test_sweep_equals_one_translation_per_setting(checkpoint, sim_data, monkeypatch):
    model = pd.load_checkpoint(checkpoint, device="cpu")
    stack = np.stack([pd.read_image(p) for p in sorted((sim_data / "untreated").glob("*.tif"))[:2]])
    settings = cal.grid([0.25, 0.5], [1.0, 3.0])
    base = TranslateOptions(steps=8, tiles=False)
    inversions = []
    real_invert = translate_module.invert
    monkeypatch.setattr(
        translate_module, "invert", lambda *a, **k: inversions.append(k["strength"]) or real_invert(*a, **k)
    )
    swept = cal.sweep(model, stack, "untreated", "TNFa", settings, base)
    assert len(swept) == 4
    assert inversions == [0.5]  # one inversion, to the deepest strength, serves every setting
    monkeypatch.undo()
    for setting, result in swept.items():
        alone = pd.translate(model, stack, "untreated", "TNFa", setting.options(base))
        assert np.array_equal(result, alone), setting


def test_a_sweep_counts_its_progress_in_the_network_calls_it_makes(checkpoint, sim_data, monkeypatch):
    from napari_phendiff.core import walk

    model = pd.load_checkpoint(checkpoint, device="cpu")
    stack = np.stack([pd.read_image(p) for p in sorted((sim_data / "untreated").glob("*.tif"))[:2]])
    base = TranslateOptions(steps=8, tiles=False).validate()
    pairs = cal.with_controls(cal.grid([0.25, 0.5], [1.0, 3.0]), "untreated", "TNFa")
    passes = []  # images through the network per call: a guided step runs both branches in one call
    real_predict = walk.predict
    monkeypatch.setattr(walk, "predict", lambda m, x, *a, **k: passes.append(len(x)) or real_predict(m, x, *a, **k))
    steps = []
    cal.sweep_pairs(model, stack, "untreated", pairs, base, progress=lambda done, total: steps.append((done, total)))
    assert sum(passes) == cal.sweep_calls(pairs, base) * len(stack) == steps[-1][0] * len(stack)
    assert [total for _, total in steps] == [steps[-1][0]] * len(steps)


def row(strength, guidance, reached, kept, kept_control=0.9, change_DNA=0.05):
    return dict(
        strength=strength,
        guidance=guidance,
        negative="source",
        reached=reached,
        kept=kept,
        kept_control=kept_control,
        change_DNA=change_DNA,
    )


def test_the_rule_moves_the_phenotype_first_then_keeps_the_cells():
    rows = [
        row(1.0, 4.0, 1.0, 0.30, kept_control=0.80),  # all the way, but loses the nuclei beyond its control
        row(0.4, 4.0, 0.93, 0.82, kept_control=0.86),  # furthest of those that keep them: chosen
        row(0.3, 4.0, 0.80, 0.86, kept_control=0.88),  # keeps more, moves less: a mix would pick it
        row(0.2, 4.0, 0.55, 0.89, kept_control=0.90),
        row(0.2, 1.0, 0.05, 0.91, kept_control=0.90),
    ]
    choice = cal.choose(rows, ["DNA"])
    assert choice.row is rows[1] and choice.status == "calibrated"
    assert "s 0.4, w 4 (source) went 0.93 of the way" in choice.reason and "the furthest of the 4" in choice.reason
    # an absolute bar on the nuclei overlap (0.84) would have taken s 0.3: the control says 0.82 is the model's own
    rows[1]["change_DNA"] = 0.5  # its DNA changed too much: out, the next furthest wins
    assert cal.choose(rows, ["DNA"]).row is rows[2]
    # past the real target is no better: of those as far, the one keeping the nuclei better wins
    tied = [row(0.5, 6.0, 1.8, 0.80, kept_control=0.84), row(0.3, 6.0, 1.0, 0.84, kept_control=0.85)]
    choice = cal.choose(tied)
    assert choice.row is tied[1] and "of those as far, it kept the nuclei best" in choice.reason
    # but a setting that moved fewer cells does not win by keeping more (a mix would pick it)
    close = [row(0.3, 4.0, 0.90, 0.80, kept_control=0.90), row(0.2, 4.0, 0.87, 0.89, kept_control=0.90)]
    assert cal.choose(close).row is close[0]


def test_a_sweep_that_keeps_the_cells_but_moves_nothing_is_not_calibrated():
    rows = [row(s, w, reached, 0.9) for s, w, reached in ((0.2, 2.0, 0.05), (0.4, 4.0, 0.2), (0.6, 6.0, 0.41))]
    choice = cal.choose(rows)
    assert choice.row is None and choice.status == "not moved" and choice.best is rows[2]
    assert "No setting that kept the nuclei moved the phenotype" in choice.reason and "0.41" in choice.reason
    assert "without calibration" not in choice.reason
    choice = cal.choose(rows, default=cal.Setting(0.9, 6.0))  # a default the sweep left out: nothing said of it
    assert choice.status == "not moved" and "without calibration" not in choice.reason
    # the setting translations fall back to lost the nuclei: said, since nothing replaces it
    rows.append(row(0.3, 4.0, 0.6, 0.7, kept_control=0.92))
    choice = cal.choose(rows, default=cal.Setting(0.3, 4.0))
    assert choice.status == "not moved" and choice.reason.endswith(
        " Without calibration the checkpoint translates with s 0.3, w 4 (source), which went 0.60 of the way but did "
        "not keep the cells: it lost 0.22 of nuclei overlap beyond its source -> source control (allowed 0.14), kept "
        "0.70."
    )
    rows[-1].update(kept=0.9, change_DNA=0.3)  # kept the overlap but changed the DNA
    assert cal.choose(rows, ["DNA"], default=cal.Setting(0.3, 4.0)).reason.endswith(
        "did not keep the cells: it changed DNA by 0.30 (allowed 0.2)."
    )
    rows[-1].update(kept=0.45, kept_control=0.5, change_DNA=0.3)  # within its control's reach, under the floor
    assert cal.choose(rows, ["DNA"], default=cal.Setting(0.3, 4.0)).reason.endswith(
        "it kept 0.45 of nuclei overlap, under the 0.5 below which they are lost; changed DNA by 0.30 (allowed 0.2)."
    )
    rows[-1].update(kept=0.9, kept_control=0.9, change_DNA=0.0, reached=0.3)  # kept them, moved little: nothing said
    choice = cal.choose(rows, ["DNA"], default=cal.Setting(0.3, 4.0))
    assert choice.status == "not moved" and "without calibration" not in choice.reason
    unwitnessed = [row(0.2, 2.0, float("nan"), 0.9), row(0.4, 4.0, float("nan"), 0.85)]
    choice = cal.choose(unwitnessed)  # no measurement separates the real cells and the classifier is not trusted
    assert choice.row is None and choice.status == "not witnessed" and "Nothing witnessed" in choice.reason
    assert choice.best is unwitnessed[0]
    lost = [row(1.0, 1.0, 0.9, 0.2, kept_control=0.9), row(0.6, 4.0, 0.9, 0.45, kept_control=0.5)]
    choice = cal.choose(lost)  # the second is within tolerance of its control but below the floor
    assert choice.row is None and choice.status == "not kept" and choice.best is lost[1]


def test_the_frontier_spreads_the_settings_by_strength_when_the_nuclei_are_kept_as_the_originals():
    from napari_phendiff.core.frontier import draw_frontier

    sweep = [row(s, w, 0.3 * s * w, 1.0, kept_control=1.0, change_DNA=0.0) for w in (2.0, 4.0) for s in (0.2, 0.4, 0.6)]
    for rows, label, xs in (
        (sweep, "strength (the nuclei kept", [0.2, 0.4, 0.6]),  # every IoU lost is 0: all at x = 0 otherwise
        ([{**r, "kept": 1.0 - r["strength"] / 4} for r in sweep], "nuclei IoU minus", [-0.05, -0.1, -0.15]),
    ):
        choice = cal.choose(rows, [])
        axes = draw_frontier(rows, choice, {"reached": 0.0}, "a -> b").axes[0]
        assert axes.get_xlabel().startswith(label)
        guided = [line for line in axes.get_lines() if line.get_label() == "w 2 (source)"]
        assert list(guided[0].get_xdata()) == pytest.approx(xs)
        drawn = {line.get_label() for line in axes.get_lines()}
        assert (f"IoU lost ≤ {cal.KEPT_TOLERANCE:g}" in drawn) == (label == "nuclei IoU minus")
        assert f"moved ≥ {cal.REACHED_MIN:g}" in drawn


def test_bars_a_user_sets_replace_the_rules_own():
    from napari_phendiff.core.calibration_bars import check_bars, partial_move

    rows = [row(0.2, 4.0, 0.29, 0.88), row(0.4, 4.0, 0.6, 0.6)]  # the second loses 0.3 beyond its control
    declined = cal.choose(rows)
    assert declined.status == "not moved" and "(at least 0.5 needed)" in declined.reason
    # the share it did move, as a bar that stores it (0.29 x 100 is 28.999... in floating point)
    assert partial_move({**declined.best, "status": declined.status}) == 0.29
    accepted = cal.choose(rows, reached_min=0.29)
    assert accepted.row is rows[0] and (accepted.reached_min, accepted.kept_tolerance) == (0.29, rule.KEPT_TOLERANCE)
    loose = cal.choose(rows, tolerance=0.35)  # a looser tolerance: the further setting now keeps the cells
    assert loose.row is rows[1] and "within 0.35 of the source -> source control" in loose.reason
    assert (loose.reached_min, loose.kept_tolerance) == (rule.REACHED_MIN, 0.35)
    assert rule.bars(loose)["kept_tolerance"] == 0.35 and rule.bars(declined)["kept_tolerance"] == rule.KEPT_TOLERANCE
    # nothing to accept: a setting stored, the cells not kept, or a move too small to be a bar
    assert partial_move({**loose.row, "status": "calibrated"}) is None
    assert partial_move({"reached": 0.6, "status": "not kept"}) is None
    assert partial_move({"reached": 0.24, "status": "not moved"}) is None  # under PARTIAL_MIN: nothing moved
    check_bars(reached_min=0.25, kept_tolerance=0.0)  # the ends of the ranges are allowed
    check_bars(reached_min=1.0, kept_tolerance=0.5)
    for name, value, allowed in (
        ("reached_min", 0.2, "0.25 to 1"),  # under a quarter of the way nothing moved, whatever the user asks
        ("reached_min", 1.5, "0.25 to 1"),
        ("kept_tolerance", -0.1, "0 to 0.5"),
        ("kept_tolerance", 0.6, "0 to 0.5"),
    ):
        with pytest.raises(ConfigError, match=f"is {value:g}; give one from {allowed}"):
            check_bars(**{"reached_min": None, "kept_tolerance": None, name: value})


def test_calibrate_records_the_bars_a_user_set(checkpoint, sim_data, tmp_path, capsys):
    out = tmp_path / "calibration"
    asked = ["calibrate", str(checkpoint), str(sim_data), "--source", "untreated", "--target", "TNFa", "--out"]
    small = ["--strengths", "0.25", "--guidances", "1", "3", "--n", "4", "--steps", "4", "--classifier-steps", "5"]
    for flag, bad in (("--reached-min", "0"), ("--kept-tolerance", "-0.2")):
        assert main([*asked, str(out), *small, flag, bad]) == 2
        assert f"({flag}, the dock's" in capsys.readouterr().err and not out.exists()  # refused before any work
    code = main([*asked, str(out), *small, "--reached-min", "0.95", "--kept-tolerance", "0.3", "--no-store"])
    assert code == 0
    saved = json.loads((out / "calibration.json").read_text())
    assert (saved["rules"]["reached_min"], saved["rules"]["kept_tolerance"]) == (0.95, 0.3)
    assert (saved["chosen"]["reached_min"], saved["chosen"]["kept_tolerance"]) == (0.95, 0.3)
    printed = capsys.readouterr()
    assert (
        "judged by bars other than the rule's own: moved ≥ 0.95 of the way, nuclei IoU lost ≤ 0.3 beyond the control"
        in printed.out
    )
    # the tiny model moves little: the reason names the bar it missed
    assert saved["chosen"]["status"] == "not moved" and "(at least 0.95 needed)" in saved["chosen"]["reason"]
    assert stored_nothing(checkpoint)


def stored_nothing(checkpoint) -> bool:
    return "calibration" not in json.loads((checkpoint / "phendiff.json").read_text())


def printed_for(out, source: str, target: str, no_store: bool):
    """The arguments print_calibration reads of `phendiff calibrate`'s."""
    import argparse

    return argparse.Namespace(source=source, target=target, out=out, no_store=no_store, checkpoint="m")


def test_a_partial_move_says_how_to_store_it(tmp_path, capsys):
    from napari_phendiff.cli.commands import print_calibration

    args = printed_for(tmp_path, "TNFa", "untreated", no_store=False)
    record = dict(
        status="not moved", strength=0.2, guidance=4.0, negative="source", reached=0.324, cells_moved=0.324,
        moved=0.4, real_target_moved=0.95, kept=0.86, kept_control=0.98, keep_channels=[], overshot_measurements=[],
        classifier_trusted=True, classifier_accuracy=0.97, reason="went 0.32 of the way (at least 0.5 needed).",
    )  # fmt: skip
    print_calibration(args, record)
    err = capsys.readouterr().err
    assert "nothing was stored" in err
    assert "To store a partial move like the furthest that kept the cells, judge this sweep again at that bar" in err
    assert f"no translation runs again: phendiff rejudge {tmp_path} --out {tmp_path}-0.32 --reached-min 0.32" in err
    assert "exaggerates" not in err
    # the closest setting exaggerating the target: said of it, not of a choice, since nothing was stored
    over = [{"measurement": "reporter_cytoplasm_mean", "moved": 2.4}]
    print_calibration(args, {**record, "overshot_measurements": over})
    err = capsys.readouterr().err
    assert (
        "warning: at this setting the translations went far past the real untreated cells (reporter_cytoplasm_mean 2.4x"
        in err
    )
    assert err.rstrip().endswith("Look at the translations before trusting this setting.")
    print_calibration(args, {**record, "overshot_measurements": over, "status": "calibrated"})
    assert capsys.readouterr().err.rstrip().endswith("before trusting this choice.")
    # judged at a tolerance of the user's: the command keeps it (rejudge's own default is the rule's)
    print_calibration(
        printed_for(tmp_path / "my calibration", "TNFa", "untreated", no_store=True),
        {**record, "reached_min": 0.5, "kept_tolerance": 0.3},
    )
    assert (
        f"phendiff rejudge '{tmp_path}/my calibration' --out '{tmp_path}/my calibration-0.32' --reached-min 0.32 "
        "--kept-tolerance 0.3 --no-store" in capsys.readouterr().err
    )
    print_calibration(args, {**record, "status": "not kept"})  # a looser bar on the move would not keep the cells
    assert "--reached-min" not in capsys.readouterr().err


def test_the_uncalibrated_setting_is_chosen_unless_another_goes_clearly_further():
    default = cal.Setting(0.3, 4.0)
    rows = [
        row(0.3, 4.0, 0.91, 0.84, kept_control=0.95),  # the checkpoint's setting without calibration
        row(0.6, 2.0, 0.97, 0.86, kept_control=0.95),  # the furthest, but by less than the margin
        row(0.2, 1.0, 0.10, 0.95, kept_control=0.95),
    ]
    assert cal.choose(rows).row is rows[1]  # without a default the furthest wins
    choice = cal.choose(rows, default=default)
    assert choice.row is rows[0] and choice.status == "calibrated" and choice.best is rows[0]
    assert "s 0.3, w 4 (source), the checkpoint's setting without calibration, went 0.91" in choice.reason
    assert "went 0.1 further (the furthest, s 0.6, w 2 (source), 0.97), so it is chosen" in choice.reason
    assert cal.choose(rows, default=cal.Setting(0.1 + 0.2, 4.0)).row is rows[0]  # the same walk, however computed
    rows[1]["reached"] = 1.2  # all the way (capped at 1): 0.09 further is still within the margin
    assert cal.choose(rows, default=default).row is rows[0]
    # as far (all the way): the default is chosen, though without it the tie went to s 0.6, which kept more (a
    # difference in what was kept within the tolerance is no evidence either)
    rows[0]["reached"] = 1.0
    assert cal.choose(rows).row is rows[1]
    choice = cal.choose(rows, default=default)
    assert choice.row is rows[0] and "none of the 3 settings that kept them went further, so it is" in choice.reason
    rows[1]["reached"] = 0.5  # the default is the furthest itself: chosen as the furthest
    choice = cal.choose(rows, default=default)
    assert choice.row is rows[0] and "went 1.00 of the way to the real target, the furthest of the 3" in choice.reason
    rows[1]["reached"] = 1.2
    rows[0]["reached"] = 0.85  # 0.15 behind: the other went clearly further
    assert cal.choose(rows, default=default).row is rows[1]
    assert cal.choose(rows, default=default, margin=0.2).row is rows[0]
    rows[0].update(reached=0.91, kept=0.7)  # the default loses the nuclei: it is no candidate
    assert cal.choose(rows, default=default).row is rows[1]
    rows[0].update(reached=0.45, kept=0.84)  # within the margin, but it did not move the phenotype half way
    rows[1]["reached"] = 0.52
    assert cal.choose(rows, default=default).row is rows[1]
    assert cal.choose(rows, default=cal.Setting(0.3, 4.0, "null")).row is rows[1]  # another setting: no match
    without = [row(0.2, 1.0, 0.85, 0.95), row(0.4, 1.0, 0.9, 0.9)]  # without guidance, the negative changes nothing
    assert cal.choose(without, default=cal.Setting(0.2, 1.0, "null", guidance_interval=(0.5, 1.0))).row is without[0]


def test_the_uncalibrated_setting_is_swept_when_the_settings_leave_it_out():
    default = cal.Setting(0.3, 4.0)
    asked = cal.grid([0.25, 0.5], [1.0, 3.0])
    assert cal.with_default(asked, default) == [*asked, default]
    assert cal.with_default(cal.grid(), default) == cal.grid()  # the default grid has it
    same = [cal.Setting(0.1 + 0.2, 4.0)]
    assert cal.with_default(same, default) == same


def test_the_uncalibrated_setting_ignores_a_stored_calibration(checkpoint):
    model = pd.load_checkpoint(checkpoint, device="cpu")
    before = cal.uncalibrated_setting(model.manifest, "untreated", "TNFa")
    assert before == cal.Setting(TranslateOptions().strength, TranslateOptions().guidance)
    calibration_store.store_calibration(
        checkpoint, "untreated", "TNFa", {"strength": 0.6, "guidance": 2.0, "negative": "source"}
    )
    calibrated = pd.load_checkpoint(checkpoint, device="cpu")
    assert translation_options(calibrated, "untreated", "TNFa")[0].strength == 0.6  # what translations now use
    assert cal.uncalibrated_setting(calibrated.manifest, "untreated", "TNFa") == before  # what calibration weighs
    own = {**calibrated.manifest, "translation_defaults": {"strength": 1.0, "keep_channels": ["DNA"]}}
    assert cal.uncalibrated_setting(own, "untreated", "TNFa") == cal.Setting(1.0, TranslateOptions().guidance)


def test_an_unreliable_classifier_is_not_a_witness(sim_data):
    from napari_phendiff.core.cellstats import RealCells
    from napari_phendiff.core.dataset import load_folder

    class Fixed:  # a classifier that calls everything the target
        conditions = ["TNFa", "untreated"]

        def probabilities(self, images):
            return np.tile([1.0, 0.0], (len(images), 1))

    class Model:
        channel_names = ["DNA", "reporter"]
        normalization = pd.load_checkpoint("demo", device="cpu").normalization

    data = load_folder(sim_data)
    source = np.stack([im for im, label in zip(data.images, data.labels) if data.conditions[label] == "untreated"])
    targets = [im for im, label in zip(data.images, data.labels) if data.conditions[label] == "TNFa"]
    cells = RealCells(source, targets, Model.channel_names)
    trusted = cal.Witnesses(Fixed(), 1.0, True, cells).score(Model, source, source, source, "TNFa")
    flagged = cal.Witnesses(Fixed(), 1.0, False, cells).score(Model, source, source, source, "TNFa")
    # the untranslated images: the classifier says "all the way", the cells say they did not move
    assert trusted["moved"] == 1.0 and trusted["classifier_reached"] == 1.0
    assert np.isnan(flagged["classifier_reached"])
    assert trusted["cells_moved"] == flagged["cells_moved"] == 0.0  # the real source cells themselves
    assert trusted["reached"] == flagged["reached"] == 0.0  # the cells decide where they tell the conditions apart
    assert flagged["kept"] == flagged["kept_control"] == 1.0
    translated = cal.Witnesses(Fixed(), 1.0, True, cells).score(
        Model, source, np.stack(targets[: len(source)]), source, "TNFa"
    )
    assert translated["cells_moved"] > 0.5  # other cells, but target cells: most look like the target


def cell_rows(group, reporter, texture):
    return [{"group": group, "reporter_nc_ratio": a, "reporter_texture": b} for a, b in zip(reporter, texture)]


def test_cells_moved_counts_the_cells_that_look_like_real_target_cells():
    from napari_phendiff.core.cellstats import cell_summary, cells_moved, phenotype_moved

    rng = np.random.default_rng(0)
    n = 200
    real = cell_rows("real source", rng.normal(0, 1, n), rng.normal(0, 1, n)) + cell_rows(
        "real target", rng.normal(4, 1, n), rng.normal(4, 1, n)
    )
    # 60% of the translated cells went all the way, 40% stayed: the medians moved, per measurement, past halfway
    moved = rng.random(n) < 0.6
    reporter = np.where(moved, rng.normal(4, 1, n), rng.normal(0, 1, n))
    texture = np.where(moved, rng.normal(4, 1, n), rng.normal(0, 1, n))
    rows = real + cell_rows("translated", reporter, texture)
    summary = cell_summary(rows)
    assert cells_moved(rows, summary) == pytest.approx(moved.mean(), abs=0.05)
    assert phenotype_moved(summary)[0] > moved.mean() + 0.1  # the medians' way is not the share of cells moved
    as_target = real + cell_rows("translated", rng.normal(4, 1, n), rng.normal(4, 1, n))
    assert cells_moved(as_target, cell_summary(as_target)) == pytest.approx(1.0, abs=0.05)
    # a measurement of an ignored channel does not count: nothing left to count with
    assert np.isnan(cells_moved(rows, summary, ignored_channels=["reporter"]))


def test_cells_moved_is_not_counted_where_the_real_cells_overlap():
    from napari_phendiff.core.cellstats import cell_summary, cells_moved

    rng = np.random.default_rng(1)
    n = 5000
    # the conditions differ in their medians (d 0.52) but most real cells of either look alike
    rows = (
        cell_rows("real source", rng.normal(0, 1, n), rng.normal(0, 1, n))
        + cell_rows("real target", rng.normal(0.52, 1, n), rng.normal(0.52, 1, n))
        + cell_rows("translated", rng.normal(0.52, 1, n), rng.normal(0.52, 1, n))
    )
    summary = cell_summary(rows)
    assert any(s["differs"] for s in summary)
    assert np.isnan(cells_moved(rows, summary))
    few = (  # far apart, but three real target cells: too few to put a share on
        cell_rows("real source", rng.normal(0, 1, 200), rng.normal(0, 1, 200))
        + cell_rows("real target", [4.0, 4.2, 3.9], [4.1, 3.8, 4.0])
        + cell_rows("translated", rng.normal(4, 1, 200), rng.normal(4, 1, 200))
    )
    assert np.isnan(cells_moved(few, cell_summary(few)))
    assert cal.reached(float("nan"), 0.7) == 0.7  # then the classifier is the witness
    assert cal.reached(1.4, 0.2) == 1.0  # past the real target is no further


def test_calibrate_says_when_the_cells_cannot_be_counted(tmp_path, capsys):
    from napari_phendiff.cli.commands import print_calibration

    args = printed_for(tmp_path, "untreated", "TNFa", no_store=True)
    chosen = {
        "classifier_trusted": True,
        "classifier_accuracy": 0.95,
        "status": "calibrated",
        "strength": 0.3,
        "guidance": 4.0,
        "negative": "source",
        "reached": 0.8,
        "cells_moved": float("nan"),
        "moved": 0.78,
        "real_target_moved": 0.97,
        "kept": 0.85,
        "kept_control": 0.98,
        "reason": "why",
        "keep_channels": [],
        "overshot_measurements": [],
    }
    print_calibration(args, chosen)
    printed = capsys.readouterr()
    assert "could not count moved cells" in printed.err and "rests on the condition classifier" in printed.err
    assert "reached 0.80 of the way to real TNFa (cells moved not countable; classifier P 0.78" in printed.out
    # neither witness: said once, no claim that either decided
    neither = {**chosen, "classifier_trusted": False, "classifier_accuracy": 0.6, "status": "not witnessed"}
    print_calibration(args, {**neither, "reached": float("nan")})
    printed = capsys.readouterr()
    assert "only 60% of held-out ones" in printed.err and "nothing could say how far the phenotype moved" in printed.err
    assert "rests on" not in printed.err and "reached unknown of the way" in printed.out
    # the cells counted: the classifier, trusted or not, did not decide, and no warning says otherwise
    for trusted in (True, False):
        print_calibration(args, {**chosen, "cells_moved": 0.8, "classifier_trusted": trusted})
        assert "could not count" not in capsys.readouterr().err


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


def test_calibrating_with_kept_channels_stores_them_as_the_default(checkpoint, sim_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "calibration"
    exaggerated = [{"measurement": "reporter_integrated", "moved": 3.0}]
    monkeypatch.setattr(witnesses, "overshot", lambda *args, **kwargs: exaggerated)
    monkeypatch.setattr(rule, "REACHED_MIN", -1.0)  # the tiny test model moves little: store whatever it reached
    monkeypatch.setattr(cal, "CLASSIFIER_MIN_ACCURACY", 1.01)  # no classifier is trusted: the cells decide
    assert (
        main(
            [
                "calibrate",
                str(checkpoint),
                str(sim_data),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(out),
                "--strengths",
                "0.25",
                "0.5",
                "--guidances",
                "3",
                "--n",
                "4",  # every untreated image: enough cells to count (cellstats.MIN_CELLS)
                "--steps",
                "4",
                "--classifier-steps",
                "5",
                "--keep-channels",
                "DNA",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "could not count moved cells" not in printed.err  # the cells decided: the untrusted classifier did not
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["chosen"]["classifier_trusted"] is False
    assert all(row["reached"] == pytest.approx(min(row["cells_moved"], 1.0), nan_ok=True) for row in saved["rows"])
    assert "kept as the original's: DNA" in printed.out
    assert "went far past the real TNFa cells (reporter_integrated 3.0x" in printed.err
    chosen = json.loads((out / "calibration.json").read_text())["chosen"]
    assert chosen["keep_channels"] == ["DNA"] and 0 <= chosen["real_target_moved"] <= 1
    assert chosen["status"] == "calibrated", chosen["reason"]
    assert chosen["overshot_measurements"] == exaggerated
    model = pd.load_checkpoint(checkpoint, device="cpu")
    options, sources = translation_options(model, "untreated", "TNFa")
    assert options.keep_channels == ("DNA",) and sources["keep_channels"] == "calibrated"
    image = pd.read_image(sorted((sim_data / "untreated").glob("*.tif"))[0])
    np.testing.assert_array_equal(pd.translate(model, image, "untreated", "TNFa", steps=4)[0], image[0])
    with pytest.raises(ConfigError, match="the checkpoint's channels are DNA, reporter"):
        cal.calibrate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "c4", keep_channels=["Hoechst"])
    # a sweep where nothing reaches the bar is reported and stores nothing
    monkeypatch.setattr(rule, "REACHED_MIN", 2.0)
    manifest = (checkpoint / "phendiff.json").read_text()
    assert (
        main(
            [
                "calibrate",
                str(checkpoint),
                str(sim_data),
                "--source",
                "TNFa",
                "--target",
                "untreated",
                "--out",
                str(tmp_path / "c5"),
                "--strengths",
                "0.25",
                "--guidances",
                "3",
                "--n",
                "2",
                "--steps",
                "4",
                "--classifier-steps",
                "5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "not calibrated (not moved); closest: strength 0.25" in printed.out
    assert "nothing was stored" in printed.err and (checkpoint / "phendiff.json").read_text() == manifest
    assert json.loads((tmp_path / "c5" / "calibration.json").read_text())["chosen"]["status"] == "not moved"


@pytest.mark.slow
def test_calibrate_writes_the_frontier_and_becomes_the_default(checkpoint, sim_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "calibration"
    monkeypatch.setattr(rule, "REACHED_MIN", -1.0)  # the tiny test model moves little: store whatever it reached
    code = main(
        [
            "calibrate",
            str(checkpoint),
            str(sim_data),
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(out),
            "--strengths",
            "0.25",
            "0.5",
            "--guidances",
            "1",
            "3",
            "--n",
            "4",  # every untreated image: enough cells to count (cellstats.MIN_CELLS)
            "--steps",
            "8",
            "--classifier-steps",
            "5",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen: strength" in printed
    saved = json.loads((out / "calibration.json").read_text())
    # the four settings asked for and the checkpoint's setting without calibration, which the rule weighs them against
    without = TranslateOptions()  # what the copy translated with before: recorded beside the bars it was weighed with
    assert len(saved["rows"]) == 5 and (out / "frontier.png").stat().st_size > 0
    assert [(r["strength"], r["guidance"]) for r in saved["rows"]][-1] == (without.strength, without.guidance)
    assert saved["rules"]["default"] == dict(
        strength=without.strength,
        guidance=without.guidance,
        negative=without.negative,
        inversion=without.inversion,
        guidance_interval=list(without.guidance_interval),
    )
    assert saved["rules"]["default_margin"] == rule.DEFAULT_MARGIN
    header = (out / "frontier.csv").read_text().splitlines()[0].split(",")
    assert {"strength", "guidance", "moved", "cells_moved", "reached", "kept", "kept_control", "change_DNA"} <= set(
        header
    )
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
    assert (
        main(
            [
                "translate",
                str(checkpoint),
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(tmp_path / "t"),
                "--steps",
                "4",
            ]
        )
        == 0
    )
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
    result = batch.translate_files(
        checkpoint,
        [sim_data / "untreated"],
        "untreated",
        ["TNFa"],
        tmp_path / "out",
        device="cpu",
        steps=4,
        strength=0.5,
        precision="fp32",  # in bf16 a batch's rounding differs more, within bf16's own error (test_translate.py)
    )
    assert calls == [4] and len(result.written) == 4  # four 48-px fields, one call
    model = pd.load_checkpoint(checkpoint, device="cpu")
    for path in sorted((sim_data / "untreated").glob("*.tif")):
        alone = pd.translate(model, pd.read_image(path), "untreated", "TNFa", steps=4, strength=0.5, precision="fp32")
        written = pd.read_image(tmp_path / "out" / f"{path.stem}_to_TNFa.tif")
        # batched convolutions round differently from single ones: a count or two out of thousands
        assert np.abs(written.astype(np.int64) - alone.astype(np.int64)).max() <= 3, path.name
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["strength"] == 0.5 and summary["options_from"]["strength"] == "given"


def test_counts_and_an_unwritable_checkpoint_are_refused_before_the_sweep(checkpoint, sim_data, tmp_path, capsys):
    for n in ("-1", "0", "two"):
        with pytest.raises(SystemExit):
            main(
                [
                    "calibrate",
                    str(checkpoint),
                    str(sim_data),
                    "--source",
                    "untreated",
                    "--target",
                    "TNFa",
                    "--out",
                    str(tmp_path / "c"),
                    "--n",
                    n,
                ]
            )
        assert "--n: must be" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="n \\(held-out source images\\) must be at least 1, not -1"):
        cal.calibrate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "c", n=-1)
    with pytest.raises(ConfigError, match="n \\(source images to translate\\) must be at least 1, not 0"):
        evaluate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "r", n=0)


def test_a_checkpoint_that_cannot_be_written_is_refused_before_the_sweep(checkpoint, sim_data, tmp_path, monkeypatch):
    def read_only(folder):  # what checkpoint.check_writable raises for a read-only folder (root writes anyway)
        raise CheckpointError(f"{folder}: nothing can be written there (Permission denied).")

    monkeypatch.setattr(calibration_store, "check_writable", read_only)
    monkeypatch.setattr(cal, "iter_sweep_pairs", lambda *a, **k: pytest.fail("the sweep ran"))
    with pytest.raises(CheckpointError, match="the checkpoint cannot be written.*--no-store"):
        cal.calibrate(checkpoint, sim_data, "untreated", "TNFa", tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "entry, phrase",
    [
        ([0.3, 4], "is a list, not a setting"),
        ({"strength": 7}, "is not valid: strength"),
        (
            {"strength": 0.3, "keep_channels": ["Hoechst"]},
            "keeps channel\\(s\\) Hoechst, which it does not have \\(DNA, reporter\\)",
        ),
    ],
)
def test_a_calibration_edited_into_nonsense_names_the_checkpoint_entry(checkpoint, entry, phrase):
    manifest = json.loads((checkpoint / "phendiff.json").read_text())
    manifest["calibration"] = {"untreated->TNFa": entry}
    model = pd.load_checkpoint(checkpoint, device="cpu")
    model.manifest["calibration"] = manifest["calibration"]
    with pytest.raises(
        CheckpointError,
        match="calibrated setting for untreated -> TNFa \\(calibration\\['untreated->"
        f"TNFa'\\] in its phendiff.json\\) {phrase}",
    ):
        translation_options(model, "untreated", "TNFa")
    assert translation_options(model, "TNFa", "untreated")[1]["strength"] == "default"  # the other direction runs


def test_the_progress_counts_the_preparation_then_network_calls(checkpoint, sim_data, tmp_path, monkeypatch):
    seen = []
    train = cal.train_classifier

    def training(*args, **kwargs):  # the folder was read and counted as a step before the classifier trains
        assert seen == [(0, 16, "reading the folder"), (1, 16, "training the condition classifier")]
        return train(*args, **kwargs)

    monkeypatch.setattr(cal, "train_classifier", training)
    settings = cal.grid([0.5], [3.0])  # with the uncalibrated s 0.3, w 4 and a control per strength
    cal.calibrate(
        checkpoint,
        sim_data,
        "untreated",
        "TNFa",
        tmp_path / "c",
        settings=settings,
        n=2,
        steps=4,
        classifier_steps=5,
        store=False,
        progress=lambda done, total, stage: seen.append((done, total, stage)),
    )
    # read, classifier trained, real cells measured (0-3), named; then network calls: s 0.5 walks 2 of the 4 steps,
    # so s 0.5, w 3 inverts 2 and regenerates 2 through both branches (6), its control regenerates 2 (2); s 0.3 walks
    # 1: guided 2, control 1; then each of the 2 settings scored counts SCORING_CALLS (1), named until the last
    assert cal.SCORING_CALLS == 1 and {total for _, total, _ in seen} == {16}
    assert [(done, stage) for done, _, stage in seen] == [
        *enumerate(cal.PREPARATION),
        *((done, "") for done in (9, 11, 13)),
        (14, "scoring the settings"),  # the last translation: what follows is the scoring
        (15, "scoring the settings"),
        (16, ""),  # done: a bar left on the stage's name would read as still scoring
    ]


@pytest.mark.slow
def test_a_stored_calibration_keeps_its_classifier_for_reveal(checkpoint, sim_data, tmp_path, monkeypatch):
    from napari_phendiff.core.features import CLASSIFIER_FOLDER, stored_classifier

    monkeypatch.setattr(rule, "REACHED_MIN", -1.0)  # the tiny test model moves little: store whatever it reached
    monkeypatch.setattr(cal, "CLASSIFIER_MIN_ACCURACY", 0.0)  # its 5-step classifier counts as trusted here
    record = cal.calibrate(
        checkpoint,
        sim_data,
        "untreated",
        "TNFa",
        tmp_path / "calibration",
        settings=cal.grid([0.25, 0.5], [1.0, 3.0]),
        n=2,
        steps=8,
        classifier_steps=5,
    )
    assert record["status"] == "calibrated"
    classifier = stored_classifier(checkpoint, "TNFa")
    assert classifier is not None and classifier.conditions == ["TNFa", "untreated"]
    assert classifier.accuracy == record["classifier_accuracy"]
    assert stored_classifier(checkpoint, "treated") is None  # it cannot judge a condition it does not know
    pd.load_checkpoint(checkpoint, device="cpu")  # the checkpoint's own weights are as they were: it still loads

    image = sorted((sim_data / "untreated").glob("*.tif"))[0]
    args = ["translate", str(checkpoint), str(image), "--source", "untreated", "--target", "TNFa", "--steps", "4"]
    assert main([*args, "--out", str(tmp_path / "t"), "--reveal"]) == 0
    table = next((tmp_path / "t").glob("*_reveal.csv")).read_text().splitlines()
    assert {"classifier_change", "classifier_reached", "converted"} <= set(table[0].split(","))
    (checkpoint / CLASSIFIER_FOLDER / "classifier.safetensors").write_bytes(b"damaged")
    assert stored_classifier(checkpoint, "TNFa") is None  # reveal goes on with the measurements alone
    assert main([*args, "--out", str(tmp_path / "u"), "--reveal"]) == 0
    table = next((tmp_path / "u").glob("*_reveal.csv")).read_text().splitlines()
    assert "classifier_change" not in table[0]
