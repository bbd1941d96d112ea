"""Tiles with no cell near them are copied, not translated (skip_background), and the rest is translated as without."""

from __future__ import annotations

import numpy as np
import pytest

import napari_phendiff as pd
from napari_phendiff.core.simulate import simulate_field
from napari_phendiff.core.tiling import TILE_OVERLAP, occupied, pad_to, windows


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return pd.load_checkpoint(tiny_checkpoint, device="cpu")


def sparse_field(size=128, seed=0) -> np.ndarray:
    """A field of camera background with a patch of simulated cells in its top-left corner."""
    cells = simulate_field("translocation", "untreated", 44, seed=seed, cell_diameter=20.0).image
    rng = np.random.default_rng(seed)
    background = np.percentile(cells, 5, axis=(1, 2))[:, None, None]
    field = (background + rng.normal(0, 5, (cells.shape[0], size, size))).clip(0, 65535).astype(cells.dtype)
    field[:, 4:48, 4:48] = cells
    return field


def covered_only_by(mask: np.ndarray, tiles: list, shape: tuple[int, int]) -> np.ndarray:
    """The pixels that only the tiles where `mask` is True cover."""
    inside, outside = np.zeros(shape, bool), np.zeros(shape, bool)
    for held, (y, x, h, w) in zip(mask, tiles):
        (inside if held else outside)[y:y + h, x:x + w] = True
    return inside & ~outside


def test_only_tiles_near_cells_are_occupied():
    field = sparse_field().astype(np.float32)[None]
    tiles = windows(field.shape[-2:], 32, tiles=True)
    held = occupied(field, tiles, margin=8)[0]
    assert held[0] and not held[-1]  # the corner with the cells, the far corner
    assert 0 < held.sum() < len(tiles) / 2
    flat = np.full((1, 2, 64, 64), 100.0, np.float32)  # nothing to translate
    assert not occupied(flat, windows((64, 64), 32, True), 8).any()
    noise = np.random.default_rng(1).normal(100, 5, (1, 2, 64, 64)).astype(np.float32)  # no background to tell
    assert occupied(noise, windows((64, 64), 32, True), 8).all()


def test_skipped_tiles_are_copied_exactly_and_the_others_translate_as_without(model):
    assert pd.TranslateOptions().skip_background  # the default (docs/benchmarks.md laptop_field)
    image = sparse_field()
    kwargs = dict(steps=3, strength=0.5, tiles=True)
    events = list(pd.iter_translate(model, image, "untreated", "TNFa", skip_background=True, **kwargs))
    skipped, copied = events[-1].result, events[-1].copied
    full = pd.translate(model, image, "untreated", "TNFa", skip_background=False, **kwargs)
    assert 0 < copied[0] < copied[1]
    every = list(pd.iter_translate(model, image, "untreated", "TNFa", skip_background=False, **kwargs))
    assert len(events) < len(every) and every[-1].copied[0] == 0

    padded, _ = pad_to(model.normalization.forward(image[None]), model.image_size, model.size_multiple)
    tiles = windows(padded.shape[-2:], model.image_size, tiles=True)
    held = occupied(padded, tiles, margin=int(model.image_size * TILE_OVERLAP))[0]
    assert (~held).sum() == copied[0]
    background = covered_only_by(~held, tiles, padded.shape[-2:])[:128, :128]
    translated = covered_only_by(held, tiles, padded.shape[-2:])[:128, :128]
    assert background.any() and translated.any()
    assert np.array_equal(skipped[:, background], image[:, background])  # the original's pixels
    assert not np.array_equal(full[:, background], image[:, background])  # which a translation would change
    np.testing.assert_allclose(skipped[:, translated].astype(float), full[:, translated].astype(float), atol=1)


def test_the_estimate_counts_the_runs_own_tiles_and_calls_before_any_translation(model, tmp_path, capsys):
    from napari_phendiff.cli import main as cli
    from napari_phendiff.core.translate import estimate_translation

    image = sparse_field()
    for kwargs in (dict(steps=4, strength=0.5, tiles=True), dict(steps=4, strength=0.5, tiles=True, guidance=1.0),
                   dict(steps=4, strength=0.5, tiles=True, skip_background=False)):
        estimate = estimate_translation(model, image, "untreated", ["TNFa", "untreated"], **kwargs)
        events = list(pd.iter_translate(model, image, "untreated", ["TNFa", "untreated"], **kwargs))
        copied, every = events[-1].copied
        assert (estimate.copied, estimate.tiles + estimate.copied) == (copied, every)
        assert estimate.calls == events[-1].total and estimate.seconds > 0  # network calls of the run
    file = tmp_path / "untreated_field.tif"
    pd.write_image(file, image)
    assert cli(["translate", str(model.path), str(file), "--source", "untreated", "--target", "TNFa",
                "--out", str(tmp_path / "out"), "--steps", "4", "--estimate"]) in (0, None)
    said = capsys.readouterr().out
    assert "on this computer for 1 file(s) x 1 target(s)" in said and "nothing translated" in said
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_folders_estimate_times_the_first_file_and_scales_the_others(model, tmp_path):
    from napari_phendiff.core.batch import estimate_files
    from napari_phendiff.core.translate import estimate_translation

    (tmp_path / "in").mkdir()
    for name, size in (("a", 128), ("b", 96)):
        pd.write_image(tmp_path / "in" / f"{name}.tif", sparse_field(size), channel_names=["DNA", "reporter"])
    total, files = estimate_files(model.path, [tmp_path / "in"], "untreated", ["TNFa"], tmp_path / "out",
                                  model=model, steps=4, tiles=True)
    first = estimate_translation(model, sparse_field(128), "untreated", "TNFa", steps=4, tiles=True)
    second = estimate_translation(model, sparse_field(96), "untreated", "TNFa", steps=4, tiles=True,
                                  seconds_per_pixel=1.0)
    assert files == 2 and second.seconds == second.pixels  # scaled, not timed
    assert (total.tiles, total.copied, total.calls) == (first.tiles + second.tiles, first.copied + second.copied,
                                                          first.calls + second.calls)
    assert total.seconds > 0 and not (tmp_path / "out").exists()
