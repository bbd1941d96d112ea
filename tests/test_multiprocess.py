"""Several processes on one machine (CPU, gloo backend), launched the way a cluster job launches them: torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each launches two processes


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "napari_phendiff.cli",
        *args,
        "--device",
        "cpu",
    ]
    # Its own process group, killed whole if the test is interrupted (Ctrl-C) or times out: killing torchrun alone
    # would leave its worker processes running.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_two_processes_share_a_folder_and_a_rerun_skips_finished_outputs(tiny_checkpoint, sim_data, tmp_path):
    out = tmp_path / "translated"
    args = (
        "translate",
        str(tiny_checkpoint),
        str(sim_data),
        "--source",
        "untreated",
        "--target",
        "TNFa",
        "--out",
        str(out),
        "--steps",
        "2",
    )
    torchrun(*args)
    inputs = sorted(sim_data.rglob("*.tif"))
    expected = {out / p.parent.name / f"{p.stem}_to_TNFa.tif" for p in inputs}
    assert {p for p in out.rglob("*.tif")} == expected  # each input once, folder layout kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["written"] == len(inputs) == summary["inputs"]
    assert [p["written"] for p in summary["per_process"]] == [len(inputs) // 2, len(inputs) - len(inputs) // 2]
    assert not list(out.glob(".shard-*"))
    before = {p: p.stat().st_mtime_ns for p in expected}

    torchrun(*args)  # a second run finds everything done
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 0 and summary["skipped_inputs"] == len(inputs)
    assert {p: p.stat().st_mtime_ns for p in expected} == before


def test_two_processes_train_one_checkpoint(sim_data, tmp_path):
    out = tmp_path / "model"
    done = torchrun(
        "train",
        str(sim_data),
        "--out",
        str(out),
        "--image-size",
        "32",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
    )
    assert "2 process(es)" in done.stdout and "global batch 4" in done.stdout
    manifest = json.loads((out / "phendiff.json").read_text())
    assert manifest["trained_steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no stray temporary folders
