"""The structure the code promises (docs/architecture.md): no import circles, kinds named only in their own modules,
the command line's choices and defaults equal to core/options.py's, and one line (exit 2) for a bad setting."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

import napari_phendiff
from napari_phendiff.cli import MODEL_FIELDS, main
from napari_phendiff.cli.commands import given_options
from napari_phendiff.cli.parser import build_parser
from napari_phendiff.core.models import KINDS
from napari_phendiff.core.options import FIELD_NAMES, TRAIN_CHOICES, TRAIN_DEFAULTS

SRC = Path(napari_phendiff.__file__).parent
_spec = importlib.util.spec_from_file_location(
    "import_graph", Path(__file__).parents[1] / "scripts" / "import_graph.py"
)
graph_tools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph_tools)
import_graph, cycles = graph_tools.import_graph, graph_tools.cycles


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    # the walker sees imports at module level and inside functions alike
    assert "napari_phendiff.core.options" in graph["napari_phendiff.cli.parser"]
    assert "napari_phendiff.core.checkpoint" in graph["napari_phendiff.core.models"]  # inside read_manifest
    assert graph["napari_phendiff.core.models.pixel"] >= {"napari_phendiff.core.checkpoint"}
    assert cycles(graph) == []


def test_layers_point_down():
    """The core imports neither the command line, the docks nor the writer; nothing outside the docks imports them
    (napari's manifest reaches the docks directly)."""
    graph = import_graph()
    up = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if (
            module.startswith("napari_phendiff.core")
            and not target.startswith("napari_phendiff.core")
            and target != "napari_phendiff"
        )  # the package itself: its version
        or (target.startswith("napari_phendiff.widgets") and not module.startswith("napari_phendiff.widgets"))
    ]
    assert up == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_kinds_are_named_only_in_the_registry_and_their_own_modules():
    names = "|".join(KINDS)
    switch = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)|in\s*\(\s*["']({names})["']""")
    allowed = {
        SRC / "core" / "models" / "__init__.py",
        *(SRC / "core" / "models" / f"{k.module}.py" for k in KINDS.values()),
    }
    offending = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if switch.search(line)
    ]
    assert offending == []


def test_library_code_leaves_matplotlib_global_state_alone():
    """Inside napari, `matplotlib.use("Agg")` or pyplot's figure list would change napari's own plotting; the core
    draws with matplotlib's object API (Figure) only."""
    global_state = re.compile(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot")
    offending = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in SRC.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if global_state.search(line)
    ]
    assert offending == []
    assert global_state.search('    matplotlib.use("Agg")') and global_state.search("import matplotlib.pyplot as plt")


def _actions(command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


@pytest.mark.parametrize("command", ["train", "generalization"])
def test_training_choices_and_defaults_are_core_options(command):
    actions = _actions(command)
    names = MODEL_FIELDS + (("checkpoint_every", "resume") if command == "train" else ())
    for name in names:
        assert actions[name].default == TRAIN_DEFAULTS[name], name
        assert tuple(actions[name].choices or ()) == tuple(TRAIN_CHOICES.get(name, ())), name
    assert tuple(actions["model"].choices) == tuple(KINDS)


@pytest.mark.parametrize("command", ["translate", "evaluate", "demo"])
def test_translation_flags_are_the_translate_options(command):
    actions = _actions(command)
    assert set(FIELD_NAMES) <= set(actions)
    assert all(actions[name].default is None for name in FIELD_NAMES if name != "tiles")


def test_a_new_translation_option_is_its_field_alone(monkeypatch, tmp_path):
    """A field with its Flag reaches the command line (flag, help, default), the resolution of options and the
    provenance of written files, with no other code (docs/architecture.md, "Adding things")."""
    from dataclasses import make_dataclass

    from napari_phendiff.core import options as o

    extended = make_dataclass(
        "TranslateOptions",
        [("dummy_level", int, o.option(3, o.Flag("a dummy level", int)))],
        bases=(o.TranslateOptions,),
        frozen=True,
    )
    monkeypatch.setattr(o, "TranslateOptions", extended)
    actions = _actions("translate")
    assert actions["dummy_level"].default is None and actions["dummy_level"].option_strings == ["--dummy-level"]
    assert "a dummy level (default 3)" in actions["dummy_level"].help
    args = build_parser().parse_args(
        [
            "translate",
            "demo",
            "x.tif",
            "--source",
            "untreated",
            "--target",
            "TNFa",
            "--out",
            str(tmp_path),
            "--dummy-level",
            "5",
        ]
    )
    given = given_options(args)
    assert given["dummy_level"] == 5
    resolved, sources = o.resolve_options(None, "untreated", "TNFa", given)
    assert resolved.dummy_level == 5 and sources["dummy_level"] == "given"
    assert resolved.record()["dummy_level"] == 5
    assert o.TranslateOptions.from_record(resolved.record()) == resolved
    assert o.resolve_options(None, "untreated", "TNFa", {})[0].dummy_level == 3


def test_a_new_model_kind_is_its_module_and_one_registry_line(monkeypatch, tmp_path, tiny_checkpoint, request):
    """A kind's module (here a direct mapping that negates the image) and its registry line reach the command
    line's --model choices, the training settings (its own learning rate), the Train dock's choices, loading, and
    the provenance of the files a translation writes (docs/architecture.md, "Adding things")."""
    import json
    import shutil
    import sys
    import types
    from dataclasses import dataclass, field

    import numpy as np
    import torch

    from napari_phendiff.core.batch import translate_files
    from napari_phendiff.core.checkpoint import MANIFEST, sign_checkpoint
    from napari_phendiff.core.images import read_provenance, write_image
    from napari_phendiff.core.models import Kind, load_checkpoint
    from napari_phendiff.core.models.base import ConditionedModel, DirectModel
    from napari_phendiff.core.options import TrainConfig

    @dataclass
    class Negated(DirectModel):
        net: torch.nn.Module = field(kw_only=True)
        kind = "dummy"

        def network(self) -> torch.nn.Module:
            return self.net

        def map(self, x, source, target):
            return x if source == target else -x

    module = types.ModuleType("napari_phendiff.core.models.dummy")
    module.REQUIRED_FILES = []
    module.load = lambda path, manifest, device: Negated(
        **ConditionedModel.described_by(manifest, path), net=torch.nn.Linear(1, 1)
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(KINDS, "dummy", Kind("dummy", "a dummy kind", generates=False, lr=3e-3))

    assert "dummy" in _actions("train")["model"].choices
    assert TrainConfig(data=tmp_path, out=tmp_path / "out", model="dummy").lr == 3e-3

    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "dummy")
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    (checkpoint / MANIFEST).write_text(json.dumps({**manifest, "kind": "dummy"}))
    sign_checkpoint(checkpoint)
    model = load_checkpoint(checkpoint, device="cpu")
    assert isinstance(model, Negated)
    image = write_image(tmp_path / "field.tif", np.full((2, 40, 40), 1000, np.uint16))
    written = translate_files(checkpoint, [image], "untreated", ["TNFa"], tmp_path / "translated", device="cpu")
    translated = next(p for p in written.written if p.name == "field_to_TNFa.tif")
    assert read_provenance(translated)["model"] == "dummy"

    pytest.importorskip("pytestqt")
    from napari_phendiff.widgets.train_dock import TrainDock

    dock = TrainDock(request.getfixturevalue("make_napari_viewer")())
    offered = [dock.model.itemData(i) for i in range(dock.model.count())]
    assert "dummy" in offered


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["train", "DATA", "--out", "OUT", "--steps", "0"], "steps must be at least 1"),
        (["train", "DATA", "--out", "OUT", "--batch-size", "0"], "batch_size must be at least 1"),
        (["train", "DATA", "--out", "OUT", "--lr", "nan"], "lr must be a finite number"),
        (["train", "DATA", "--out", "OUT", "--lr", "-1"], "lr (the learning rate) must be above 0"),
        (["train", "DATA", "--out", "OUT", "--mixed-precision", "bf16", "--device", "cpu"], "needs a CUDA GPU"),
        (["train", "DATA", "--out", "OUT", "--model", "latent", "--start-from", "demo"], "--base"),
        (["train", "DATA", "--out", "OUT", "--model", "cyclegan", "--start-from", "demo"], "cannot start from"),
        (["simulate", "OUT", "--size", "16"], "size must be a whole number of pixels >= 32"),
        (["generalization", "DATA", "--out", "OUT", "--n-per-class", "2", "--model", "cyclegan"], "cannot do"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(argv, phrase, sim_data, tmp_path, capsys):
    argv = [str(sim_data) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and phrase in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_core_prints_nothing():
    """The command line prints; the core returns (a print inside a napari dock goes to a terminal nobody reads)."""
    printing = re.compile(r"^\s*print\(")
    offending = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in (SRC / "core").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if printing.search(line)
    ]
    assert offending == []
    assert napari_phendiff.__version__ != "0+unknown"  # read from the installed package's metadata


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_code_passes_the_linter_and_the_formatter(check):
    """ruff (pyproject.toml [tool.ruff]) over the package, tests, benchmarks and scripts: unused names, undefined
    names and the like fail here, not in a user's run; and the code is laid out as `ruff format` lays it out."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *check, "--no-cache", "src", "tests", "benchmarks", "scripts"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rooms_are_short_enough_to_read_in_one_sitting():
    """No module in src/ over 400 lines and no function over 60 (its docstring included): a room does one job, and
    a function that grows past a screen is split into named steps (docs/architecture.md)."""
    import ast

    long_modules, long_functions = [], []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == [] and long_functions == []
