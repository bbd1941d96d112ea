"""Reveal: each cell's smallest change mask and its score (core/reveal.py), on simulated cells whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

import napari_phendiff as pd
from napari_phendiff.core.errors import ConfigError
from napari_phendiff.core.reveal import paste, reveal, share_masks
from napari_phendiff.core.simulate import simulate_field

CHANNELS = ["DNA", "reporter"]


@pytest.fixture(scope="module")
def pair():
    """A field of untreated cells and, for the cells with odd labels only, their true TNFa counterfactual (same
    seed, same layout and DNA): a translation whose moved cells are known."""
    untreated = simulate_field("translocation", "untreated", 128, seed=4, cell_diameter=24.0)
    treated = simulate_field("translocation", "TNFa", 128, seed=4, cell_diameter=24.0)
    moved = np.isin(untreated.cells, np.arange(1, untreated.cells.max() + 1, 2))
    return untreated, paste(untreated.image, treated.image, moved), moved


def test_a_whole_cell_mask_pasted_is_the_translation_inside_the_cell(pair):
    untreated, translated, _ = pair
    whole = share_masks(np.random.default_rng(0).random(untreated.cells.shape), untreated.cells)[1.0]
    assert np.array_equal(whole, untreated.cells > 0)
    pasted = paste(untreated.image, translated, whole)
    assert np.array_equal(pasted[:, whole], translated[:, whole])
    assert np.array_equal(pasted[:, ~whole], untreated.image[:, ~whole])


def test_shares_take_the_most_changed_pixels_of_each_cell():
    cells = np.zeros((4, 10), np.int32)
    cells[:, :5], cells[:, 5:] = 1, 2
    changed = np.arange(40, dtype=float).reshape(4, 10)
    masks = share_masks(changed, cells, shares=(0.25,))
    assert masks[0.25].sum() == 10  # 5 of each cell's 20 pixels
    assert masks[0.25][3, :5].all() and masks[0.25][3, 5:].all()  # the bottom row changed most in both cells


def test_an_unchanged_image_reveals_nothing(pair):
    untreated, _, _ = pair
    found = reveal(untreated.image, untreated.image.copy(), CHANNELS, nuclei=untreated.nuclei, cells=untreated.cells)
    assert not found.mask.any() and found.rows
    assert all(row["reveal_score"] == 0 and row["mask_area"] == 0 for row in found.rows)
    assert np.array_equal(found.pasted, untreated.image)


def test_cells_whose_phenotype_moved_rank_above_those_that_did_not(pair):
    untreated, translated, moved = pair
    found = reveal(untreated.image, translated, CHANNELS, nuclei=untreated.nuclei, cells=untreated.cells)
    ranked = [row["cell"] for row in found.rows]
    odd = [cell for cell in ranked if cell % 2]
    assert len(odd) >= 3 and ranked[: len(odd)] == odd  # every moved cell before every unmoved one
    for row in found.rows:
        inside = untreated.cells == row["cell"]
        if row["cell"] % 2:
            assert row["reveal_score"] > 0 and 0 < row["mask_share"] <= 1 and row["reached"] >= 0.8
            assert found.mask[inside].sum() == row["mask_area"] > 0
        else:
            assert row["reveal_score"] == 0 and not found.mask[inside].any()
    assert not found.mask[~moved].any()  # the mask lies within the moved cells
    assert np.array_equal(found.pasted[:, found.mask], translated[:, found.mask])


def test_reveal_refuses_images_that_do_not_match():
    image = np.zeros((2, 16, 16), np.uint16)
    with pytest.raises(ConfigError, match="same shape"):
        reveal(image, image[:, :8], CHANNELS)
    with pytest.raises(ConfigError, match="reached"):
        reveal(image, image, CHANNELS, reached=0)
    assert pd.reveal is reveal


def test_translate_reveal_writes_the_masks_and_the_ranked_cells(tiny_checkpoint, tmp_path):
    import csv

    from napari_phendiff.cli import main as cli

    field = simulate_field("translocation", "untreated", 64, seed=5, cell_diameter=20.0)
    pd.write_image(tmp_path / "field.tif", field.image, channel_names=CHANNELS)
    assert cli(
        [
            "translate",
            str(tiny_checkpoint),
            str(tmp_path / "field.tif"),
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "4",
            "--reveal",
        ]
    ) in (0, None)
    masks = pd.read_image(tmp_path / "out" / "field_to_TNFa_reveal.tif")
    translated = pd.read_image(tmp_path / "out" / "field_to_TNFa.tif")
    with open(tmp_path / "out" / "field_to_TNFa_reveal.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = reveal(field.image, translated, CHANNELS)
    assert [int(row["cell"]) for row in rows] == [row["cell"] for row in expected.rows]
    scores = [float(row["reveal_score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert np.array_equal(np.squeeze(masks), np.where(expected.mask, expected.cells, 0))


@pytest.fixture(scope="module")
def classifier():
    """A condition classifier trained on real simulated fields of both conditions (as calibrate trains one)."""
    from napari_phendiff.core.features import train_classifier

    fields = [
        simulate_field("translocation", condition, 64, seed=100 + i, cell_diameter=24.0).image
        for condition in ("untreated", "TNFa")
        for i in range(8)
    ]
    trained = train_classifier(fields, [0] * 8 + [1] * 8, ["untreated", "TNFa"], steps=150, seed=0)
    assert trained.accuracy == 1.0  # the phenotype is plain to it: a fair judge
    return trained


def test_a_classifier_scores_each_cells_mask_by_the_decision_it_moves(pair, classifier):
    untreated, translated, _ = pair
    found = reveal(
        untreated.image,
        translated,
        CHANNELS,
        nuclei=untreated.nuclei,
        cells=untreated.cells,
        classifier=classifier,
        target="TNFa",
    )
    rows = {row["cell"]: row for row in found.rows}
    moved = [r for cell, r in rows.items() if cell % 2]
    still = [r for cell, r in rows.items() if not cell % 2]
    # pasting a truly moved cell moves the decision towards TNFa (by 0.006 to 0.83 here: a window holds a few
    # cells, the others untreated); an untouched cell's paste changes nothing
    assert np.mean([r["classifier_change"] for r in moved]) > 0.1
    assert np.mean([r["classifier_change"] > 0 for r in moved]) >= 0.9
    assert all(r["classifier_change"] == 0 and r["classifier_reached"] == 0 for r in still)
    assert all(r["classifier_before"] < 0.5 for r in rows.values())  # untreated windows are called untreated
    # each moved cell's mask carries most of its decision's change, or the whole cell is kept
    for r in moved:
        if r["classifier_change"] >= 0.05:
            assert r["classifier_reached"] >= 0.8 or r["mask_share"] == 1.0
    assert any(r["converted"] for r in moved) and not any(r["converted"] for r in still)
    # the classifier only adds a condition: its masks are never smaller than the measurements' alone
    alone = reveal(untreated.image, translated, CHANNELS, nuclei=untreated.nuclei, cells=untreated.cells)
    assert found.mask.sum() >= alone.mask.sum() and (found.mask | alone.mask).sum() == found.mask.sum()


def test_a_classifier_needs_a_target_it_knows(pair, classifier):
    untreated, translated, _ = pair
    with pytest.raises(ConfigError, match="needs the target condition, one of untreated, TNFa; got 'treated'"):
        reveal(untreated.image, translated, CHANNELS, classifier=classifier, target="treated")
