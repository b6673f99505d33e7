"""Presets (tadm/presets.py) and the config they build (tadm/config.py)."""

import dataclasses
import json

import pytest

from tadm import PRESETS, TADMConfig, build_config
from tadm.config import DFRMConfig, SchedulerConfig, TPMConfig


def test_presets_are_a_plain_dict():
    assert isinstance(PRESETS, dict)
    assert set(PRESETS) == {"sd21", "tiny"}


@pytest.mark.parametrize("scale", [16, 32])
def test_sd21_is_the_papers_configuration(scale):
    config = build_config("sd21", scale)
    assert config.scale == scale
    unet, vae = config.unet, config.vae
    # SD 2.1-base: 4 levels, linear-projection transformers with 1024-d OpenCLIP context.
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["attention_head_dim"] == [5, 10, 20, 20]
    assert unet["cross_attention_dim"] == 1024 and unet["use_linear_projection"] is True
    assert unet["in_channels"] == unet["out_channels"] == 4 and unet["sample_size"] == 64
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
    assert vae["scaling_factor"] == config.latent_scaling == 0.18215
    assert config.null_prompt_tokens == 77
    assert config.scheduler == SchedulerConfig(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, t0=50
    )
    assert config.scheduler.prediction_type == "epsilon"  # 2.1-base; a base folder may change it
    # The official release's layer layout (DFRM, TPM, S_learned) and training facts (LoRA, tiles).
    assert config.dfrm == DFRMConfig(16, 128, 8, 12, 32)
    assert config.tpm == TPMConfig(32, 6, 512, 10.0, 200.0)
    assert (config.scheduler.learned_width, config.scheduler.learned_res_blocks) == (64, 6)
    assert (config.unet_lora_rank, config.vae_lora_rank) == (48, 16)
    assert (config.tile, config.tile_stride) == (96, 64)  # Algorithm 1: tile 96, overlap 32
    assert config.vae_factor == 8 and config.latent_multiple == 8
    assert config.base_model is None


@pytest.mark.parametrize("scale", [16, 32])
def test_tiny_follows_the_same_code_path_with_small_widths(scale):
    config = build_config("tiny", scale)
    sd21 = build_config("sd21", scale)
    assert sd21.vae_factor == 8 and config.vae_factor == 4  # tiny: an easier 4x latent
    assert config.dfrm.num_res_blocks < sd21.dfrm.num_res_blocks
    assert config.dfrm.inn_blocks < sd21.dfrm.inn_blocks
    assert config.unet["block_out_channels"][-1] < sd21.unet["block_out_channels"][-1]
    assert config.latent_channels == config.unet["in_channels"] == config.unet["out_channels"]
    assert (config.unet_lora_rank, config.vae_lora_rank) == (0, 0)


@pytest.mark.parametrize("name", ["sd21", "tiny"])
@pytest.mark.parametrize("scale", [16, 32])
def test_config_json_round_trips(name, scale):
    config = build_config(name, scale, unet_lora_rank=2, tile=64, base_model="s3://b/sd21")
    data = json.loads(config.to_json())
    assert data["scale"] == scale and data["dfrm"]["latent_width"] == config.dfrm.latent_width
    assert TADMConfig.from_dict(data) == config


def test_decoder_keep_width_is_saved_only_when_set():
    """Configs saved before the field existed read as the official layout, with the same JSON."""
    wide = build_config("tiny", 32)
    assert wide.dfrm.decoder_keep_width and not build_config("sd21", 32).dfrm.decoder_keep_width
    narrow = build_config("tiny", 32, dfrm=dataclasses.replace(wide.dfrm, decoder_keep_width=False))
    assert "decoder_keep_width" not in json.loads(narrow.to_json())["dfrm"]
    assert json.loads(wide.to_json())["dfrm"]["decoder_keep_width"] is True
    assert TADMConfig.from_dict(json.loads(wide.to_json())) == wide


def test_overrides_do_not_leak_into_the_presets():
    before = json.dumps(PRESETS, default=str, sort_keys=True)
    build_config("tiny", 16, tile=32, tile_stride=16, vae_lora_rank=4)
    assert json.dumps(PRESETS, default=str, sort_keys=True) == before
    assert build_config("tiny", 16).tile == 96


def test_bad_preset_scale_and_config_values_raise_value_errors():
    with pytest.raises(ValueError, match="unknown preset 'sd15'.*sd21.*tiny"):
        build_config("sd15")
    for scale in (4, 8, 24, 64):
        with pytest.raises(ValueError, match=f"scale must be one of .*got {scale}"):
            build_config("tiny", scale)
    with pytest.raises(ValueError, match="tile_stride"):
        build_config("tiny", 16, tile=32, tile_stride=48)
    with pytest.raises(ValueError, match="multiples of 8"):
        build_config("tiny", 32, tile=30, tile_stride=10)
    config = build_config("tiny", 16)
    with pytest.raises(ValueError, match="prediction_type"):
        dataclasses.replace(
            config, scheduler=dataclasses.replace(config.scheduler, prediction_type="sample")
        )
    data = json.loads(config.to_json())
    with pytest.raises(ValueError, match=r"unknown config fields \['colour'\]"):
        TADMConfig.from_dict({**data, "colour": "red"})
