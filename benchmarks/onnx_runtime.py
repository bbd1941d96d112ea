"""Would ONNX Runtime or OpenVINO run the translation's network faster on this CPU than torch does?

    pip install onnxruntime openvino   # not dependencies of the plugin
    python benchmarks/onnx_runtime.py [--checkpoint demo] [--batches 8 16] [--repeats 20]

The one call a tiled translation repeats: the checkpoint's denoiser on a batch of tiles (8 tiles per call on a CPU,
core/tiling.py; 16 in a guided regeneration step, both branches in one call). Each runtime gets the same random
tiles, timesteps and condition labels; torch as a translation runs it (load_checkpoint: channels-last weights on a
CPU, inference mode), then the same network exported to ONNX (torch.onnx.export) and run by ONNX Runtime (all graph
optimisations) and by OpenVINO (read from the ONNX file, compiled for the CPU). Seconds per call are the median of
--repeats calls after 3 warm-up calls; the largest difference from torch's output says whether the answer is the same.
The issue's bar for adding such a path: at least 2x faster, installed from PyPI without trouble.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.models.pixel import ClassConditional as Denoiser  # (x, t, labels) -> prediction

from report import hardware, table, write_section


def timed(call, repeats: int) -> float:
    for _ in range(3):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def inputs(model, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    size = model.image_size
    return {
        "x": rng.standard_normal((batch, len(model.channel_names), size, size)).astype(np.float32),
        "t": rng.integers(0, 1000, batch).astype(np.int64),
        "labels": rng.integers(0, len(model.conditions), batch).astype(np.int64),
    }


def export(net: torch.nn.Module, example: dict[str, np.ndarray], path: Path) -> None:
    args = tuple(torch.from_numpy(example[k]) for k in ("x", "t", "labels"))
    dynamic = {"x": {0: "batch"}, "t": {0: "batch"}, "labels": {0: "batch"}, "out": {0: "batch"}}
    torch.onnx.export(
        net, args, str(path), input_names=["x", "t", "labels"], output_names=["out"], dynamic_axes=dynamic,
        dynamo=False, opset_version=17,
    )  # fmt: skip


def measure(checkpoint: str, batches: list[int], repeats: int, threads: int) -> list[list]:
    import onnxruntime as ort
    import openvino as ov

    model = load_checkpoint(checkpoint, device="cpu")
    net = Denoiser(model.unet).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "denoiser.onnx"
        export(Denoiser(load_checkpoint(checkpoint, device="cpu").unet.to(memory_format=torch.contiguous_format)),
               inputs(model, batches[0]), path)  # fmt: skip
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        for batch in batches:
            feed = inputs(model, batch)
            tensors = [torch.from_numpy(feed[k]) for k in ("x", "t", "labels")]
            with torch.inference_mode():
                reference = net(*tensors).numpy()
                own = timed(lambda: net(*tensors), repeats)
            arms = {
                "ONNX Runtime": lambda: session.run(None, feed)[0],
                "OpenVINO": lambda: compiled(feed)[0],
            }
            rows.append([batch, "torch (as translate runs it)", own, 1.0, 0.0])
            for name, call in arms.items():
                seconds = timed(call, repeats)
                difference = float(np.abs(np.asarray(call()) - reference).max())
                rows.append([batch, name, seconds, own / seconds, difference])
            for row in rows[-3:]:
                print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.checkpoint, args.batches, args.repeats, args.threads)
    import onnxruntime as ort
    import openvino as ov

    header = ["tiles per call", "runtime", "seconds per call", "speed-up vs torch", "max |difference| vs torch"]
    markdown = (
        "## ONNX Runtime and OpenVINO vs torch on this CPU (`benchmarks/onnx_runtime.py`)\n\n"
        f"Checkpoint `{args.checkpoint}`: its denoiser on a batch of {load_checkpoint(args.checkpoint).image_size}-px "
        f"tiles (8 per call on a CPU, 16 in a guided step), median of {args.repeats} calls after 3 warm-up calls. "
        f"ONNX Runtime {ort.__version__} (all graph optimisations), OpenVINO {ov.__version__} (from the ONNX file), "
        f"{args.threads} threads each. Hardware: {hardware()}.\n\n" + table(header, rows)
    )
    print(markdown)
    if not args.no_write:
        write_section("onnx_runtime", markdown)


if __name__ == "__main__":
    main()
