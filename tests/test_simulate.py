"""Tests of the two-condition cell image simulator and its phenotype measures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_phendiff.core.simulate import (
    PHENOTYPES,
    TRUTH_COLUMNS,
    SimulatedField,
    measure_phenotype,
    simulate_dataset,
    simulate_field,
)

# direction in which the treated condition moves the phenotype value
TREATED_IS_HIGHER = {"translocation": True, "golgi": True, "actin": False}


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per phenotype and condition: (values measured from the noisy images, ground truth) over 10 fields."""
    result = {}
    for name in PHENOTYPES:
        result[name] = {}
        for condition in (0, 1):
            fields = [simulate_field(name, condition, 128, seed=100 + s) for s in range(10)]
            noisy = [measure_phenotype(f.image, f.nuclei, f.cells, name) for f in fields]
            result[name][condition] = (np.concatenate(noisy), np.concatenate([f.phenotype_values for f in fields]))
    return result


@pytest.mark.parametrize("name", list(PHENOTYPES))
def test_field_shapes_dtypes_and_ranges(name):
    field = simulate_field(name, 0, 96, seed=3)
    channels = len(PHENOTYPES[name].channels)
    assert isinstance(field, SimulatedField)
    assert field.image.shape == (channels, 96, 96) and field.image.dtype == np.uint16
    assert field.nuclei.shape == field.cells.shape == (96, 96)
    assert field.nuclei.dtype == field.cells.dtype == np.int32
    assert field.phenotype_values.dtype == np.float64
    assert np.isfinite(field.phenotype_values).all()
    background = field.image[:, field.cells == 0]
    assert 100 <= np.median(background) <= 350  # camera offset + haze
    assert field.image.max() < 20000  # a few thousand counts of signal, far from saturation
    for channel in field.image:
        assert np.percentile(channel[field.cells > 0], 99) > np.median(background) + 300  # every stain is visible


@pytest.mark.parametrize("name", list(PHENOTYPES))
def test_masks_are_consistent(name):
    for condition in (0, 1):
        field = simulate_field(name, condition, 128, seed=5)
        n = len(field.phenotype_values)
        assert n >= 1
        assert set(np.unique(field.nuclei)) == set(range(n + 1))  # labels 1..n, each with a nucleus
        assert set(np.unique(field.cells)) == set(range(n + 1))
        in_nucleus = field.nuclei > 0
        np.testing.assert_array_equal(field.cells[in_nucleus], field.nuclei[in_nucleus])  # nucleus inside its cell
        nucleus_area = np.bincount(field.nuclei.ravel(), minlength=n + 1)[1:]
        cell_area = np.bincount(field.cells.ravel(), minlength=n + 1)[1:]
        assert (cell_area > nucleus_area).all()


