"""Gathering pixels from image layers for the core and putting results back into each layer's own shape."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image  # noqa: E402

from napari_phendiff.core.errors import DataError  # noqa: E402
from napari_phendiff.core.export import layer_file_name  # noqa: E402
from napari_phendiff.widgets._layers import ImageInput, channel_layer_stem  # noqa: E402
from napari_phendiff.widgets._result_layers import difference_layer, result_name, translated_layer  # noqa: E402

from conftest import random_image  # noqa: E402

TWO = ["DNA", "reporter"]


def test_whole_stack_round_trip_with_channels_first():
    data = random_image((2, 5, 16, 16))  # channel, time, y, x
    layer = Image(data, axis_labels=("channel", "t", "y", "x"))
    inputs = ImageInput.from_layers([layer], TWO)
    pixels = inputs.pixels()
    assert pixels.shape == (5, 2, 16, 16)
    np.testing.assert_array_equal(pixels[3], data[:, 3])
    (back,) = inputs.split(pixels)
    np.testing.assert_array_equal(back, data)


def test_current_plane_keeps_the_channels():
    data = random_image((4, 2, 16, 16))
    inputs = ImageInput.from_layers([Image(data)], TWO, point=(2, 0, 0, 0))
    assert inputs.plane == (2,) and inputs.kept_axes == [1, 2, 3]
    np.testing.assert_array_equal(inputs.pixels(), data[2][None])
    assert inputs.split(inputs.pixels())[0].shape == (2, 16, 16)


def test_channel_layers_and_rgb():
    dna, reporter = random_image((3, 16, 16), seed=1), random_image((3, 16, 16), seed=2)
    inputs = ImageInput.from_layers([Image(dna, name="DNA"), Image(reporter, name="reporter")], TWO)
    assert inputs.pixels().shape == (3, 2, 16, 16)
    back = inputs.split(inputs.pixels())
    np.testing.assert_array_equal(back[1], reporter)

    rgb = random_image((16, 16, 3), dtype=np.uint8, mean=100)
    inputs = ImageInput.from_layers([Image(rgb, rgb=True)], ["R", "G", "B"])
    np.testing.assert_array_equal(inputs.pixels()[0], np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(inputs.split(inputs.pixels())[0], rgb)
    original = Image(rgb, rgb=True, name="rgb")
    assert Image(**translated_layer(original, rgb, inputs.kept_axes, "t", {})).rgb
    difference = Image(**difference_layer(original, rgb.astype(np.float32), inputs.kept_axes, "d", {}))
    assert difference.data.shape == (3, 16, 16) and difference.contrast_limits[0] == -difference.contrast_limits[1]


def test_layers_that_do_not_fit_the_checkpoint():
    with pytest.raises(DataError, match="no axis of 2 channels"):
        ImageInput.from_layers([Image(random_image((16, 16)), name="grey")], TWO)
    with pytest.raises(DataError, match="one shape"):
        ImageInput.from_layers([Image(random_image((16, 16))), Image(random_image((8, 8)))], TWO)
    with pytest.raises(DataError, match="3 layers are ticked"):
        ImageInput.from_layers([Image(random_image((16, 16)))] * 3, TWO)


def test_result_names_follow_the_name_rule():
    assert layer_file_name("field 3 (untreated) [1]") == "field_3_untreated_1"
    assert result_name("cells [1]", "TNFa high", "s0.3_w4", "diff") == "cells_1_to_TNFa_high_s0.3_w4_diff"
    # a channel layer's results are named after the channel it holds, not napari's number for it
    assert channel_layer_stem("field_crop [1]", "reporter") == "field_crop_reporter"
    assert channel_layer_stem("field_crop", "DNA") == "field_crop_DNA"
    assert channel_layer_stem("field [DNA]", "DNA") == "field_DNA"
    assert channel_layer_stem("dna", "DNA") == "DNA"
    assert channel_layer_stem("p65_GFP", "GFP") == "p65_GFP"
    layers = [Image(random_image((16, 16)), name=name) for name in ("reporter :: well 2", "DNA :: well 2")]
    assert ImageInput.from_layers(layers, TWO).result_stems(TWO) == ["well_2_DNA", "well_2_reporter"]
