"""How fast is the core? Translation against a plain diffusers loop, and training throughput.

    python benchmarks/bench_core.py                       # tiny (64 px) and paper (128 px), 50 DDIM steps, batch 8
    python benchmarks/bench_core.py --presets tiny --steps 20 --batch 4 --repeats 5 --train-steps 30
    python benchmarks/bench_core.py --quick               # smoke test: 32 px, 3 steps, batch 2 (minutes on a CPU)

1. Translation, seconds per image: napari-phendiff's `translate()` (one source -> one target, N DDIM steps each
   way, a batch of B images of the model's size, so one tile each) against `reference_translate` below, the same
   PhenDiff written the way the diffusers documentation writes a sampling loop, run on the SAME weights
   (DDIMInverseScheduler + DDIMScheduler from the checkpoint's scheduler config, fp32, torch.no_grad). Both are
   timed in the same run, interleaved, after a warm-up; the median of the repeats is reported, and the ratio
   ours / reference says what the wrapping (normalisation, tiling, progress events) costs. The two outputs should
   agree to float rounding: same math, same weights.
2. Training: steps/s and peak memory of napari-phendiff's real training loop (`core.training.run.iter_train`) on a small
   simulated data set, timed from its step events after a few warm-up steps. Each preset trains in a fresh
   process so its memory is its own. Peak memory: on CUDA `torch.cuda.max_memory_allocated` (weights, gradients,
   optimizer and EMA state, activations); on a CPU the growth of the process's peak resident set size (ru_maxrss)
   over its RSS just before training started, which counts the same things plus the data set and allocator slack.

Models are randomly initialised (speed does not depend on training): `build_unet`, written with
`write_checkpoint` into a temporary folder and read back with `load_checkpoint`, as a user's checkpoint would be.
Results go to docs/benchmarks.md (section "core_speed").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from napari_phendiff.core.models import load_checkpoint
from napari_phendiff.core.models.pixel import write as write_checkpoint
from napari_phendiff.core.device import get_device
from napari_phendiff.core.images import Normalization
from napari_phendiff.core.models.pixel import PRESETS, SCHEDULE_DEFAULTS, build_unet
from napari_phendiff.core.simulate import PHENOTYPES, simulate_dataset, simulate_field
from napari_phendiff.core.options import TrainConfig
from napari_phendiff.core.training.diffusion import mixed_precision as _mixed_precision
from napari_phendiff.core.training.run import iter_train
from napari_phendiff.core.translate import translate

from report import hardware, table, write_section

PHENOTYPE = "translocation"
SOURCE, TARGET = PHENOTYPES[PHENOTYPE].conditions
QUICK = dict(size=32, steps=3, batch=2, repeats=2, train_steps=3, train_warmup=1, images_per_condition=2)


# --- the reference: PhenDiff as a diffusers user would write it --------------------------------------------------


def reference_translate(
    unet, scheduler_config: dict, clean: torch.Tensor, source: int, target: int, steps: int
) -> torch.Tensor:
    """DDIM-invert `clean` (normalised, B,C,H,W) under class `source`, then DDIM-generate under class `target`."""
    inverse_scheduler = DDIMInverseScheduler.from_config(scheduler_config)
    scheduler = DDIMScheduler.from_config(scheduler_config)
    inverse_scheduler.set_timesteps(steps, device=clean.device)
    scheduler.set_timesteps(steps, device=clean.device)
    source_labels = torch.full((clean.shape[0],), source, device=clean.device)
    target_labels = torch.full((clean.shape[0],), target, device=clean.device)
    sample = clean
    with torch.no_grad():
        for t in inverse_scheduler.timesteps:
            noise_pred = unet(sample, t, class_labels=source_labels).sample
            sample = inverse_scheduler.step(noise_pred, t, sample).prev_sample
        for t in scheduler.timesteps:
            noise_pred = unet(sample, t, class_labels=target_labels).sample
            sample = scheduler.step(noise_pred, t, sample).prev_sample
    return sample


# --- helpers ------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device):
    """(seconds, result) of one call, with the GPU's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def cell_diameter(size: int) -> float:
    """The simulator's 28 px cells at 128 px, scaled down for small fields (it needs 8 px <= diameter <= size)."""
    return float(min(28.0, max(8.0, size / 4)))


