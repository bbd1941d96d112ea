"""Reuse of a UNet's deep features between neighbouring steps of a walk (DeepCache, Ma et al. 2024).

Between two neighbouring steps of a DDIM walk, what the UNet computes at its deeper, coarser levels changes little;
its outermost level, at full resolution, carries the detail. So a step may run the full network and keep the input
of the last up block (the deep features, upsampled to full resolution), and the next steps run only the outermost
level: the input convolution, the first down block (its outputs are the skip connections the last up block takes)
and the last up block on the kept deep features. On the `tiny` pixel UNet such a step costs about a third of a full
one (docs/benchmarks.md, deep_cache).

Written here because diffusers has no feature cache for its UNet2DModel (DeepCache's own code patches Stable
Diffusion's UNet2DConditionModel only). The partial forward below follows UNet2DModel.forward line by line for
the configurations this project builds (pixel kind: DownBlock2D/AttnDownBlock2D, positional time embedding);
others are refused when the cache is made.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from ..errors import ConfigError


class DeepFeatureCache:
    """Predictions of a UNet2DModel that reuse the deep features of the last full call.

    `predict(x, t, labels, refresh)` runs the whole network when `refresh` is true (or when nothing of this batch's
    shape is kept) and keeps its deep features; otherwise it runs only the outermost level on the kept ones.
    One cache serves one walk: its batch, conditions and branches stay the same from call to call.
    """

    def __init__(self, unet: UNet2DModel):
        config = unet.config
        if config.time_embedding_type != "positional" or config.center_input_sample:
            raise ConfigError("Deep features can be reused only with a UNet of positional time embedding.")
        if any(hasattr(block, "skip_conv") for block in (*unet.down_blocks, *unet.up_blocks)):
            raise ConfigError("Deep features cannot be reused with skip blocks (UNet2DModel's Skip* blocks).")
        if len(unet.up_blocks) < 2:
            raise ConfigError("Deep features need a UNet of at least two levels.")
        self.unet = unet
        self.deep: torch.Tensor | None = None
        self.full_calls = 0
        self.reused_calls = 0

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, refresh: bool) -> torch.Tensor:
        if refresh or self.deep is None or self.deep.shape[0] != x.shape[0]:
            return self._full(x, t, labels)
        self.reused_calls += 1
        unet = self.unet
        emb = self._embedding(x, t, labels)
        sample = unet.conv_in(x)
        # the first down block's outputs are the last up block's skip connections (its downsampled output, which
        # only the deeper levels read, is computed and dropped: the block runs whole, as in the full network)
        _, skips = unet.down_blocks[0](hidden_states=sample, temb=emb)
        skips = (sample, *skips)
        last = unet.up_blocks[-1]
        sample = last(self.deep, skips[: len(last.resnets)], emb)
        return self._out(sample)

    def _full(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The whole network (UNet2DModel.forward itself), keeping the last up block's input."""
        kept: list[torch.Tensor] = []
        hook = self.unet.up_blocks[-1].register_forward_pre_hook(lambda module, args: kept.append(args[0]))
        try:
            out = self.unet(x, t, class_labels=labels).sample
        finally:
            hook.remove()
        self.deep = kept[0]
        self.full_calls += 1
        return out

    def _embedding(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """UNet2DModel.forward's step 1: the time embedding plus the class embedding."""
        unet = self.unet
        timesteps = t if torch.is_tensor(t) else torch.tensor([t], dtype=torch.long, device=x.device)
        timesteps = timesteps.reshape(-1).to(x.device) * torch.ones(x.shape[0], dtype=timesteps.dtype, device=x.device)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
        if unet.class_embedding is not None:
            emb = emb + unet.class_embedding(labels).to(dtype=unet.dtype)
        return emb

    def _out(self, sample: torch.Tensor) -> torch.Tensor:
        """UNet2DModel.forward's step 6 for a positional-embedding UNet without skip blocks."""
        unet = self.unet
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
