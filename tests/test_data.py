"""Reading images and labelled folders: layouts, and a clear error for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import random_image, write_tif
from napari_phendiff.core.dataset import TrainingSamples, load_folder, scan_folder
from napari_phendiff.core.errors import DataError
from napari_phendiff.core.images import Normalization, read_image, write_image


def make_folder(root, shapes_by_condition, dtype=np.uint16):
    for condition, shapes in shapes_by_condition.items():
        for i, shape in enumerate(shapes):
            write_tif(root / condition / f"img{i}.tif", random_image(shape, seed=i, dtype=dtype))
    return root


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [
        ((40, 50), {}, (1, 40, 50)),
        ((3, 40, 50), {"imagej": True, "metadata": {"axes": "CYX"}}, (3, 40, 50)),
        ((40, 50, 3), {"photometric": "rgb"}, (3, 40, 50)),
        ((5, 40, 50), {}, (5, 40, 50)),
        ((40, 50, 4), {"metadata": {"axes": "YXC"}}, (4, 40, 50)),
    ],
)
def test_read_tiff_layouts_give_cyx(tmp_path, shape, kwargs, expected):
    data = random_image(shape)
    image = read_image(write_tif(tmp_path / "a.tif", data, **kwargs))
    assert image.shape == expected and image.dtype == np.uint16
    assert image.sum() == data.sum()


def test_read_png_grey_saved_as_rgb_is_one_channel(tmp_path):
    import imageio.v3 as iio

    grey = random_image((30, 40), dtype=np.uint8, mean=100)
    iio.imwrite(tmp_path / "g.png", np.stack([grey] * 3, axis=-1))
    iio.imwrite(tmp_path / "c.png", np.stack([grey, grey // 2, grey // 3], axis=-1))
    assert read_image(tmp_path / "g.png").shape == (1, 30, 40)
    colour = read_image(tmp_path / "c.png")
    assert colour.shape == (3, 30, 40) and np.array_equal(colour[1], grey // 2)


def test_stack_is_refused_with_how_to_split(tmp_path):
    path = write_tif(tmp_path / "z.tif", random_image((12, 40, 40)), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match="stack.*Stack to Images"):
        read_image(path)
    hyper = write_tif(tmp_path / "zc.tif", random_image((4, 2, 40, 40)), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(DataError, match="zc.tif"):
        read_image(hyper)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff")
    good = write_tif(tmp_path / "good.tif", random_image((2, 64, 64)))
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(good.read_bytes()[:400])
    for path in (tmp_path / "junk.tif", truncated):
        with pytest.raises(DataError, match=f"{path.name}.*corrupt, truncated"):
            read_image(path)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd"])
def test_compressed_tiffs_are_read(tmp_path, compression):
    image = random_image((2, 64, 64))
    path = write_tif(tmp_path / f"{compression}.tif", image, compression=compression, photometric="minisblack")
    np.testing.assert_array_equal(read_image(path), image)


def test_nan_pixels_are_refused(tmp_path):
    data = np.ones((2, 32, 32), np.float32)
    data[1, 3, 4] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="2 NaN or infinite"):
        read_image(write_tif(tmp_path / "nan.tif", data))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="at least two condition subfolders.*found none"):
        scan_folder(tmp_path / "empty")
    single = make_folder(tmp_path / "single", {"untreated": [(2, 40, 40)]})
    with pytest.raises(DataError, match="found only 'untreated'"):
        scan_folder(single)
    hollow = make_folder(tmp_path / "hollow", {"a": [(2, 40, 40)]})
    (hollow / "b").mkdir()
    with pytest.raises(DataError, match="b contain no images"):
        scan_folder(hollow)


def test_hidden_folders_are_ignored(tmp_path):
    root = make_folder(tmp_path / "d", {"a": [(2, 40, 40)], "b": [(2, 40, 40)], ".thumbs": [(2, 40, 40)]})
    assert scan_folder(root).conditions == ["a", "b"]


def test_all_problems_reported_together_before_training(tmp_path):
    root = make_folder(tmp_path / "d", {"a": [(2, 64, 64), (2, 20, 64)], "b": [(2, 64, 64)]})
    (root / "b" / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError) as info:
        load_folder(root, min_size=32)
    message = str(info.value)
    assert "2 problem(s)" in message and "img1.tif" in message and "broken.tif" in message
    assert "--resize" in message


def test_mixed_channel_counts(tmp_path):
    root = make_folder(tmp_path / "d", {"a": [(2, 40, 40), (2, 40, 40)], "b": [(3, 40, 40)]})
    with pytest.raises(DataError, match="different channel counts.*2 channel.*3 channel"):
        load_folder(root)


def test_normalisation_round_trip_keeps_dtype_and_values():
    images = [random_image((3, 32, 32), seed=s) for s in range(3)]
    norm = Normalization.fit(images)
    scaled = norm.forward(images[0])
    assert scaled.dtype == np.float32 and -2 < scaled.mean() < 2
    assert np.array_equal(norm.inverse(scaled, np.uint16), images[0])
    stack = np.stack(images)
    assert np.array_equal(norm.inverse(norm.forward(stack), np.uint16), stack)
    assert Normalization.from_dict(norm.to_dict()) == norm
    floats = images[1].astype(np.float32) / 7
    assert np.allclose(norm.inverse(norm.forward(floats), np.float32), floats, rtol=1e-5)


def test_training_samples_are_deterministic_augmented_and_balanced(sim_data):
    data = load_folder(sim_data, min_size=32)
    samples = TrainingSamples(data, Normalization.fit(data.images), 32, seed=1)
    x, y = samples.batch(step=5, rank=0, batch_size=64)
    assert x.shape == (64, 2, 32, 32) and x.dtype.is_floating_point
    again, _ = samples.batch(step=5, rank=0, batch_size=64)
    other, _ = samples.batch(step=5, rank=1, batch_size=64)
    assert (x == again).all() and not (x == other).all()
    assert 16 < int(y.sum()) < 48  # both conditions drawn


def test_write_image_is_imagej_with_provenance(tmp_path):
    image = random_image((2, 40, 30))
    path = write_image(tmp_path / "out.tif", image, channel_names=["DNA", "reporter"], provenance={"source": "a"})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["channels"] == 2
        assert '"source": "a"' in tif.imagej_metadata["Info"]
        assert np.array_equal(tif.asarray(), image)
    assert not list(tmp_path.glob(".*partial"))


def test_channel_names_the_files_record_name_the_model(tmp_path, sim_data):
    from napari_phendiff.core.options import TrainConfig
    from napari_phendiff.core.training.resume import load_training_data

    assert load_folder(sim_data).recorded_channel_names() == ["DNA", "reporter"]
    config = TrainConfig(data=sim_data, out=tmp_path / "model", image_size=32, steps=1, device="cpu")
    assert load_training_data(config, resume_from=False)[2] == ["DNA", "reporter"]
    given = TrainConfig(
        data=sim_data, out=tmp_path / "m2", image_size=32, steps=1, device="cpu", channel_names=["Hoechst", "p65"]
    )
    assert load_training_data(given, resume_from=False)[2] == ["Hoechst", "p65"]  # what the user types wins
    for condition, labels in (("a", ["DNA", "reporter"]), ("b", ["reporter", "DNA"])):
        write_tif(
            tmp_path / "mixed" / condition / "x.tif",
            random_image((2, 32, 32)),
            imagej=True,
            metadata={"axes": "CYX", "Labels": labels},
        )
    with pytest.raises(
        DataError, match="record different channel names or orders .*a/x.tif: DNA, reporter.*b/x.tif: reporter, DNA"
    ):
        load_folder(tmp_path / "mixed").recorded_channel_names()
    write_tif(tmp_path / "bare" / "a" / "x.tif", random_image((2, 32, 32)))
    write_tif(tmp_path / "bare" / "b" / "x.tif", random_image((2, 32, 32)))
    assert load_folder(tmp_path / "bare").recorded_channel_names() is None
