"""The TIFF writer: dtype kept, ImageJ channels, provenance embedded, read back unchanged by tifffile and napari."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from napari_phendiff.core.errors import PhenDiffError  # noqa: E402
from napari_phendiff.writer import write_image_layers  # noqa: E402

from conftest import random_image  # noqa: E402

PROVENANCE = {"checkpoint": "/models/demo", "source": "untreated", "target": "TNFa", "steps": 50, "seed": 0}


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def save(viewer, path, **kwargs):
    written = viewer.layers.save(str(path), plugin="napari-phendiff", **kwargs)
    assert written == [str(path)]
    return tifffile.TiffFile(path)


def info(tif) -> dict:
    return json.loads(tif.imagej_metadata["Info"])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_one_multichannel_layer_round_trip(tmp_path, viewer, dtype):
    image = random_image((2, 40, 30), dtype=dtype, mean=100)
    viewer.add_image(
        image,
        name="cells → TNFa",
        axis_labels=("channel", "y", "x"),
        metadata={"phendiff": {**PROVENANCE, "channels": ["DNA", "reporter"]}},
    )
    with save(viewer, tmp_path / "out.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), image)
        assert tif.asarray().dtype == dtype
        assert tif.imagej_metadata["channels"] == 2 and tif.series[0].axes == "CYX"
        assert tif.imagej_metadata["Labels"] == ["DNA", "reporter"]
        assert info(tif)["layers"][0]["target"] == "TNFa"
    (reread,) = viewer.open(str(tmp_path / "out.tif"), plugin="napari")
    np.testing.assert_array_equal(reread.data, image)


def test_channel_layers_become_one_file(tmp_path, viewer):
    stack = random_image((3, 2, 32, 32), seed=4)
    viewer.add_image(stack, channel_axis=1, name=["DNA", "reporter"])
    with save(viewer, tmp_path / "both.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), stack)
        assert tif.series[0].axes == "TCYX" and tif.imagej_metadata["channels"] == 2
        assert [layer["name"] for layer in info(tif)["layers"]] == ["DNA", "reporter"]


def test_other_dtypes_are_kept(tmp_path, viewer):
    difference = np.random.default_rng(0).normal(size=(24, 24))  # float64: not an ImageJ type, kept anyway
    viewer.add_image(difference, name="Δ")
    with save(viewer, tmp_path / "difference.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), difference)


def test_one_layer_through_the_several_layers_writer_keeps_its_channels(tmp_path):
    image = random_image((2, 16, 16))
    write_image_layers(str(tmp_path / "one.tif"), [(image, {"name": "cells"}, "image")])
    with tifffile.TiffFile(tmp_path / "one.tif") as tif:
        assert tif.series[0].axes == "CYX"
        np.testing.assert_array_equal(tif.asarray(), image)


def test_layers_that_cannot_be_channels_of_one_file():
    layers = [
        (np.zeros((8, 8), np.uint16), {"name": "a"}, "image"),
        (np.zeros((9, 9), np.uint16), {"name": "b"}, "image"),
    ]
    with pytest.raises(PhenDiffError, match="Save them one at a time"):
        write_image_layers("never.tif", layers)