def test_same_seed_same_field_other_seed_other_field():
    a = simulate_field("golgi", "nocodazole", 64, seed=7)
    b = simulate_field("golgi", 1, 64, seed=7)
    c = simulate_field("golgi", 1, 64, seed=8)
    for name in ("image", "nuclei", "cells", "phenotype_values"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, c.image)
    g1 = simulate_field("actin", 0, 64, seed=np.random.default_rng(1))
    g2 = simulate_field("actin", 0, 64, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(g1.image, g2.image)


@pytest.mark.parametrize("name", ["translocation", "golgi"])
def test_conditions_of_one_seed_share_layout(name):
    untreated, treated = simulate_field(name, 0, 128, seed=11), simulate_field(name, 1, 128, seed=11)
    np.testing.assert_array_equal(untreated.nuclei, treated.nuclei)
    np.testing.assert_array_equal(untreated.cells, treated.cells)
    dna_difference = np.abs(untreated.image[0].astype(float) - treated.image[0].astype(float))
    assert np.median(dna_difference[untreated.nuclei > 0]) < 0.1 * np.median(untreated.image[0][untreated.nuclei > 0])
    assert not np.array_equal(untreated.image[1:], treated.image[1:])


def test_latrunculin_leaves_fewer_rounder_cells():
    counts, roundness = {0: 0, 1: 0}, {0: [], 1: []}
    for condition in (0, 1):
        for seed in range(8):
            field = simulate_field("actin", condition, 128, seed=seed)
            counts[condition] += len(field.phenotype_values)
            for label in range(1, len(field.phenotype_values) + 1):
                ys, xs = np.nonzero(field.cells == label)
                eigenvalues = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
                roundness[condition].append(eigenvalues[0] / eigenvalues[1])
    assert counts[1] < 0.85 * counts[0]
    assert np.median(roundness[1]) > np.median(roundness[0])


def test_cell_count_scales_with_image_size():
    small = [len(simulate_field("translocation", 0, 64, seed=s).phenotype_values) for s in range(10)]
    large = [len(simulate_field("translocation", 0, 256, seed=s).phenotype_values) for s in range(3)]
    assert 1 <= np.mean(small) <= 4.5 and max(small) <= 7
    assert min(large) >= 25
    bigger_cells = [
        len(simulate_field("translocation", 0, 256, seed=s, cell_diameter=56).phenotype_values) for s in range(3)
    ]
    assert np.mean(bigger_cells) < np.mean(large) / 2


@pytest.mark.parametrize("name", list(PHENOTYPES))
def test_measure_separates_conditions(name, measured):
    (untreated, truth0), (treated, truth1) = measured[name][0], measured[name][1]
    assert np.isfinite(untreated).all() and np.isfinite(treated).all()
    higher, lower = (treated, untreated) if TREATED_IS_HIGHER[name] else (untreated, treated)
    assert np.median(higher) > np.median(lower)
    threshold = (np.median(untreated) + np.median(treated)) / 2
    correct = (higher > threshold).sum() + (lower <= threshold).sum()
    assert correct / (higher.size + lower.size) > 0.85
    # the noisy image measures what the ground truth says
    both_noisy, both_truth = np.concatenate([untreated, treated]), np.concatenate([truth0, truth1])
    assert np.corrcoef(both_noisy, both_truth)[0, 1] > 0.95


def test_documented_ranges_of_the_translocation_ratio(measured):
    untreated, treated = measured["translocation"][0][1], measured["translocation"][1][1]
    assert 0.4 < np.median(untreated) < 0.7
    assert 1.8 < np.median(treated) < 3.0


def test_measure_does_not_depend_on_intensity_scale():
    field = simulate_field("actin", 0, 96, seed=2)
    image = field.image.astype(float)
    rescaled = 3.0 * image + 500.0  # other exposure, other offset
    np.testing.assert_allclose(
        measure_phenotype(rescaled, field.nuclei, field.cells, "actin"),
        measure_phenotype(image, field.nuclei, field.cells, "actin"),
        rtol=1e-6,
    )


def test_measure_rejects_mismatched_inputs():
    field = simulate_field("translocation", 0, 64, seed=1)
    with pytest.raises(ValueError, match="channels"):
        measure_phenotype(field.image[:1], field.nuclei, field.cells, "translocation")
    with pytest.raises(ValueError, match="Masks"):
        measure_phenotype(field.image, field.nuclei[:32], field.cells, "translocation")
    with pytest.raises(ValueError, match="golgi"):
        measure_phenotype(field.image, field.nuclei, field.cells, "mitosis")


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="translocation, golgi, actin"):
        simulate_field("mitosis", 0)
    with pytest.raises(ValueError, match="TNFa"):
        simulate_field("translocation", "nocodazole")
    with pytest.raises(ValueError, match="TNFa"):
        simulate_field("translocation", 2)
    with pytest.raises(ValueError, match="size"):
        simulate_field("golgi", 0, 16)
    with pytest.raises(ValueError, match="cell_diameter"):
        simulate_field("golgi", 0, 64, cell_diameter=2)


