"""Tiles with no cell near them are copied, not translated (skip_background), and the rest is translated as without."""

from __future__ import annotations

import numpy as np
import pytest

import napari_phendiff as pd
from napari_phendiff.core.simulate import simulate_field
from napari_phendiff.core import tiling
from napari_phendiff.core.tiling import TILE_OVERLAP, Blender, blend_weights, mirror_indices, occupied, windows


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
        (inside if held else outside)[y : y + h, x : x + w] = True
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


@pytest.mark.slow
def test_skipped_tiles_are_copied_exactly_and_the_others_translate_as_without(model):
    assert pd.TranslateOptions().skip_background  # the default (docs/benchmarks.md laptop_field)
    image = sparse_field()
    # fp32: in bf16 the tiles' rounding also depends on which tiles share a network call (a few counts)
    kwargs = dict(steps=3, strength=0.5, tiles=True, precision="fp32")
    events = list(pd.iter_translate(model, image, "untreated", "TNFa", skip_background=True, **kwargs))
    skipped, copied = events[-1].result, events[-1].copied
    full = pd.translate(model, image, "untreated", "TNFa", skip_background=False, **kwargs)
    assert 0 < copied[0] < copied[1]
    every = list(pd.iter_translate(model, image, "untreated", "TNFa", skip_background=False, **kwargs))
    assert len(events) < len(every) and every[-1].copied[0] == 0

    tiles = windows((128, 128), model.image_size, tiles=True)
    held = occupied(image[None], tiles, int(model.image_size * TILE_OVERLAP), model.normalization.forward)[0]
    assert (~held).sum() == copied[0]
    background = covered_only_by(~held, tiles, (128, 128))
    translated = covered_only_by(held, tiles, (128, 128))
    assert background.any() and translated.any()
    assert np.array_equal(skipped[:, background], image[:, background])  # the original's pixels
    assert not np.array_equal(full[:, background], image[:, background])  # which a translation would change
    np.testing.assert_allclose(skipped[:, translated].astype(float), full[:, translated].astype(float), atol=1)


@pytest.mark.slow
def test_the_estimate_counts_the_runs_own_tiles_and_calls_before_any_translation(model, tmp_path, capsys):
    from napari_phendiff.cli import main as cli
    from napari_phendiff.core.estimate import estimate_translation

    image = sparse_field()
    for kwargs in (
        dict(steps=4, strength=0.5, tiles=True),
        dict(steps=4, strength=0.5, tiles=True, guidance=1.0),
        dict(steps=4, strength=0.5, tiles=True, skip_background=False),
    ):
        estimate = estimate_translation(model, image, "untreated", ["TNFa", "untreated"], **kwargs)
        events = list(pd.iter_translate(model, image, "untreated", ["TNFa", "untreated"], **kwargs))
        copied, every = events[-1].copied
        assert (estimate.copied, estimate.tiles + estimate.copied) == (copied, every)
        assert estimate.calls == events[-1].total and estimate.seconds > 0  # network calls of the run
    file = tmp_path / "untreated_field.tif"
    pd.write_image(file, image)
    assert cli(
        [
            "translate",
            str(model.path),
            str(file),
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "4",
            "--estimate",
        ]
    ) in (0, None)
    said = capsys.readouterr().out
    assert "on this computer for 1 file(s) x 1 target(s)" in said and "nothing translated" in said
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_folders_estimate_times_the_first_file_and_scales_the_others(model, tmp_path):
    from napari_phendiff.core.batch import estimate_files
    from napari_phendiff.core.estimate import estimate_translation

    (tmp_path / "in").mkdir()
    for name, size in (("a", 128), ("b", 96)):
        pd.write_image(tmp_path / "in" / f"{name}.tif", sparse_field(size), channel_names=["DNA", "reporter"])
    total, files = estimate_files(
        model.path, [tmp_path / "in"], "untreated", ["TNFa"], tmp_path / "out", model=model, steps=4, tiles=True
    )
    first = estimate_translation(model, sparse_field(128), "untreated", "TNFa", steps=4, tiles=True)
    second = estimate_translation(
        model, sparse_field(96), "untreated", "TNFa", steps=4, tiles=True, seconds_per_pixel=1.0
    )
    assert files == 2 and second.seconds == second.pixels  # scaled, not timed
    assert (total.tiles, total.copied, total.calls) == (
        first.tiles + second.tiles,
        first.copied + second.copied,
        first.calls + second.calls,
    )
    assert total.seconds > 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("length,target", [(10, 16), (7, 7), (5, 32), (1, 8), (40, 64)])
