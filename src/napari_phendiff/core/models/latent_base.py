"""The pre-trained latent diffusion base as Phen-LDiff uses it: its UNet, VAE and noise schedule loaded from a folder in
diffusers layout (bases.py says where that folder comes from), the sizes its architecture imposes, and microscopy
channels in and out of its VAE.

Images. The VAE takes RGB in [-1, 1]; images are normalised per channel to about [-1, 1] as for the pixel model,
then one channel becomes grey (R = G = B), two become red and green on a black blue, three stay as they are.
Decoding takes the mean of R, G and B back for one channel, and R (and G) for two. The VAE encodes with its
distribution's mean (no sampling, so encoding is reproducible), latents are scaled by the VAE's scaling factor and
never clipped.

Channel slots. Stable Diffusion's VAE mixes R, G and B into every latent. A base whose VAE takes one channel and
whose UNet takes n times its latents (the shipped base) encodes each of the n RGB slots on its own and stacks the
latents: the latents of one microscopy channel are then a block of their own, which a translation can hold at the
original's values at every step (the DNA, as the pixel model does) so the other channels are drawn around the real
cells (docs/latent.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from ..device import available_memory
from ..errors import CheckpointError, ConfigError, DataError
from .bases import local_base, resolve_base


def from_base(loader, source: str, subfolder: str, what: str, **kwargs):
    """`loader(source, subfolder=...)`, with a readable error when the part is missing or cannot be fetched."""
    location = local_base(source)  # the shipped folder, or a hub id's download: never a network wait here
    try:
        return loader(location, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as exc:
        hint = (
            "Check that the folder holds the whole pipeline in diffusers layout, with weights as .safetensors "
            "(pickled .bin/.ckpt files are never loaded)."
            if Path(location).is_dir()
            else "Loading a hub id needs a network connection (or the model in the local hub cache); otherwise "
            "download it once (docs/latent.md) and give the folder."
        )
        raise CheckpointError(
            f"{source}: cannot load the base model's {what} ({subfolder}/): {str(exc).splitlines()[0]} {hint}"
        ) from exc


def base_configs(source: str) -> tuple[dict, dict]:
    """The base's UNet and VAE configs (small JSON files: nothing heavy is loaded)."""
    unet = from_base(UNet2DConditionModel.load_config, source, "unet", "UNet config")
    vae = from_base(AutoencoderKL.load_config, source, "vae", "VAE config")
    return unet, vae


