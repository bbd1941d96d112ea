"""Phen-LDiff: PhenDiff in the latent space of a pre-trained Stable Diffusion 1.x/2.x, fine-tuned on microscopy.

    <checkpoint>/
      phendiff.json             manifest; "base" says where the pre-trained model is (folder or hub id) and holds
                                a hash of its UNet config, so a checkpoint is never combined with another model
      scheduler/                the base's noise schedule as a DDIMScheduler config
      conditions.safetensors    the learned condition embeddings (see below)
      lora/pytorch_lora_weights.safetensors | svdiff.safetensors | attention.safetensors | unet/
                                only what was fine-tuned (adapters.py); the rest is read from the base
      training/                 only to resume

Only the base's UNet, VAE and scheduler are needed (latent_base.py loads them and maps microscopy channels in and
out of the VAE); a text encoder, if the base has one, is used once, when training starts, to initialise the
condition embeddings from prompts.

Conditions. Each condition, and a null condition for classifier-free guidance, is a learned sequence of 77
cross-attention vectors fed to the UNet as `encoder_hidden_states`, trained together with the adapter. Initialised
from the text encoder's encoding of "a fluorescence microscopy image of <condition> cells" (and of "" for the null
condition) when the base has one, at random otherwise; no text encoder is needed to translate. docs/latent.md says
why this was chosen over fixed prompts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import MANIFEST, write_manifest
from ..device import get_device
from ..errors import CheckpointError, ConfigError
from ..options import TrainConfig
from ..training.diffusion import DiffusionTrainer
from .bases import check_shipped_version, hub_revision, hub_snapshot, is_hub_id, is_shipped, local_base
from .bases import resolve_base, shipped_base_info, shipped_digest
from .adapters import ADAPTERS, apply_adapter, load_adapter, save_adapter, trained_parameters
from .latent_base import (
    check_memory,
    base_configs,
    channel_slots,
    check_channels,
    config_hash,
    from_base,
    image_channels,
    load_base,
    native_image_size,
    size_multiple,
    slot_latents,
    vae_decode,
    vae_encode,
    vae_factor,
)
from .base import DiffusionModel
from .pixel import PixelModel, ddim_config

CONDITIONS_FILE = "conditions.safetensors"
REQUIRED_FILES = ["scheduler/scheduler_config.json", CONDITIONS_FILE]
BASE_CONTEXT_FILE = "phendiff_context.safetensors"  # a base without a text encoder may give its conditions' start
CONTEXT_TOKENS = 77  # Stable Diffusion's text length, which its cross-attention was trained on
PROMPT = "a fluorescence microscopy image of {} cells"
# Images per forward pass while training, as pixels: 2 images of 512 x 512. A larger batch is split into passes of
# this size whose gradients add up to the whole batch's, so memory does not grow with --batch-size.
PIXELS_PER_PASS = 2 * 512 * 512


def _has_text_encoder(source: str) -> bool:
    folder = Path(local_base(source))
    return all((folder / part).is_dir() for part in ("text_encoder", "tokenizer"))


def initial_contexts(source: str, conditions: list[str], dim: int) -> tuple[torch.Tensor, str]:
    """Starting condition embeddings (conditions + null, tokens, dim) and how they were made: from the text encoder
    when the base has one, else every condition from the base's own starting embedding (BASE_CONTEXT_FILE, which the
    shipped base holds: its null condition), else at random."""
    if not _has_text_encoder(source):
        own = Path(local_base(source)) / BASE_CONTEXT_FILE
        if own.is_file():
            context = load_file(own)["context"].float()
            if context.shape != (CONTEXT_TOKENS, dim):
                raise CheckpointError(
                    f"{own}: holds an embedding of shape {tuple(context.shape)}, expected "
                    f"{CONTEXT_TOKENS} x {dim} for this base's UNet; the base is damaged."
                )
            return (
                context.expand(len(conditions) + 1, -1, -1).clone(),
                f"the base's own starting embedding ({BASE_CONTEXT_FILE}), the same for every condition",
            )
        return torch.randn(len(conditions) + 1, CONTEXT_TOKENS, dim), "random (the base has no text encoder)"
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = from_base(CLIPTokenizer.from_pretrained, source, "tokenizer", "tokenizer")
    encoder = from_base(CLIPTextModel.from_pretrained, source, "text_encoder", "text encoder", use_safetensors=True)
    prompts = [PROMPT.format(c) for c in conditions] + [""]
    ids = tokenizer(
        prompts, padding="max_length", max_length=CONTEXT_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        contexts = encoder(ids)[0].float()
    if contexts.shape[-1] != dim:
        raise CheckpointError(
            f"{source}: the text encoder gives {contexts.shape[-1]}-dimensional embeddings but the "
            f"UNet's cross-attention takes {dim}; the folder mixes parts of different models."
        )
    return contexts, f"the text encoder, from the prompt {PROMPT!r} ('' for the null condition)"


# --- the model ------------------------------------------------------------------------------------------------------


class LatentDenoiser(nn.Module):
    """The UNet with one learned context (`encoder_hidden_states`) per condition; the last is the null condition."""

    def __init__(self, unet: UNet2DConditionModel, contexts: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.conditions = nn.Parameter(contexts)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(latents, t, encoder_hidden_states=self.conditions[labels]).sample


@dataclass
class LatentModel(PixelModel):
    """A loaded Phen-LDiff checkpoint: the fine-tuned UNet, the base's VAE and the learned condition embeddings."""

    vae: AutoencoderKL = field(kw_only=True)
    contexts: torch.Tensor = field(kw_only=True)
    kind = "latent"
    bytes_per_pixel = 16_384  # the VAE decodes at full resolution: a cautious guess, not measured

    @property
    def size_multiple(self) -> int:
        return size_multiple(self.unet.config, self.vae.config)

    def deep_feature_cache(self):
        """Refused (ConfigError): the feature cache knows the pixel UNet only, not Stable Diffusion's, which takes
        its condition through cross-attention at every level."""
        return DiffusionModel.deep_feature_cache(self)

    @property
    def slots(self) -> int:
        return channel_slots(self.unet.config, self.vae.config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.vae, x, self.slots)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, z, self.channels, self.slots)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        side = self.image_size // vae_factor(self.vae.config)
        return (n, self.unet.config.in_channels, side, side)

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=self.contexts[labels]).sample

    def kept_in_walk(self, keep: list[int]) -> list[int]:
        """The kept channels' own latents (latent_base.py, channel slots); none when the VAE mixes the channels."""
        return slot_latents(keep, self.slots, self.vae.config.latent_channels)

    def release(self) -> None:
        self.vae.to("cpu")
        self.contexts = self.contexts.cpu()
        super().release()


