"""Presets: a plain dict of configs and one builder function.

- `sd21`: the paper's configuration. SD 2.1-base UNet and VAE (diffusers configs), DDPM
  scaled_linear betas 0.00085..0.012 over 1000 steps, DFRM/TPM/S_learned in the official layout,
  LoRA ranks 48 (UNet) and 16 (VAE decoder).
- `tiny`: the same code path with small widths and a 4x, 16-channel VAE latent, trainable on a
  CPU; the shipped default.
"""

import dataclasses
from typing import Any

from tadm.config import DFRMConfig, SchedulerConfig, TADMConfig, TPMConfig

SD21_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "use_linear_projection": True,
}

SD21_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

TINY_LATENT_CHANNELS = 16  # a wide latent (as SD3) raises the VAE bound (paper Sec. 4.4.4)

TINY_VAE: dict[str, Any] = {
    "act_fn": "silu",
    # Three levels: a 4x latent (SD's is 8x) with 16 channels, an easy autoencoder that trains
    # to a high bound on a CPU; the DFRM latent branch adds the remaining 2x steps to the LR.
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "in_channels": 3,
    "latent_channels": TINY_LATENT_CHANNELS,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 1.0,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "mid_block_add_attention": False,
}

TINY_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [32, 64],
    "cross_attention_dim": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "in_channels": TINY_LATENT_CHANNELS,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "out_channels": TINY_LATENT_CHANNELS,
    "sample_size": 32,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}

PRESETS: dict[str, dict[str, Any]] = {
    "sd21": {
        "vae": SD21_VAE,
        "unet": SD21_UNET,
        "latent_scaling": 0.18215,
        "null_prompt_tokens": 77,
        "dfrm": DFRMConfig(),
        "tpm": TPMConfig(),
        "scheduler": SchedulerConfig(),
        "unet_lora_rank": 48,
        "vae_lora_rank": 16,
    },
    "tiny": {
        "vae": TINY_VAE,
        "unet": TINY_UNET,
        "latent_scaling": 1.0,
        "null_prompt_tokens": 4,
        "dfrm": DFRMConfig(
            # G_d's pixel shuffles divide its width by 4 each: the official layout would leave
            # 12 channels before the 16-channel latent at 16x and 3 at 32x, so tiny's G_d goes
            # back to latent_width after each.
            pixel_width=8,
            latent_width=192,
            num_res_blocks=2,
            inn_blocks=4,
            inn_growth=16,
            decoder_keep_width=True,
        ),
        "tpm": TPMConfig(width=16, num_res_blocks=2, hidden=64),
        "scheduler": SchedulerConfig(learned_width=32, learned_res_blocks=2),
        "unet_lora_rank": 0,
        "vae_lora_rank": 0,
    },
}


def build_config(name: str, scale: int = 16, **overrides: Any) -> TADMConfig:
    """The config of preset `name` at `scale`, with dataclass fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = TADMConfig(scale=scale, **PRESETS[name])
    return dataclasses.replace(config, **overrides) if overrides else config