def random_checkpoint(folder: Path, preset: str, size: int, images: np.ndarray, device: str):
    """A randomly initialised model, written and loaded like any checkpoint."""
    torch.manual_seed(0)
    unet = build_unet(preset, images.shape[1], 2, size)
    channel_names = list(PHENOTYPES[PHENOTYPE].channels)
    manifest = {
        "kind": "pixel",
        "conditions": [SOURCE, TARGET],
        "channel_names": channel_names,
        "image_size": size,
        "normalization": Normalization.fit(list(images)).to_dict(),
        "schedule": SCHEDULE_DEFAULTS,
        "training": {"preset": preset, "image_size": size},
        "metadata": {"note": "randomly initialised by benchmarks/bench_core.py"},
    }
    write_checkpoint(folder, unet, SCHEDULE_DEFAULTS, manifest)
    return load_checkpoint(folder, device=device)


def model_size(preset: str, args) -> int:
    return args.size or PRESETS[preset]["default_size"]


# --- 1. translation -------------------------------------------------------------------------------------------------


def bench_translation(preset: str, args, work: Path) -> list:
    size = model_size(preset, args)
    fields = [
        simulate_field(PHENOTYPE, SOURCE, size, seed=i, cell_diameter=cell_diameter(size)) for i in range(args.batch)
    ]
    images = np.stack([f.image for f in fields]).astype(np.float32)  # float in, float out: no rounding to compare
    model = random_checkpoint(work / f"model-{preset}", preset, size, images, args.device)
    device = model.device
    source, target = model.condition_index(SOURCE), model.condition_index(TARGET)

    def ours(steps: int) -> np.ndarray:
        out = translate(model, images, SOURCE, TARGET, steps=steps, batch_size=args.batch)
        return model.normalization.forward(out)  # back to the model's units to compare with the reference

    def reference(steps: int) -> np.ndarray:
        clean = torch.from_numpy(model.normalization.forward(images)).to(device)
        out = reference_translate(model.unet, model.scheduler_config, clean, source, target, steps)
        return out.cpu().numpy()

    warmup_steps = min(args.steps, 2)
    ours(warmup_steps), reference(warmup_steps)
    times = {"ours": [], "reference": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, function in (("ours", ours), ("reference", reference)):  # interleaved: drift hits both alike
            seconds, outputs[name] = timed(lambda: function(args.steps), device)
            times[name].append(seconds)
    ours_s = statistics.median(times["ours"]) / args.batch
    reference_s = statistics.median(times["reference"]) / args.batch
    difference = float(np.abs(outputs["ours"] - outputs["reference"]).max())
    spread = float(np.abs(outputs["reference"]).max())
    model.release()
    return [preset, size, args.batch, args.steps, ours_s, reference_s, ours_s / reference_s, difference, spread]


# --- 2. training ----------------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (ru_maxrss), or None where the OS does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def train_in_this_process(preset: str, size: int, data: str, out: str, args_dict: dict) -> dict:
    """Run iter_train for warm-up + timed steps; measure steps/s and peak memory up to the last timed step.

    Runs in a fresh process (see main) so ru_maxrss is this training's own peak; the final checkpoint write that
    iter_train does after the last step is left out of both time and memory.
    """
    import accelerate  # noqa: F401  imported inside iter_train: import it before measuring memory
    import psutil

    if args_dict["threads"]:
        torch.set_num_threads(args_dict["threads"])
    warmup, timed_steps = args_dict["train_warmup"], args_dict["train_steps"]
    config = TrainConfig(
        data=Path(data),
        out=Path(out),
        preset=preset,
        image_size=size,
        steps=warmup + timed_steps,
        batch_size=args_dict["train_batch"],
        checkpoint_every=warmup + timed_steps + 1,
        device=args_dict["device"],
        mixed_precision=args_dict["mixed_precision"],
        seed=0,
    )
    cuda = get_device(config.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = psutil.Process().memory_info().rss
    stamps, peak = [], None
    events = iter_train(config)
    try:
        for event in events:
            if event.kind != "step":
                continue
            stamps.append(time.perf_counter())  # the step event comes after float(loss): the GPU is synchronised
            if len(stamps) == warmup + timed_steps:
                peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
                if peak is not None and not cuda:
                    peak -= rss_before
                break
    finally:
        events.close()  # iter_train saves a resumable checkpoint here, outside what was measured
    elapsed = stamps[-1] - stamps[warmup - 1] if warmup else stamps[-1] - stamps[0]
    counted = timed_steps if warmup else timed_steps - 1
    return {
        "steps_per_s": counted / elapsed,
        "peak_bytes": peak,
        "precision": _mixed_precision(config.mixed_precision, get_device(config.device)),
    }


def bench_training(preset: str, args, work: Path, pool) -> list:
    size = model_size(preset, args)
    data = work / f"cells-{size}"
    if not data.exists():
        simulate_dataset(data, PHENOTYPE, args.images_per_condition, size, seed=0, cell_diameter=cell_diameter(size))
    result = pool.submit(
        train_in_this_process, preset, size, str(data), str(work / f"train-{preset}"), vars(args)
    ).result()
    peak = result["peak_bytes"]
    steps_per_s = result["steps_per_s"]
    return [
        preset,
        size,
        args.train_batch,
        result["precision"],
        steps_per_s,
        steps_per_s * args.train_batch,
        peak / 2**20 if peak is not None else "n/a",
    ]


# --- main -----------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=list(PRESETS))
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="image size for every preset (default: the preset's own, 64 px tiny, 128 px paper)",
    )
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps, for inversion and again for generation")
    parser.add_argument("--batch", type=int, default=8, help="images translated together")
    parser.add_argument("--repeats", type=int, default=3, help="timed translations each (median reported)")
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--train-warmup", type=int, default=3, help="training steps run before timing")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size (default: --batch)")
    parser.add_argument("--images-per-condition", type=int, default=8, help="size of the simulated training set")
    parser.add_argument(
        "--mixed-precision",
        default="auto",
        choices=["auto", "no", "bf16", "fp16"],
        help="training only; translation is always fp32",
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip", choices=["translate", "train"], default=None, help="leave one part out")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.train_batch = args.train_batch or args.batch
    if args.train_steps < 2 and not args.train_warmup:
        parser.error("--train-steps must be at least 2 without warm-up steps (time runs from the first step)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    cuda = get_device(args.device).type == "cuda"
    memory = "peak CUDA memory allocated (MiB)" if cuda else "peak RSS growth (MiB)"
    translation_rows, training_rows = [], []
    with tempfile.TemporaryDirectory(prefix="phendiff-bench-") as tmp:
        work = Path(tmp)
        if args.skip != "translate":
            for preset in args.presets:
                translation_rows.append(bench_translation(preset, args, work))
                print("translation", translation_rows[-1], flush=True)
        if args.skip != "train":
            spawn = multiprocessing.get_context("spawn")
            for preset in args.presets:  # one fresh process per preset: its peak memory is its own
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    training_rows.append(bench_training(preset, args, work, pool))
                print("training", training_rows[-1], flush=True)

    translation_header = [
        "preset",
        "px",
        "batch",
        "DDIM steps (each way)",
        "ours (s/image)",
        "diffusers loop (s/image)",
        "ours / diffusers",
        "max abs difference",
        "max abs value",
    ]
    training_header = ["preset", "px", "batch", "mixed precision", "steps/s", "images/s", memory]
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    settings = (
        f"{args.steps} DDIM steps each way, batch {args.batch}, median of {args.repeats} repeats after a "
        f"warm-up; training: batch {args.train_batch}, {args.train_steps} steps timed after "
        f"{args.train_warmup} warm-up steps, {args.images_per_condition} simulated images per condition"
        + (" (--quick smoke test: not representative)" if args.quick else "")
    )
    memory_note = (
        "`torch.cuda.max_memory_allocated` over the training run (weights, gradients, AdamW and EMA state, activations)"
        if cuda
        else "growth of the training process's peak resident set size (ru_maxrss) over its RSS just "
        "before training started: weights, gradients, AdamW and EMA state, activations, the data set "
        "and allocator slack; each preset trains in a fresh process"
    )
    sections = [
        f"""## Core speed (`benchmarks/bench_core.py`)

Hardware: {hardware()}. Date: {when}. Total {time.time() - started:.0f} s.
Settings: {settings}. Randomly initialised models (speed does not depend on the weights).
"""
    ]
    if translation_rows:
        sections.append(f"""### Translation

`translate()` ({SOURCE} -> {TARGET}, images of the model's size, fp32) against a plain diffusers loop on the same
weights (DDIMInverseScheduler then DDIMScheduler from the checkpoint's config, `unet(x, t, class_labels=...)`,
`torch.no_grad`), timed in the same run. Differences are in the model's normalised units (data span about [-1, 1]);
"max abs value" is the largest value of the translated images in those units, for scale.

{table(translation_header, translation_rows)}
""")
    if training_rows:
        sections.append(f"""### Training

`core.training.run.iter_train` on simulated {PHENOTYPE} images, steps/s from its step events (data loading, forward,
backward, AdamW, EMA). Memory: {memory_note}.

{table(training_header, training_rows)}
""")
    markdown = "\n".join(sections)
    print(markdown)
    if not args.no_write:
        print(f"written to {write_section('core_speed', markdown)}")


if __name__ == "__main__":
    main()