def load(path: Path, manifest: dict, device: str | torch.device) -> LatentModel:
    """The base model named in the manifest, with the checkpoint's fine-tuned weights and condition embeddings."""
    device = get_device(device)
    source, adapter = check_base(path, manifest), manifest.get("adapter")
    if adapter not in ADAPTERS:
        raise CheckpointError(
            f"{path / MANIFEST}: unknown adapter {adapter!r}; the checkpoint is damaged or from a "
            "newer napari-phendiff."
        )
    unet, vae, _ = load_base(source, unet_folder=path / "unet" if adapter == "full" else None)
    unet.to(device)  # before the adapter: SVDiff's decompositions are much faster on a GPU
    if adapter != "full":
        load_adapter(unet, path, adapter)
    conditions = list(manifest["conditions"])
    contexts = _read_contexts(path, len(conditions) + 1, unet.config.cross_attention_dim)
    unet.to(device).eval().requires_grad_(False)
    vae.to(device).eval().requires_grad_(False)
    return LatentModel(
        unet=unet,
        vae=vae,
        contexts=contexts.to(device),
        scheduler_config=dict(DDIMScheduler.load_config(path / "scheduler")),
        **LatentModel.described_by(manifest, path),
    )


def check_base(path: Path, manifest: dict) -> str:
    """The base model a checkpoint was fine-tuned from, after checking it is there and is the same architecture."""
    base = manifest.get("base") or {}
    source = base.get("source")
    if not source:
        raise CheckpointError(f"{path / MANIFEST}: names no base model; the checkpoint is damaged. Re-train.")
    if is_shipped(source):
        check_shipped_version(path, source, base.get("weights_sha256"))
    elif is_hub_id(source):
        source = hub_snapshot(source, base.get("revision"))  # the commit it was fine-tuned on
    elif not Path(source).is_absolute() and (path / source).is_dir():
        source = str((path / source).resolve())  # a relative path is read from the checkpoint folder
    relative = base.get("relative_to_checkpoint")
    if Path(source).is_absolute() and not Path(source).is_dir() and relative and (path / relative).is_dir():
        source = str((path / relative).resolve())  # checkpoint and base moved together
    if Path(source).is_absolute() and not Path(source).is_dir():
        raise CheckpointError(
            f"{path}: was fine-tuned from the base model {source}, which is not there. Put the "
            'base model back there, or write its new place as "source" under "base" in '
            f"{path / MANIFEST}."
        )
    found = config_hash(base_configs(source)[0])
    if found != base.get("unet_config_sha256"):
        raise CheckpointError(
            f"{path}: was fine-tuned from a different base model than {source} (UNet config hash "
            f'{str(base.get("unet_config_sha256"))[:12]}…, this one {found[:12]}…). Point "source" '
            f'under "base" in {path / MANIFEST} at the model it was trained on.'
        )
    return source


