"""PhenDiff's pixel-space noise predictor: a class-conditional diffusers UNet2DModel, plus the DDIM schedule."""

from __future__ import annotations

from diffusers import DDIMScheduler, UNet2DModel

# Three resolution levels would be the paper's; `tiny` adds a fourth so a CPU can afford attention (8x8 at 64 px).
PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=8, default_size=64),
    "small": dict(block_out_channels=(64, 128, 256), layers_per_block=2, norm_num_groups=32, default_size=64),
    "paper": dict(block_out_channels=(128, 256, 512), layers_per_block=2, norm_num_groups=32, default_size=128),
}

# Defaults chosen by measuring source->source reconstruction and translation on the simulator
# (docs/method.md, benchmarks/schedule_choice.py): v-prediction with the cosine schedule reconstructed best and came
# closest to the ground-truth translation. "leading" spacing keeps inversion off the last, ill-conditioned timestep
# of the cosine schedule (trailing spacing diverged there for epsilon models). Clipping stays off: it breaks the
# exactness of inversion.
SCHEDULE_DEFAULTS: dict = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="v_prediction",
    timestep_spacing="leading",
    steps_offset=0,
    clip_sample=False,
    set_alpha_to_one=True,
)


def build_unet(preset: str, channels: int, n_conditions: int, image_size: int) -> UNet2DModel:
    """A randomly initialised noise predictor with one class embedding per condition plus a null condition
    (index n_conditions) for classifier-free guidance."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    spec = PRESETS[preset]
    levels = len(spec["block_out_channels"])
    factor = 2 ** (levels - 1)
    if image_size % factor:
        raise ValueError(f"Image size {image_size} must be a multiple of {factor} for the {preset!r} preset.")
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=spec["block_out_channels"],
        layers_per_block=spec["layers_per_block"],
        norm_num_groups=spec["norm_num_groups"],
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=n_conditions + 1,
    )


def size_multiple(unet: UNet2DModel) -> int:
    """Image sides the UNet accepts are multiples of this."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def build_scheduler(**overrides) -> DDIMScheduler:
    return DDIMScheduler(**{**SCHEDULE_DEFAULTS, **overrides})
