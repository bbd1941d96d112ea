"""Phen-LDiff at Stable Diffusion 2 scale on this computer: seconds per step, peak memory and checkpoint size per adapter.

    python benchmarks/latent_scale.py [--sizes 128 512] [--adapters lora svdiff attention full] [--batch 1]
        [--optimizer adamw|adamw8bit] [--previews N] [--section latent_scale]

No weights can be downloaded here, so the base is SD 2.1-base's architecture built from its configs (UNet
865.9 M parameters, VAE 83.7 M; no text encoder: the conditions start from the null embedding) with random weights,
saved once in diffusers layout under --work; random weights cost the same time and memory as trained ones. Each
(size, adapter) runs `phendiff train`'s loop in a fresh process on simulated two-channel cells for --steps steps
(the last step's time is reported; the set-up before the first step apart), then the checkpoint a translation reads
is measured (its files without the training state). A run the memory check refuses before loading is reported
with its reason. --optimizer adamw8bit trains with bitsandbytes' 8-bit AdamW; --previews N makes N previews per
condition from the model being trained at the checkpoint (the Train dock's previews), inside the measured peak. Writes docs/benchmarks.md (section latent_scale) so docs/latent.md's table can be rerun.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

from report import hardware, table, write_section

UNET = dict(  # stabilityai/stable-diffusion-2-1-base unet/config.json
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
VAE = dict(  # its vae/config.json
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    scaling_factor=0.18215,
)


def build_base(folder: Path) -> Path:
    """SD 2.1-base's UNet, VAE and scheduler from their configs, random weights, in diffusers layout (made once)."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE),
        text_encoder=None,
        tokenizer=None,
        unet=UNet2DConditionModel(**UNET),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def one_run(
    base: str, data: str, out: str, size: int, adapter: str, batch: int, steps: int, optimizer: str, previews: int
) -> dict:
    """Train `steps` steps in this (fresh) process; times, the process's peak memory and the checkpoint's size."""

    from napari_phendiff.core.errors import PhenDiffError
    from napari_phendiff.core.options import TrainConfig
    from napari_phendiff.core.training.run import iter_train

    config = TrainConfig(
        data=Path(data),
        out=Path(out),
        model="latent",
        base=base,
        adapter=adapter,
        image_size=size,
        steps=steps,
        batch_size=batch,
        checkpoint_every=steps,
        device="cpu",
        resize=size > 128,
        seed=0,
        optimizer=optimizer,
    )
    started = time.perf_counter()
    stamps, preview_s = [], None
    try:
        for event in iter_train(config, previews):
            if event.kind == "step":
                stamps.append(time.perf_counter())
            if event.kind == "previews":
                preview_s = time.perf_counter() - stamps[-1]
    except PhenDiffError as exc:
        return {"refused": str(exc).splitlines()[0]}
    folder = Path(out)
    size_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and "training" not in f.parts)
    return {
        "setup_s": stamps[0] - started if stamps else None,
        "step_s": stamps[-1] - stamps[-2] if len(stamps) > 1 else None,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "checkpoint_mb": size_bytes / 1e6,
        "preview_s": preview_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/latent_scale"))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--adapters", nargs="+", default=["lora", "svdiff", "attention", "full"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit"])
    parser.add_argument("--previews", type=int, default=0, help="previews per condition at the checkpoint")
    parser.add_argument("--section", default="latent_scale", help="the docs/benchmarks.md section to write")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from napari_phendiff.core.simulate import simulate_dataset

    base = build_base(args.work / "sd21-base-architecture")
    data = args.work / "cells"
    if not data.is_dir():
        simulate_dataset(data, "translocation", 8, 128, seed=0, cell_diameter=20.0)
    context = multiprocessing.get_context("spawn")
    rows = []
    for size in args.sizes:
        for adapter in args.adapters:
            out = args.work / f"run-{size}-{adapter}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (a folder holding one is refused)
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                found = pool.submit(
                    one_run,
                    str(base),
                    str(data),
                    str(out),
                    size,
                    adapter,
                    args.batch,
                    args.steps,
                    args.optimizer,
                    args.previews,
                ).result()
            print(size, adapter, found, flush=True)
            if "refused" in found:
                refused = "refused before loading: " + found["refused"]
                rows.append([size, adapter, args.optimizer, args.batch, refused, "", "", "", ""])
                continue
            rows.append(
                [
                    size,
                    adapter,
                    args.optimizer,
                    args.batch,
                    f"{found['step_s']:.1f}" if found["step_s"] is not None else "-",
                    f"{found['setup_s']:.0f}" if found["setup_s"] is not None else "-",
                    f"{found['peak_gb']:.1f}",
                    f"{found['checkpoint_mb']:.1f}",
                    f"{args.previews} in {found['preview_s']:.0f} s" if found["preview_s"] is not None else "none",
                ]
            )
    header = [
        "image (px)",
        "adapter",
        "optimizer",
        "batch",
        "seconds per step",
        "set-up (s)",
        "peak memory (GB)",
        "checkpoint (MB)",
        "previews per condition",
    ]
    markdown = f"""## Phen-LDiff at Stable Diffusion 2 scale (`benchmarks/latent_scale.py`)

SD 2.1-base's architecture from its configs with random weights (UNet 865.9 M parameters, VAE 83.7 M, no text
encoder), `phendiff train --model latent` for {args.steps} steps per run in a fresh process, simulated two-channel cells
(128-px images; 512 px with `--resize`). Seconds per step: the last step; set-up: from the start to the first step
(loading, the adapter; SVDiff's decompositions when not cached); peak memory: the whole process's; checkpoint: what a
translation reads; previews: made from the model being trained after the last step (at most 128 px, 20 steps), inside
the peak. Hardware: {hardware()}.

{table(header, rows)}
"""
    print(markdown)
    if not args.no_write:
        write_section(args.section, markdown)


if __name__ == "__main__":
    main()
