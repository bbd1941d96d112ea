"""What Phen-LDiff fine-tunes in a pre-trained Stable Diffusion UNet: four methods, from a few thousand numbers to all.

    lora       low-rank updates of the attention projections to_q, to_k, to_v, to_out.0 (peft, diffusers format)
    svdiff     a learned shift of every singular value of every UNet weight (SVDiff, Han et al. 2023)
    attention  the attention layers themselves (self- and cross-attention), everything else frozen
    full       every UNet weight

Each method has three parts here: `apply_adapter` (what becomes trainable), `save_adapter` (only what was
trained, into a checkpoint folder) and `load_adapter` (put it back into a freshly loaded base UNet).

SVDiff decomposes every weight of the base at every start and every load (282 weights of SD2's UNet: about half an
hour on a CPU). The decompositions are cached per base, keyed by a digest of its weights, in the user's cache folder
(PHENDIFF_CACHE, else XDG_CACHE_HOME/napari-phendiff, else ~/.cache/napari-phendiff); progress and the cache's use
are logged on the "napari_phendiff" logger, which the command line shows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError, ConfigError
from ..options import ADAPTERS

log = logging.getLogger(__name__)
Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # U, s, V^T
Layer = nn.Linear | nn.Conv2d

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_FILE = "lora/pytorch_lora_weights.safetensors"
# Where each method keeps its trained weights inside a checkpoint folder.
ADAPTER_FILES = {
    "lora": LORA_FILE,
    "svdiff": "svdiff.safetensors",
    "attention": "attention.safetensors",
    "full": "unet/diffusion_pytorch_model.safetensors",
}


def apply_adapter(unet: UNet2DConditionModel, adapter: str, rank: int = 4) -> None:
    """Freeze the UNet and make trainable what `adapter` fine-tunes (adding LoRA or SVDiff parameters)."""
    if adapter not in ADAPTERS:
        raise ConfigError(f"Unknown adapter {adapter!r}: choose one of {', '.join(ADAPTERS)}.")
    unet.requires_grad_(adapter == "full")
    if adapter == "lora":
        from peft import LoraConfig

        if rank < 1:
            raise ConfigError(f"The LoRA rank must be at least 1, got {rank}.")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    elif adapter == "svdiff":
        modules = decomposable(unet)
        for name, factors in decompositions(modules).items():
            parametrize.register_parametrization(modules[name], "weight", SpectralShift(modules[name].weight, factors))
    elif adapter == "attention":
        for module in unet.modules():
            if isinstance(module, Attention):
                module.requires_grad_(True)


class SpectralShift(nn.Module):
    """SVDiff's reparametrisation of one weight W = U diag(s) V^T (convolutions flattened to out x in*k*k):

        W' = U diag(relu(s + delta) - s) V^T + W,   i.e.  U diag(relu(s + delta)) V^T

    with only `delta` (one number per singular value) trained. Written as a change added to W, so W is reproduced
    exactly where delta is 0 whatever the precision of the SVD. Neither peft nor diffusers implement SVDiff, hence
    this small module for torch.nn.utils.parametrize.
    """

    u: torch.Tensor  # buffers (register_buffer): the SVD's factors
    s: torch.Tensor
    vh: torch.Tensor

    def __init__(self, weight: torch.Tensor, factors: Factors | None = None):
        super().__init__()
        u, s, vh = factors if factors is not None else decompose(weight)
        # The factors are fixed, recomputed from the base on loading: not part of any saved state.
        self.register_buffer("u", u.to(weight.dtype), persistent=False)
        self.register_buffer("s", s, persistent=False)
        self.register_buffer("vh", vh.to(weight.dtype), persistent=False)
        self.delta = nn.Parameter(torch.zeros_like(s))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = self.s.float()  # the shift is computed in float32 even when the frozen weights are half precision
        change = torch.relu(s + self.delta) - s
        return weight + ((self.u * change.to(self.u.dtype)) @ self.vh).view_as(weight).to(weight.dtype)


def decompose(weight: torch.Tensor) -> Factors:
    """U, s, V^T of a weight flattened to out x in*k*k, in float32."""
    u, s, vh = torch.linalg.svd(weight.detach().float().flatten(1), full_matrices=False)
    return u, s, vh


def decomposable(unet: nn.Module) -> dict[str, Layer]:
    """The UNet's linear and convolution layers by name: the weights SVDiff reparametrises."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def cache_folder() -> Path:
    """Where napari-phendiff keeps what it can compute again: PHENDIFF_CACHE, else the XDG cache folder."""
    if os.environ.get("PHENDIFF_CACHE"):
        return Path(os.environ["PHENDIFF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-phendiff"


def weights_digest(modules: dict[str, Layer]) -> str:
    """A digest of the layers' names, shapes, types and weight bytes: the same base gives the same digest."""
    digest = hashlib.blake2b(digest_size=16)
    for name, module in modules.items():
        weight = module.weight.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(weight.shape)}{weight.dtype}".encode())
        digest.update(weight.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def decompositions(modules: dict[str, Layer]) -> dict[str, Factors]:
    """Every layer's (U, s, V^T), from the cache when this base was decomposed before, else computed (with progress
    logged) and cached for the next start or load."""
    path = cache_folder() / "svdiff" / f"{weights_digest(modules)}.safetensors"
    device = next(iter(modules.values())).weight.device
    if path.is_file():
        try:
            stored = load_file(path, device=str(device))
            log.info("SVDiff: the base's decompositions read from the cache %s", path)
            return {name: (stored[f"{name}.u"], stored[f"{name}.s"], stored[f"{name}.vh"]) for name in modules}
        except Exception as exc:  # a damaged or partial file (safetensors raises several kinds): decompose again
            log.warning("SVDiff: the cache %s cannot be read (%s); decomposing again", path, exc)
    found = {}
    every = max(1, len(modules) // 10)
    for i, (name, module) in enumerate(modules.items(), 1):
        found[name] = decompose(module.weight)
        if i % every == 0 or i == len(modules):
            log.info("SVDiff: decomposed %d of %d weights of the base", i, len(modules))
    store_decompositions(path, found)
    return found


def store_decompositions(path: Path, found: dict[str, Factors]) -> None:
    """Write the decompositions whole or not at all; a cache that cannot be written is a warning, not an error."""
    tensors = {
        f"{name}.{part}": t.contiguous().cpu() for name, f in found.items() for part, t in zip("u s vh".split(), f)
    }
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if need > free // 2:
            log.warning(
                "SVDiff: not caching the decompositions (%d MB) in %s: %d MB free", need >> 20, path.parent, free >> 20
            )
            return
        save_file(tensors, partial)
        os.replace(partial, path)
        log.info("SVDiff: decompositions cached in %s (%d MB) for the next start or load", path, need >> 20)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.warning("SVDiff: could not cache the decompositions in %s: %s", path.parent, exc)


def trained_parameters(unet: UNet2DConditionModel) -> dict[str, nn.Parameter]:
    """The UNet's trainable parameters by name."""
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def save_adapter(folder: Path, unet: UNet2DConditionModel, adapter: str) -> None:
    """Write only what `adapter` trained: LoRA in diffusers format (StableDiffusionPipeline.load_lora_weights reads
    it), SVDiff shifts or attention weights by parameter name, or the whole UNet for a full fine-tune."""
    if adapter == "lora":
        from diffusers import StableDiffusionPipeline  # imports transformers: only when needed
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionPipeline.save_lora_weights(
            folder / "lora",
            unet_lora_layers=layers,
            safe_serialization=True,
            unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        )
    elif adapter == "full":
        unet.save_pretrained(folder / "unet", safe_serialization=True)
    else:
        tensors = {n: p.detach().float().contiguous().cpu() for n, p in trained_parameters(unet).items()}
        save_file(tensors, folder / ADAPTER_FILES[adapter])


def load_adapter(unet: UNet2DConditionModel, folder: Path, adapter: str) -> None:
    """Put the weights `save_adapter` wrote into `unet`, a freshly loaded base (for "full", the checkpoint's own
    UNet is loaded instead: nothing to add)."""
    path = folder / ADAPTER_FILES[adapter]
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: {ADAPTER_FILES[adapter]} is missing, but the manifest says the model was "
            f"fine-tuned with {adapter!r}. The checkpoint is incomplete; copy it again or re-train."
        )
    if adapter == "lora":
        unet.load_lora_adapter(str(path.parent), weight_name=path.name, prefix="unet", adapter_name="phendiff")
    elif adapter == "svdiff":
        apply_adapter(unet, "svdiff")
        _load_named(unet, path)
        for module in list(unet.modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)  # bake W' in
    elif adapter == "attention":
        _load_named(unet, path)
    unet.requires_grad_(False)


def _load_named(unet: UNet2DConditionModel, path: Path) -> None:
    """Load weights saved by parameter name, refusing names or shapes the UNet does not have."""
    weights = load_file(path)
    own = dict(unet.named_parameters())
    unknown = [n for n in weights if n not in own]
    wrong = [n for n in weights if n in own and own[n].shape != weights[n].shape]
    if unknown or wrong:
        example = (unknown or wrong)[0]
        raise CheckpointError(
            f"{path}: {len(unknown) + len(wrong)} trained weights do not fit the base model's UNet "
            f"(e.g. {example}). The checkpoint was trained on a different base model."
        )
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value)
