"""Sample data: simulated cells in both conditions of the demo checkpoint, opened and translated in napari."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_phendiff.core.checkpoint import DEMO_CHECKPOINT  # noqa: E402
from napari_phendiff.core.models import read_manifest  # noqa: E402

from conftest import wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (DEMO_CHECKPOINT / "phendiff.json").is_file(), reason="the shipped demo checkpoint is not in this checkout"
)


@pytest.mark.slow
def test_sample_data_opens_and_translates_with_the_demo(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-phendiff", "simulated_cells")
    manifest = read_manifest("demo")
    size = manifest["metadata"]["simulator"]["size"]
    assert sorted(layer.name for layer in viewer.layers) == sorted(manifest["conditions"])
    for layer in viewer.layers:
        assert layer.data.shape == (4, len(manifest["channel_names"]), size, size) and layer.data.dtype == np.uint16
    untreated, treated = viewer.layers["untreated"].data, viewer.layers["TNFa"].data
    np.testing.assert_array_equal(untreated.shape, treated.shape)
    assert not np.array_equal(untreated[:, 1], treated[:, 1])  # the reporter channel tells the conditions apart

    _, dock = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    dock.set_channel_layers(["untreated"])
    assert (dock.source.currentText(), dock.target.currentText()) == ("untreated", "TNFa")  # from the layer name
    dock.steps.setValue(2)
    wait_for(qtbot, dock.translate())
    translated = viewer.layers["untreated_reporter_to_TNFa_s0.45_w3_keep_DNA"]
    # the current plane's result sits at its own index of a stack-shaped layer: aligned under the field slider
    # (the channel axis held with length 1, stretched over the channel slider's positions)
    assert translated.data.shape == untreated[:, 1:2].shape and translated.data.dtype == np.uint16
    plane = translated.metadata["phendiff"]["plane"][0]
    assert [bool(translated.data[i].any()) for i in range(4)] == [i == plane for i in range(4)]
    for channel in (0, 1):  # whatever the channel slider says, the field slider picks the field, the row its channel
        viewer.dims.set_current_step(1, channel)
        point = np.asarray(viewer.dims.point)
        assert tuple(np.round(translated.world_to_data(point)[:2])) == (plane, 0)
        assert tuple(np.round(viewer.layers["untreated"].world_to_data(point)[:2])) == (plane, channel)
    first = translated.data[plane].copy()
    other = (plane + 1) % 4
    viewer.dims.set_current_step(0, other)
    wait_for(qtbot, dock.translate())
    translated = viewer.layers["untreated_reporter_to_TNFa_s0.45_w3_keep_DNA"]  # filled plane by plane
    np.testing.assert_array_equal(translated.data[plane], first)
    assert [bool(translated.data[i].any()) for i in range(4)] == [i in (plane, other) for i in range(4)]
    np.testing.assert_allclose(
        viewer.layers["untreated_reporter_to_TNFa_s0.45_w3_keep_DNA_diff"].data[other],
        translated.data[other].astype(np.float32) - untreated[other, 1:2].astype(np.float32),
    )
    assert translated.metadata["phendiff"]["checkpoint"] == str(DEMO_CHECKPOINT)