def _read_contexts(path: Path, rows: int, dim: int) -> torch.Tensor:
    file = path / CONDITIONS_FILE
    try:
        contexts = load_file(file)["conditions"]
    except (OSError, KeyError, SafetensorError) as exc:
        raise CheckpointError(
            f"{file}: cannot be read ({exc}); the checkpoint is incomplete. Copy it again or re-train."
        ) from exc
    if contexts.ndim != 3 or contexts.shape[0] != rows or contexts.shape[2] != dim:
        raise CheckpointError(
            f"{file}: holds embeddings of shape {tuple(contexts.shape)}, expected {rows} "
            f"conditions (with the null one) of {dim} values: it does not belong to this "
            "checkpoint or base model."
        )
    return contexts.float()


def write_latent(folder: Path, denoiser: LatentDenoiser, adapter: str, schedule: dict, manifest: dict) -> None:
    """Write manifest, scheduler, condition embeddings and what the adapter trained into `folder` (normally one
    from checkpoint.atomic_folder)."""
    save_adapter(folder, denoiser.unet, adapter)
    save_file({"conditions": denoiser.conditions.detach().float().contiguous().cpu()}, folder / CONDITIONS_FILE)
    DDIMScheduler.from_config(schedule).save_pretrained(folder / "scheduler")
    write_manifest(folder, manifest)


# --- training -------------------------------------------------------------------------------------------------------


