"""The direction and the channels of a translation are never guessed: a source comes from a name or from the user,
channels are matched to the checkpoint's by name, and what cannot be matched is refused with what was expected."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from conftest import random_image, wait_for, write_tif

from napari_phendiff.cli import main
from napari_phendiff.core.files import inputs_named_otherwise, named_condition
from napari_phendiff.core.simulate import PHENOTYPES, simulate_field

CONDITIONS = ["TNFa", "untreated"]


# the docks' list of recent checkpoints is kept out of the user's own (conftest.py)
pytestmark = pytest.mark.usefixtures("isolated_recent_checkpoints")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def dock(viewer, tiny_checkpoint):
    """The Translate dock on the tiny checkpoint, source and target left as it sets them."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    widget.select_checkpoint(tiny_checkpoint)
    widget.steps.setValue(2)
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    return widget


def run(qtbot, worker):
    wait_for(qtbot, worker, 120_000)


# --- direction -------------------------------------------------------------------------------------------------------
def test_names_that_give_a_condition_are_whole_names_only(tmp_path):
    assert named_condition(tmp_path / "untreated" / "field7.tif", CONDITIONS) == ("untreated", "folder")
    assert named_condition(tmp_path / "plate" / "tnfa.TIF", CONDITIONS) == ("TNFa", "name")
    assert named_condition(tmp_path / "TNFa", CONDITIONS) == ("TNFa", "name")
    assert named_condition(tmp_path / "plate" / "TNFa_0003.tif", CONDITIONS) is None  # TNFa? TNFa_high? not guessed
    assert named_condition(tmp_path / "untreated" / "plate1" / "a.tif", CONDITIONS) is None  # the parent only


def test_the_source_starts_unset_and_a_folder_named_after_a_condition_sets_it(qtbot, dock, tmp_path):
    assert (dock.source.currentText(), dock.target.currentText()) == ("", "")
    assert dock.source.placeholderText() == "choose…" and "Choose the source" in dock.direction_info.text()
    write_tif(tmp_path / "untreated" / "field_0.tif", random_image((2, 48, 48), seed=1))

    worker = dock.translate_folder(tmp_path / "untreated", tmp_path / "out")
    assert (dock.source.currentText(), dock.target.currentText()) == ("untreated", "TNFa")
    assert "from the name of the folder untreated" in dock.direction_info.text()
    run(qtbot, worker)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["source"] == "untreated" and summary["targets"] == ["TNFa"]
    assert (tmp_path / "out" / "field_0_to_TNFa.tif").is_file()


def test_a_folder_named_otherwise_is_refused_until_the_source_is_chosen(qtbot, viewer, dock, tmp_path):
    write_tif(tmp_path / "plate" / "well_0.tif", random_image((2, 48, 48), seed=2))
    assert dock.translate_folder(tmp_path / "plate", tmp_path / "out") is None
    assert "Choose the source condition of the images in plate" in dock.status.text()
    assert "Choose the source condition" in dock.direction_info.text() and not (tmp_path / "out").exists()

    viewer.add_image(random_image((2, 48, 48)), name="untreated")  # ticked: its name sets the source...
    assert dock.source.currentText() == "untreated" and "name of layer 'untreated'" in dock.direction_info.text()
    assert dock.translate_folder(tmp_path / "plate", tmp_path / "out") is None  # ...for the layer, not the folder
    assert "not from the folder plate" in dock.direction_info.text()
    viewer.add_image(random_image((2, 48, 48)), name="cells")
    dock.set_channel_layers(["cells"])  # a layer that names nothing: the source set from a name is taken back
    assert dock.source.currentText() == "" and dock.translate() is None
    assert "Choose the source condition" in dock.status.text()

    dock.source.setCurrentText("TNFa")  # the user's choice
    dock.target.setCurrentText("untreated")
    worker = dock.translate_folder(tmp_path / "plate", tmp_path / "out")
    assert worker is not None
    run(qtbot, worker)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["source"] == "TNFa"
    assert (tmp_path / "out" / "well_0_to_untreated.tif").is_file()