def test_simulate_dataset_layout_and_ground_truth(tmp_path):
    out = tmp_path / "sim" / "golgi"
    calls = []
    returned = simulate_dataset(out, "golgi", 2, 64, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert returned == out
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    pheno = PHENOTYPES["golgi"]

    # the training folder holds one subfolder per condition and nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted(pheno.conditions)
    for condition in pheno.conditions:
        assert sorted(p.name for p in (out / condition).iterdir()) == [f"{condition}_0000.tif", f"{condition}_0001.tif"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["golgi", "golgi_truth"]  # no staging left behind

    with tifffile.TiffFile(out / "nocodazole" / "nocodazole_0001.tif") as tif:
        assert tif.series[0].axes == "CYX"
        image = tif.series[0].asarray()
        assert tif.imagej_metadata["channels"] == 3
        assert list(tif.imagej_metadata["Labels"]) == list(pheno.channels)
    assert image.shape == (3, 64, 64) and image.dtype == np.uint16

    truth = out.parent / "golgi_truth"
    nuclei = tifffile.imread(truth / "nocodazole" / "nocodazole_0001_nuclei.tif")
    cells = tifffile.imread(truth / "nocodazole" / "nocodazole_0001_cells.tif")
    assert nuclei.shape == cells.shape == (64, 64)
    with open(truth / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == TRUTH_COLUMNS
    these = [r for r in rows if r["file"] == "nocodazole/nocodazole_0001.tif"]
    assert [int(r["cell"]) for r in these] == list(range(1, cells.max() + 1))
    assert all(r["condition"] == "nocodazole" for r in these)
    assert [int(r["cell_area"]) for r in these] == np.bincount(cells.ravel())[1:].tolist()
    # the truth is reproducible from the written files
    values = measure_phenotype(image, nuclei, cells, "golgi")
    np.testing.assert_allclose(values, [float(r["phenotype_value"]) for r in these], rtol=0.1)
    info = json.loads((truth / "truth.json").read_text())
    assert info["phenotype"] == "golgi" and info["conditions"] == list(pheno.conditions)
    assert info["channels"] == list(pheno.channels)
    assert (info["seed"], info["size"], info["n_per_class"]) == (3, 64, 2)


def test_simulate_dataset_is_byte_identical_for_a_seed(tmp_path):
    first = simulate_dataset(tmp_path / "a", "actin", 1, 48, seed=9)
    second = simulate_dataset(tmp_path / "b", "actin", 1, 48, seed=9)
    for condition in PHENOTYPES["actin"].conditions:
        name = f"{condition}/{condition}_0000.tif"
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (tmp_path / "a_truth" / "truth.csv").read_text() == (tmp_path / "b_truth" / "truth.csv").read_text()
    # the two conditions are not paired: each image has its own seed
    untreated = tifffile.imread(first / "untreated" / "untreated_0000.tif")
    treated = tifffile.imread(first / "latrunculinB" / "latrunculinB_0000.tif")
    assert not np.array_equal(untreated[0], treated[0])


def test_simulate_dataset_refuses_non_empty_folders_and_bad_arguments(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "something.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        simulate_dataset(full, "actin", 1, 48)
    assert (full / "something.txt").read_text() == "keep me"

    (tmp_path / "taken_truth").mkdir()
    (tmp_path / "taken_truth" / "truth.csv").write_text("old")
    with pytest.raises(ValueError, match="taken_truth"):
        simulate_dataset(tmp_path / "taken", "actin", 1, 48)

    empty = tmp_path / "empty"
    empty.mkdir()
    simulate_dataset(empty, "translocation", 1, 48)  # an existing empty folder is fine
    assert sorted(p.name for p in empty.iterdir()) == ["TNFa", "untreated"]

    with pytest.raises(ValueError, match="translocation, golgi, actin"):
        simulate_dataset(tmp_path / "x", "mitosis", 1)
    with pytest.raises(ValueError, match="n_per_class"):
        simulate_dataset(tmp_path / "x", "golgi", 0)
    with pytest.raises(ValueError, match="size"):
        simulate_dataset(tmp_path / "x", "golgi", 1, 31)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x_truth").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_simulate_dataset_leaves_nothing_when_interrupted(tmp_path):
    def crash(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(tmp_path / "sim", "golgi", 2, 48, progress=crash)
    assert list(tmp_path.iterdir()) == []