class LatentTrainable:
    """What the diffusion trainer (core/training/diffusion.py) needs to fine-tune a Stable Diffusion base: the denoiser to optimise, the encoding of
    clean images into latents, the parameters it trains, and how to write a checkpoint."""

    def __init__(
        self, config, conditions: list[str], channels: int, device: torch.device, dtype: torch.dtype = torch.float32
    ):
        self.source = resolve_base(config.base)
        self.out = Path(config.out)
        self.adapter, self.rank, self.channels = config.adapter, config.rank, channels
        unet_config, vae_config = base_configs(self.source)  # check what is cheap to check before loading weights
        check_channels(channels, image_channels(unet_config, vae_config), str(config.data))
        self.slots = channel_slots(unet_config, vae_config)
        multiple = size_multiple(unet_config, vae_config)
        if config.image_size % multiple:
            raise ConfigError(
                f"Image size {config.image_size} must be a multiple of {multiple} for this base model "
                f"(its VAE and UNet halve each side {multiple.bit_length() - 1} times)."
            )
        self.unet_hash = config_hash(unet_config)
        self.micro_batch = max(1, PIXELS_PER_PASS // config.image_size**2)
        check_memory(unet_config, vae_config, self.adapter, device, config.optimizer)  # before loading gigabytes

        unet, self.vae, self.schedule = load_base(self.source)
        self.counts = {"unet": sum(p.numel() for p in unet.parameters())}
        apply_adapter(unet.to(device), self.adapter, self.rank)  # on the device: SVDiff's SVDs are faster there
        contexts, self.contexts_from = initial_contexts(self.source, conditions, unet.config.cross_attention_dim)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.denoiser = LatentDenoiser(unet, contexts).to(device)
        self.vae.to(device).requires_grad_(False).eval()
        if dtype != torch.float32:  # frozen weights in the mixed-precision type: half the memory
            self.vae.to(dtype)
            for tensor in [*self.denoiser.parameters(), *self.denoiser.buffers()]:
                if tensor.is_floating_point() and not tensor.requires_grad:
                    tensor.data = tensor.data.to(dtype)
        self.counts.update(
            adapter=sum(p.numel() for p in trained_parameters(unet).values()), conditions=contexts.numel()
        )

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """What the optimiser trains and EMA averages: the adapter's weights and the condition embeddings."""
        return [(n, p) for n, p in self.denoiser.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def encode(self, clean: torch.Tensor) -> torch.Tensor:
        return torch.cat([vae_encode(self.vae, part, self.slots) for part in clean.split(self.micro_batch)])

    def raw_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters()}

    def load_raw_weights(self, weights: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        if set(weights) != set(own):
            raise CheckpointError(
                "The saved training state does not fit this adapter; resume with the same "
                "--adapter and --rank, or start a new training run into another folder."
            )
        with torch.no_grad():
            for name, value in weights.items():
                own[name].copy_(value)

    def manifest(self) -> dict:
        return {
            "base": {
                "source": self.source,
                "unet_config_sha256": self.unet_hash,
                **({"weights_sha256": shipped_digest(self.source)} if is_shipped(self.source) else {}),
                # a hub id's commit, read off the cache folder it was loaded from: the same weights on reloading
                **({"revision": hub_revision(local_base(self.source))} if is_hub_id(self.source) else {}),
                # where the base lies seen from the checkpoint: moved together, they still find each other
                **(
                    {"relative_to_checkpoint": os.path.relpath(self.source, self.out.resolve())}
                    if Path(self.source).is_dir()
                    else {}
                ),
            },
            "adapter": self.adapter,
            "rank": self.rank if self.adapter == "lora" else None,
            "conditioning": {"embeddings": "learned", "tokens": CONTEXT_TOKENS, "initialised_from": self.contexts_from},
            "vae": {
                "scaling_factor": self.vae.config.scaling_factor,
                "factor": vae_factor(self.vae.config),
                "channels": "1: grey (R = G = B); 2: red, green, black blue; 3: RGB",
                "slots": self.slots,  # > 1: each RGB slot encoded on its own (latent_base.py)
            },
            "trained_parameters": self.counts,
            # what it translates at until calibrated: measured on fine-tunes of the shipped base (base.json)
            **(
                {"translation_defaults": defaults}
                if (defaults := shipped_base_info(self.source).get("translation"))
                else {}
            ),
        }

    def write(self, folder: Path, manifest: dict) -> None:
        write_latent(folder, self.denoiser, self.adapter, self.schedule, manifest)

    def as_model(self, fields: dict) -> LatentModel:
        """The UNet with its adapter and the condition embeddings being trained, and the base's VAE, as a loaded
        checkpoint would hold them (for previews)."""
        return LatentModel(
            unet=self.denoiser.unet,
            vae=self.vae,
            contexts=self.denoiser.conditions,
            scheduler_config=ddim_config(self.schedule),
            **fields,
        )

    def describe(self) -> str:
        what = self.adapter + (f" rank {self.rank}" if self.adapter == "lora" else "")
        return (
            f"Phen-LDiff on {self.source}, {what}: {self.counts['adapter']:,} of {self.counts['unet']:,} UNet "
            f"weights trained, plus {self.counts['conditions']:,} in the condition embeddings"
        )


class Trainer(DiffusionTrainer):
    @classmethod
    def prepare(cls, config: TrainConfig) -> TrainConfig:
        config = super().prepare(config)
        assert config.base is not None  # a fine-tuned kind: TrainConfig names the shipped base when none is given
        if config.image_size is None:
            config = replace(config, image_size=native_image_size(config.base))
        return config

    @classmethod
    def resume_problems(cls, manifest: dict, config: TrainConfig) -> list[str]:
        saved = manifest["training"]
        problems = [
            f"{name}: checkpoint {saved[name]!r}, now {getattr(config, name)!r}"
            for name in ("adapter",) + (("rank",) if config.adapter == "lora" else ())
            if saved[name] != getattr(config, name)
        ]
        assert config.base is not None  # a fine-tuned kind: TrainConfig names the shipped base when none is given
        if config_hash(base_configs(resolve_base(config.base))[0]) != manifest["base"]["unet_config_sha256"]:
            problems.append(f"base: checkpoint {manifest['base']['source']}, now {config.base}, a different model")
        return problems

    def make_trainable(self, config: TrainConfig, data) -> LatentTrainable:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision, torch.float32)
        return LatentTrainable(config, data.conditions, data.channels, self.accelerator.device, dtype)