def test_the_command_line_warns_when_a_folder_names_another_condition(tiny_checkpoint, tmp_path, capsys):
    image = write_tif(tmp_path / "cells" / "TNFa" / "x.tif", random_image((2, 48, 48), seed=3))
    write_tif(tmp_path / "cells" / "untreated" / "y.tif", random_image((2, 48, 48), seed=4))
    found = inputs_named_otherwise([tmp_path / "cells"], "untreated", CONDITIONS)
    assert found == [(tmp_path / "cells" / "TNFa", "TNFa", "name")]  # the untreated folder is fine

    assert (
        main(
            [
                "translate",
                str(tiny_checkpoint),
                str(image),
                "--source",
                "untreated",
                "--target",
                "TNFa",
                "--out",
                str(tmp_path / "out"),
                "--steps",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert (f"warning: {image} sits in a folder named 'TNFa' but is translated as --source untreated") in err
    assert (tmp_path / "out" / "x_to_TNFa.tif").is_file()  # warned, and carried on


# --- channels --------------------------------------------------------------------------------------------------------
def test_channel_layers_ticked_in_reverse_are_put_in_the_checkpoints_order(qtbot, viewer, dock):
    image = random_image((2, 48, 48), seed=5)
    dna, reporter = viewer.add_image(image, channel_axis=0, name=["field [DNA]", "field [reporter]"])
    dock.source.setCurrentText("untreated")
    dock.set_channel_layers(["field [reporter]", "field [DNA]"])  # the reporter ticked above the DNA
    dock.keep_checks["DNA"].setChecked(True)
    run(qtbot, dock.translate())

    translated = {
        layer.metadata["phendiff"]["original"]: layer
        for layer in viewer.layers
        if layer.metadata.get("phendiff", {}).get("kind") == "translated"
    }
    np.testing.assert_array_equal(translated[dna.name].data, dna.data)  # DNA kept as DNA, whatever the tick order
    assert not np.array_equal(translated[reporter.name].data, reporter.data)  # the reporter is the one translated
    assert translated[dna.name].metadata["phendiff"]["channels"] == ["DNA"]
    assert translated[reporter.name].metadata["phendiff"]["channels"] == ["reporter"]
    assert "DNA = 'field [DNA]', reporter = 'field [reporter]'" in dock.status.text()


def test_a_file_whose_labels_are_in_another_order_is_reordered(qtbot, viewer, dock, tmp_path):
    image = random_image((2, 48, 48), seed=6)  # reporter first, DNA second, as the file says
    path = write_tif(
        tmp_path / "untreated" / "field.tif",
        image,
        imagej=True,
        metadata={"axes": "CYX", "Labels": ["reporter", "DNA"]},
    )
    (layer,) = viewer.open(path)
    dock.set_channel_layers([layer.name])
    assert dock.source.currentText() == "untreated"  # from the file's folder
    dock.keep_checks["DNA"].setChecked(True)
    run(qtbot, dock.translate())

    translated = viewer.layers["field_DNA_to_TNFa_s0.3_w4_keep_DNA"]
    np.testing.assert_array_equal(translated.data, image[1])  # the file's DNA
    assert translated.metadata["phendiff"]["channels"] == ["DNA"]
    stem, members = dock.results[0]  # saved as one file, its channels in the file's order
    assert stem == "field_to_TNFa_s0.3_w4_keep_DNA" and [channel for _, channel in members] == ["reporter", "DNA"]


@pytest.mark.parametrize("labels, dna", [(["reporter", "DNA"], 1), (None, 0)])
def test_channels_of_a_file_split_into_layers_follow_the_file(qtbot, viewer, dock, tmp_path, labels, dna):
    """napari's split of a file ('field', 'field [1]'): by the channel names the file records, else in its order."""
    image = random_image((2, 48, 48), seed=8)
    metadata = {"imagej": True, "metadata": {"axes": "CYX", "Labels": labels}} if labels else {}
    layers = viewer.open(write_tif(tmp_path / "untreated" / "field.tif", image, **metadata), channel_axis=0)
    dock.set_channel_layers([layer.name for layer in reversed(layers)])  # ticked against the file's order
    dock.keep_checks["DNA"].setChecked(True)
    run(qtbot, dock.translate())

    kept = next(
        layer
        for layer in viewer.layers
        if layer.metadata.get("phendiff", {}).get("kind") == "translated"
        and layer.metadata["phendiff"]["channels"] == ["DNA"]
    )
    np.testing.assert_array_equal(kept.data, image[dna])  # the file's DNA is kept as DNA
    assert kept.metadata["phendiff"]["original"] == layers[dna].name
    assert f"DNA = '{layers[dna].name}'" in dock.status.text()


@pytest.mark.parametrize("labels", [None, ["Hoechst", "GFP"]])
def test_channel_layers_whose_names_do_not_match_are_refused(viewer, dock, tmp_path, labels):
    image = random_image((2, 48, 48), seed=7)
    if labels is None:
        layers = viewer.add_image(image, channel_axis=0, name=["a", "b"])
    else:  # the file names its channels otherwise than the checkpoint
        path = write_tif(tmp_path / "field.tif", image, imagej=True, metadata={"axes": "CYX", "Labels": labels})
        layers = viewer.open(path, channel_axis=0)
    dock.source.setCurrentText("untreated")
    dock.set_channel_layers([layer.name for layer in layers])
    before = len(viewer.layers)
    assert dock.translate() is None and len(viewer.layers) == before
    ticked = ", ".join(f"'{layer.name}'" for layer in layers)
    assert f"The checkpoint takes DNA, reporter in this order; the ticked layers are {ticked}" in dock.status.text()
    assert "Name each layer after its channel" in dock.status.text() and dock.translate_button.isEnabled()
    if labels:
        assert f"'{layers[0].name}' (Hoechst)" in dock.status.text()


def test_part_of_a_larger_images_channels_is_refused(viewer, dock, tmp_path):
    golgi = PHENOTYPES["golgi"]
    field = simulate_field("golgi", "untreated", 48, seed=0, cell_diameter=20.0).image  # DNA, Golgi, tubulin
    path = write_tif(
        tmp_path / "untreated" / "golgi.tif",
        field,
        imagej=True,
        metadata={"axes": "CYX", "Labels": list(golgi.channels)},
    )
    layers = viewer.open(path, channel_axis=0)
    assert len(layers) == 3
    dock.set_channel_layers([layers[0].name, layers[1].name])  # 2 of the 3 channels, for a 2-channel model
    assert dock.translate() is None
    assert (
        f"'{layers[0].name}', '{layers[1].name}' are 2 of the 3 channels of golgi.tif" in dock.status.text()
        and "the checkpoint needs 2 channel(s): DNA, reporter" in dock.status.text()
    )

    (whole,) = viewer.open(path)  # the file as one layer: its labels say what it holds
    dock.set_channel_layers([whole.name])
    assert dock.translate() is None
    assert (
        "holds the channels DNA, Golgi, tubulin but the checkpoint needs 2 channel(s): DNA, reporter"
        in dock.status.text()
    )


def test_condition_names_match_whichever_unicode_form_they_were_written_in(sim_data, tiny_checkpoint, tmp_path):
    import shutil
    import unicodedata

    from napari_phendiff.core.dataset import scan_folder
    from napari_phendiff.core.models import load_checkpoint

    decomposed = unicodedata.normalize("NFD", "traité")  # as a macOS disk names a folder
    shutil.copytree(sim_data / "untreated", tmp_path / "data" / "contrôle")
    shutil.copytree(sim_data / "TNFa", tmp_path / "data" / decomposed)
    assert scan_folder(tmp_path / "data").conditions == ["contrôle", "traité"]  # composed, as typed
    model = load_checkpoint(tiny_checkpoint, device="cpu")
    model.conditions = ["untreated", decomposed]  # a checkpoint trained before names were composed
    assert model.condition_index("traité") == model.condition_index(decomposed) == 1