def config_hash(config: dict) -> str:
    """SHA-256 of a model config without its "_" bookkeeping keys: identifies the architecture."""
    public = {k: v for k, v in config.items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


def vae_factor(vae_config) -> int:
    """How much the VAE shrinks each side (8 for Stable Diffusion)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def size_multiple(unet_config, vae_config) -> int:
    """Image sides must be multiples of this: the VAE's factor times the UNet's halvings."""
    return vae_factor(vae_config) * 2 ** (len(unet_config["block_out_channels"]) - 1)


def native_image_size(source: str) -> int:
    """The image side, in pixels, the base model was trained at (512 for SD 2.x base, 768 for SD 2.x)."""
    unet, vae = base_configs(resolve_base(source))
    return int(unet["sample_size"]) * vae_factor(vae)


def load_base(source: str, *, unet_folder: Path | None = None) -> tuple[UNet2DConditionModel, AutoencoderKL, dict]:
    """The base's UNet (or a fully fine-tuned one from `unet_folder`), VAE and noise schedule, in float32 on the CPU.

    The schedule is the base's own (betas, prediction type, offsets) as a DDIMScheduler config, clipping off.
    """
    if unet_folder is not None:
        unet = from_base(
            UNet2DConditionModel.from_pretrained,
            str(unet_folder.parent),
            unet_folder.name,
            "fine-tuned UNet",
            use_safetensors=True,
        )
    else:
        unet = from_base(UNet2DConditionModel.from_pretrained, source, "unet", "UNet", use_safetensors=True)
    vae = from_base(AutoencoderKL.from_pretrained, source, "vae", "VAE", use_safetensors=True)
    base_schedule = from_base(DDIMScheduler.load_config, source, "scheduler", "scheduler config")
    known, _, _ = DDIMScheduler.extract_init_dict(base_schedule)  # drops other schedulers' keys (PNDM's)
    ddim = DDIMScheduler(**{**known, "clip_sample": False, "thresholding": False})
    schedule = {k: v for k, v in ddim.config.items() if not k.startswith("_")}
    return unet.float(), vae.float(), schedule


# --- microscopy channels <-> the VAE's RGB --------------------------------------------------------------------------


def channel_slots(unet_config, vae_config) -> int:
    """1 when the VAE mixes the channels (Stable Diffusion's RGB); n when the UNet takes n blocks of the VAE's latents,
    each the encoding of one channel by a one-channel VAE."""
    slots = int(unet_config["in_channels"]) // int(vae_config["latent_channels"])
    if slots == 1:
        return 1
    if vae_config["in_channels"] != 1 or slots * vae_config["latent_channels"] != unet_config["in_channels"]:
        raise CheckpointError(
            f"The base's UNet takes {unet_config['in_channels']} channels and its VAE gives "
            f"{vae_config['latent_channels']} from {vae_config['in_channels']} image channel(s): neither one VAE "
            "encoding (equal counts) nor one encoding per channel (a one-channel VAE); the folder mixes models."
        )
    return slots


def image_channels(unet_config, vae_config) -> int:
    """How many microscopy channels the base takes: its VAE's RGB, or one per slot."""
    slots = channel_slots(unet_config, vae_config)
    return int(vae_config.get("in_channels", 3)) if slots == 1 else slots


def check_channels(channels: int, vae_channels: int, where: str) -> None:
    if channels > vae_channels:
        raise DataError(
            f"{where}: the images have {channels} channels, but Phen-LDiff's pre-trained VAE takes at most "
            f"{vae_channels} (RGB). Train the pixel model instead (--model pixel), which takes any number of "
            f"channels, or keep the {vae_channels} channels that show the phenotype (e.g. one TIFF per image with "
            "only those channels)."
        )


def to_vae(x: torch.Tensor, vae_channels: int) -> torch.Tensor:
    """(B, C, H, W) normalised microscopy -> (B, 3, H, W): grey for one channel, red and green on black for two."""
    channels = x.shape[1]
    if channels == 1:
        return x.expand(-1, vae_channels, -1, -1)
    black = torch.full_like(x[:, :1], -1.0).expand(-1, vae_channels - channels, -1, -1)
    return torch.cat([x, black], dim=1)


def from_vae(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    """The VAE's (B, 3, H, W) output back to the microscopy channels (inverse of `to_vae`)."""
    if channels == 1:
        return rgb.mean(dim=1, keepdim=True)
    return rgb[:, :channels]


def vae_encode(vae: AutoencoderKL, x: torch.Tensor, slots: int = 1) -> torch.Tensor:
    """Normalised microscopy (B, C, H, W) -> the scaled latents the UNet diffuses (the distribution's mean); with
    `slots` > 1 each RGB slot is encoded on its own and the latents are stacked slot by slot."""
    rgb = to_vae(x, vae.config.in_channels if slots == 1 else slots).to(vae.dtype)
    batch, _, height, width = rgb.shape
    mean = vae.encode(rgb.reshape(batch * slots, -1, height, width)).latent_dist.mean.float()
    mean = mean.reshape(batch, -1, *mean.shape[-2:])
    return (mean - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor


def vae_decode(vae: AutoencoderKL, z: torch.Tensor, channels: int, slots: int = 1) -> torch.Tensor:
    """Scaled latents -> normalised microscopy (B, channels, H, W), unclipped (`slots` as for `vae_encode`)."""
    unscaled = z / vae.config.scaling_factor + (vae.config.get("shift_factor") or 0.0)
    batch, _, height, width = unscaled.shape
    decoded = vae.decode(unscaled.reshape(batch * slots, -1, height, width).to(vae.dtype)).sample.float()
    return from_vae(decoded.reshape(batch, -1, *decoded.shape[-2:]), channels)


def slot_latents(keep: list[int], slots: int, latent_channels: int) -> list[int]:
    """The latent channels that hold the image channels `keep` (none when the VAE mixes the channels)."""
    if slots == 1:
        return []
    return [c * latent_channels + i for c in keep if c < slots for i in range(latent_channels)]


def check_memory(
    unet_config: dict, vae_config: dict, adapter: str, device: torch.device, optimizer: str = "adamw"
) -> None:
    """Refuse a fine-tuning whose weights and optimiser state alone would not fit on `device`, before loading.

    The estimate (float32, before activations): every UNet and VAE weight (4 bytes) and, for each trained weight, its
    gradient, AdamW's two moments and the EMA copy (16 bytes more; 10 with 8-bit moments). Counted on empty (meta)
    models built from the configs; LoRA and SVDiff train few enough weights to leave out."""
    from accelerate import init_empty_weights

    available = available_memory(device)
    if available is None or adapter not in ("full", "attention"):
        return
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
    frozen = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in vae.parameters())
    trained = sum(p.numel() for name, p in unet.named_parameters() if adapter == "full" or "attn" in name)
    need = 4 * frozen + (10 if optimizer == "adamw8bit" else 16) * trained
    if need > available:
        eight_bit = (
            ""
            if optimizer == "adamw8bit"
            else f", --optimizer adamw8bit ({(4 * frozen + 10 * trained) / 2**30:.1f} GiB; pip install bitsandbytes)"
        )
        raise ConfigError(
            f"Fine-tuning {trained / 1e6:.0f} M weights (--adapter {adapter}) of this base needs at least "
            f"{need / 2**30:.1f} GiB on {device} for the weights, their gradients, AdamW's two moments and the EMA "
            f"copy (before activations); {available / 2**30:.1f} GiB is available. Use --adapter lora (a few MB of "
            f"trained weights){eight_bit}, a smaller base, or a device with more memory."
        )
