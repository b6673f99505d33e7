"""scripts/ship_checkpoint.py: adapters merged, fp16 weights, the same model."""

import copy
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tadm import TADM

SCRIPT = Path(__file__).parents[2] / "scripts" / "ship_checkpoint.py"
_spec = importlib.util.spec_from_file_location("ship_checkpoint", SCRIPT)
ship_checkpoint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship_checkpoint)


@pytest.fixture(scope="module")
def adapted():
    """A tiny model whose UNet and decoder adapters change what it computes."""
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16, unet_lora_rank=2, vae_lora_rank=2).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; trained adapters have moved it
                param.normal_(0, 0.2)
    return model


def outputs(model: TADM) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(1, model.config.latent_channels, 16, 16, generator=gen)
    lr = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        return [model.decode_latent(z), model.enhance(z)[0], model.upscale(lr, (64, 64))]


def test_merging_keeps_what_the_model_computes(adapted):
    plain = ship_checkpoint.merged(copy.deepcopy(adapted))
    assert plain.config.unet_lora_rank == 0 and plain.config.vae_lora_rank == 0
    assert not any("lora_" in key for key in plain.state_dict())
    for a, b in zip(outputs(adapted), outputs(plain), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # the adapters mattered: the base weights alone compute something else
    base = TADM.from_preset("tiny", 16).eval()
    base.load_state_dict(
        {
            k.replace(".base_layer.", "."): v
            for k, v in adapted.state_dict().items()
            if "lora_" not in k
        }  # fmt: skip
    )
    assert not torch.allclose(outputs(base)[0], outputs(adapted)[0], atol=1e-3)


def test_the_shipped_folder_is_one_fp16_file_that_loads(adapted, tmp_path):
    adapted.save_pretrained(tmp_path / "trained")
    subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "trained"), str(tmp_path / "shipped")],
        check=True,
        timeout=300,
    )
    files = sorted(p.name for p in (tmp_path / "shipped").iterdir())
    assert files == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "shipped" / "config.json").read_text())
    assert config["unet_lora_rank"] == 0 and config["vae_lora_rank"] == 0
    stored = load_file(str(tmp_path / "shipped" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    shipped = TADM.from_pretrained(str(tmp_path / "shipped"))
    decoded, shipped_decoded = outputs(adapted)[0], outputs(shipped)[0]
    assert (decoded - shipped_decoded).abs().mean() < 1e-2  # fp16 rounding only


def test_a_checkpoint_with_a_base_model_is_refused():
    model = TADM.from_preset("tiny", 16)
    model.config = dataclasses.replace(model.config, base_model="/base")
    with pytest.raises(ValueError, match="base model"):
        ship_checkpoint.merged(model)
