"""LoRA through peft on the UNet and the VAE decoder (tadm/lora.py)."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from tadm import lora
from tadm.official import OFFICIAL_UNET_LORA_TARGETS
from tadm.presets import TINY_UNET, TINY_VAE


def adapted(module) -> set[str]:
    return {name for name, m in module.named_modules() if hasattr(m, "lora_A")}


def unet_output(unet):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, TINY_UNET["in_channels"], 8, 8, generator=g)
    context = torch.randn(1, 4, TINY_UNET["cross_attention_dim"], generator=g)
    with torch.no_grad():
        return unet(z, torch.tensor([20.0]), encoder_hidden_states=context).sample


def randomize_lora_b(module, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(TINY_UNET).eval()


def test_unet_lora_targets_the_official_modules(unet):
    assert set(lora.UNET_TARGETS) == set(OFFICIAL_UNET_LORA_TARGETS)
    lora.add_unet_lora(unet, rank=4)
    names = adapted(unet)
    assert "conv_out" in names and "conv_in" not in names  # conv_in trains fully instead
    assert "down_blocks.0.downsamplers.0.conv" in names
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q" in names
    assert "down_blocks.0.resnets.0.conv1" in names
    assert not any(n.startswith("time_embedding") for n in names)
    config = unet.peft_config[lora.ADAPTER]
    assert config.r == 4 and config.lora_alpha == 4  # scale alpha / r = 1


def test_vae_lora_touches_only_the_decoder():
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    lora.add_vae_decoder_lora(vae, rank=2)
    names = adapted(vae)
    assert names and all(n.startswith("decoder.") for n in names)
    assert {"decoder.conv_in", "decoder.conv_out", "decoder.up_blocks.0.upsamplers.0.conv"} <= names
    assert "decoder.up_blocks.0.resnets.0.conv1" in names


def test_gaussian_init_leaves_the_base_model_unchanged(unet):
    before = unet_output(unet)
    lora.add_unet_lora(unet, rank=4)
    assert torch.equal(unet_output(unet), before)
    randomize_lora_b(unet)
    assert not torch.allclose(unet_output(unet), before)


def test_adapters_round_trip_the_peft_way(unet, tmp_path):
    lora.add_unet_lora(unet, rank=4)
    randomize_lora_b(unet)
    expected = unet_output(unet)
    lora.save_adapter(unet, tmp_path / "unet_lora")
    assert json.loads((tmp_path / "unet_lora" / "adapter_config.json").read_text())["r"] == 4
    assert (tmp_path / "unet_lora" / "adapter_model.safetensors").is_file()

    torch.manual_seed(0)
    fresh = UNet2DConditionModel.from_config(TINY_UNET).eval()
    lora.add_unet_lora(fresh, rank=4)
    assert not torch.equal(unet_output(fresh), expected)
    lora.load_adapter(fresh, tmp_path / "unet_lora")
    assert torch.equal(unet_output(fresh), expected)


def test_loading_an_adapter_of_another_model_fails(unet, tmp_path):
    lora.add_unet_lora(unet, rank=4)
    lora.save_adapter(unet, tmp_path / "unet_lora")
    vae = AutoencoderKL.from_config(TINY_VAE)
    lora.add_vae_decoder_lora(vae, rank=4)
    with pytest.raises(ValueError, match="unexpected keys"):
        lora.load_adapter(vae, tmp_path / "unet_lora")


def test_is_lora_key():
    assert lora.is_lora_key("unet.conv_out.lora_A.default.weight")
    assert not lora.is_lora_key("unet.conv_out.base_layer.weight")