def test_tiles_read_their_padding_as_np_pad_mirrors(length, target):
    axis = np.arange(length)
    for reflect, mode in ((True, "reflect"), (False, "symmetric")):
        if reflect and length == 1:
            continue
        expected = np.pad(axis, (0, target - length), mode=mode)
        assert np.array_equal(axis[mirror_indices(length, target, reflect)], expected)


def test_blending_row_by_row_equals_blending_on_a_whole_canvas():
    rng = np.random.default_rng(0)
    size, padded = 16, (40, 52)
    cuts = windows(padded, size, tiles=True)
    tiles = [rng.normal(size=(2, size, size)).astype(np.float32) for _ in cuts]
    ramp = blend_weights(size, size, True)
    canvas, weight = np.zeros((2, *padded), np.float32), np.zeros(padded, np.float32)
    for (y, x, h, w), tile in zip(cuts, tiles):
        canvas[:, y : y + h, x : x + w] += tile * ramp
        weight[y : y + h, x : x + w] += ramp
    handed = []
    blender = Blender(2, padded, size, ramp, lambda n, top, rows: handed.append((n, top, rows.copy())))
    for field in range(2):
        for window, tile in zip(cuts, tiles):
            blender.add(field, window, tile)
    blender.close()
    for field in range(2):
        rows = [(top, part) for n, top, part in handed if n == field]
        assert [top for top, _ in rows] == sorted({0, *(y for y, *_ in cuts)})  # rows handed as soon as final
        np.testing.assert_allclose(np.concatenate([part for _, part in rows], axis=1), canvas / weight, rtol=1e-6)
    blender = Blender(2, padded, size, ramp, lambda n, top, rows: None)
    for window, tile in zip(cuts, tiles):
        blender.add(0, window, tile)
    with pytest.raises(ValueError, match="reading order"):
        blender.add(0, cuts[0], tiles[0])


def test_the_foreground_read_band_by_band_is_the_whole_fields(monkeypatch):
    field = sparse_field(size=200).astype(np.float32)[None]
    cuts = windows((208, 208), 32, tiles=True)
    whole = occupied(field, cuts, margin=8)
    monkeypatch.setattr(tiling, "BAND_PIXELS", 7 * 128)
    assert np.array_equal(occupied(field, cuts, margin=8), whole)
    assert 0 < whole.sum() < whole.size


def test_a_large_field_is_translated_in_bounded_memory(model, monkeypatch):
    """The normalised field, its padding and the blending canvas are never made whole: beyond the input and the
    result, memory holds bands of rows (the foreground, the blending) and one batch of tiles."""
    import tracemalloc

    monkeypatch.setattr(tiling, "BAND_PIXELS", 64 * 2030)
    height, width = 1000, 2030  # not multiples of the tiles: padding read by mirroring
    image = np.full((2, height, width), 0, np.uint16)
    image[:] = np.percentile(sparse_field(), 5, axis=(1, 2)).astype(np.uint16)[:, None, None]
    image[:, :128, :128] = sparse_field()
    tracemalloc.start()
    result = pd.translate(model, image, "untreated", "TNFa", steps=2, strength=0.5, tiles=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.shape == image.shape and result.dtype == image.dtype
    assert np.array_equal(result[:, 400:, 400:], image[:, 400:, 400:])  # background: the original's pixels
    assert not np.array_equal(result[:, :100, :100], image[:, :100, :100])
    # the result itself is image.nbytes; a float32 copy of the field would add 2 x image.nbytes (translating on a
    # padded float canvas peaked at 8.5 x image.nbytes here; band by band it is 1.65 x)
    assert peak < 2 * image.nbytes, f"peak {peak / 2**20:.1f} MiB for a {image.nbytes / 2**20:.1f} MiB field"


@pytest.mark.slow
def test_cells_covering_a_tiny_share_of_a_huge_field_are_still_found():
    """Two patches of cells in a 4000-px field of camera noise (0.02% of its pixels): the threshold separates them
    from the noise instead of splitting the noise (which would translate every tile)."""
    cells = sparse_field()[:, 4:48, 4:48]
    background = np.percentile(cells, 5, axis=(1, 2))[:, None, None]
    field = np.random.default_rng(0).poisson(background, (2, 4000, 4000)).astype(np.uint16)
    field[:, 100:144, 100:144] = cells
    field[:, 3000:3044, 2000:2044] = cells
    tiles = windows(field.shape[-2:], 64, tiles=True)
    held = occupied(field[None], tiles, margin=16)[0]
    near = [
        i
        for i, (y, x, h, w) in enumerate(tiles)
        if (y < 144 and x < 144 and y + h > 100 and x + w > 100)
        or (y < 3044 and x < 2044 and y + h > 3000 and x + w > 2000)
    ]
    assert held[near].all() and held.sum() <= 3 * len(near)
