"""What Phen-LDiff fine-tunes in a pre-trained Stable Diffusion UNet: four methods, from a few thousand numbers to all.

    lora       low-rank updates of the attention projections to_q, to_k, to_v, to_out.0 (peft, diffusers format)
    svdiff     a learned shift of every singular value of every UNet weight (SVDiff, Han et al. 2023)
    attention  the attention layers themselves (self- and cross-attention), everything else frozen
    full       every UNet weight

Each method has three parts here: `apply_adapter` (what becomes trainable), `save_adapter` (only what was
trained, into a checkpoint folder) and `load_adapter` (put it back into a freshly loaded base UNet).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError, ConfigError
from ..options import ADAPTERS

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
        for module in list(unet.modules()):
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                parametrize.register_parametrization(module, "weight", SpectralShift(module.weight))
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

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        u, s, vh = torch.linalg.svd(weight.detach().float().flatten(1), full_matrices=False)
        # The factors are fixed, recomputed from the base on loading: not part of any saved state.
        self.register_buffer("u", u.to(weight.dtype), persistent=False)
        self.register_buffer("s", s, persistent=False)
        self.register_buffer("vh", vh.to(weight.dtype), persistent=False)
        self.delta = nn.Parameter(torch.zeros_like(s))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = self.s.float()  # the shift is computed in float32 even when the frozen weights are half precision
        change = torch.relu(s + self.delta) - s
        return weight + ((self.u * change.to(self.u.dtype)) @ self.vh).view_as(weight).to(weight.dtype)


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
