"""What napari's window costs the CPU while a dock's run goes on: the process's CPU time by thread, over the same
wall time, with the viewer idle, with a worker that only sleeps but shows napari's activity progress bar (as the
docks' workers do: `thread_worker(progress=...)`) and with the same worker without that bar. Linux (reads /proc).

    xvfb-run -a -s "-screen 0 1680x1050x24" python benchmarks/napari_activity.py [--seconds 15] [--no-write]

On a virtual display, OpenGL is Mesa's software renderer, whose threads (llvmpipe-N) run inside this process: what
they use is CPU the network's threads do not get. With a graphics card that drawing is the GPU's.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import napari
from napari.qt.threading import thread_worker
from qtpy.QtCore import QEventLoop, QTimer

from report import table, write_section


def cpu_by_thread() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads so far, summed by thread name (llvmpipe-0, -1: one)."""
    used: dict[str, float] = {}
    tasks = Path(f"/proc/{os.getpid()}/task")
    for task in tasks.iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that ended meanwhile
            continue
        group = "software OpenGL (llvmpipe)" if name.startswith("llvmpipe") else "Python and torch threads"
        used[group] = used.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def wait(seconds: float) -> None:
    """Qt's event loop for `seconds`, idle as napari's own loop waits."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def measured(seconds: float, start=None) -> dict[str, float]:
    """CPU seconds by thread group over `seconds` of wall time, after `start()` (a worker started) if given."""
    before = cpu_by_thread()
    if start is not None:
        start()
    wait(seconds)
    after = cpu_by_thread()
    return {k: after[k] - before.get(k, 0.0) for k in after}


def run(seconds: float) -> list[tuple[str, dict[str, float]]]:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1680, 1050)
    viewer.open_sample("napari-phendiff", "simulated_cells")
    viewer.window.add_plugin_dock_widget("napari-phendiff", "Translate")
    wait(3)  # the window drawn once

    def sleeping(**progress):
        @thread_worker(**progress)
        def sleeper():
            time.sleep(seconds + 1)
            yield None

        return sleeper().start

    results = [
        ("the viewer idle", measured(seconds)),
        ("a worker running, napari's activity progress bar shown", measured(seconds, sleeping(progress={"desc": "a"}))),
    ]
    wait(2)
    results.append(("a worker running, no progress bar", measured(seconds, sleeping())))
    wait(2)
    viewer.close()
    return results


def markdown(results: list[tuple[str, dict[str, float]]], seconds: float) -> str:
    groups = sorted({g for _, used in results for g in used})
    drawn = "OpenGL in software" if any(g.startswith("software") for g in groups) else "OpenGL on a graphics card"
    rows = [[what, *(f"{used.get(g, 0.0):.1f}" for g in groups)] for what, used in results]
    return "\n".join(
        [
            "## What napari's window costs the CPU during a run (`benchmarks/napari_activity.py`)",
            "",
            f"CPU seconds used by the napari process over {seconds:g} s of wall time, by its threads, the Translate "
            f"dock open on the sample fields; {os.cpu_count()} cores, {platform.machine()}, "
            f"DISPLAY {os.environ.get('DISPLAY', 'none')} ({drawn}):",
            "",
            table(["while", *groups], rows),
            "",
            "A dock's run shows napari's activity progress bar; where OpenGL is drawn in software its drawing takes "
            "the CPU shown, which the network's threads then do not get.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = markdown(run(args.seconds), args.seconds)
    print(text)
    if not args.no_write:
        print(f"written to {write_section('napari_activity', text)}")


if __name__ == "__main__":
    main()
