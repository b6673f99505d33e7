"""tadm.official: the official release's checkpoints load and compute the same function.

The reference is tests/data/official/ (its README.md says what it holds): test vectors computed
by the official modules under a deterministic weight rule. The fast tests load into a TADM whose
DFRM, TPM and S_learned have the sd21 widths but whose UNet and VAE are small; one slow test
loads into a real sd21.
"""

import copy
import dataclasses
import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file

from tadm import TADM, build_config
from tadm import official as off
from tadm.modules.dfrm import quantize
from tadm.presets import SD21_UNET, SD21_VAE, TINY_UNET, TINY_VAE

OFFICIAL = Path(__file__).resolve().parents[1] / "data" / "official"
LATENT = 4
SMALL_UNET = dict(TINY_UNET, in_channels=LATENT, out_channels=LATENT)
# Four levels: the sd21 layout's VAE factor 8, with the tiny widths.
SMALL_VAE = dict(
    TINY_VAE,
    latent_channels=LATENT,
    block_out_channels=[32, 32, 64, 64],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
UNET_RANK, VAE_RANK = 4, 2


@pytest.fixture(scope="module")
def official_keys() -> dict:
    return json.loads((OFFICIAL / "official_state_dict_keys.json").read_text())


@pytest.fixture(scope="module")
def vectors() -> dict:
    return torch.load(OFFICIAL / "official_vectors.pt", weights_only=True)


def rule_weights(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The vectors' weight rule (tests/data/official/README.md): randn seeded by crc32 of the key,
    scaled by 1/sqrt(fan-in) for weights of 2 or more dims and by 0.01 otherwise."""
    state = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if len(shape) >= 2:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = torch.randn(shape, generator=g) * 0.01
    return state


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def small_sd21(scale: int, unet_rank: int = UNET_RANK, vae_rank: int = VAE_RANK):
    """(TADM with sd21 DFRM/TPM/S_learned widths and a small UNet/VAE, the base UNet, the base
    VAE), the bases copied before our adapters were added."""
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(SMALL_VAE)
    unet = UNet2DConditionModel.from_config(SMALL_UNET)
    bases = copy.deepcopy(unet), copy.deepcopy(vae)
    config = dataclasses.replace(
        build_config("sd21", scale),
        vae=SMALL_VAE,
        unet=SMALL_UNET,
        null_prompt_tokens=4,
        unet_lora_rank=unet_rank,
        vae_lora_rank=vae_rank,
    )
    return TADM(config, vae, unet), *bases


def official_tadm_checkpoint(official_keys: dict, unet=None, vae=None) -> dict:
    """An official TADM checkpoint (`TADM.save_model` layout) for the given base UNet/VAE:
    their adapters added the official way (lora_alpha left at 8, adapter "vae_skip" on the VAE),
    every LoRA weight random (lora_B too, so the adapters matter) and a changed conv_in."""
    ckpt = {
        "rank_unet": UNET_RANK,
        "rank_vae": VAE_RANK,
        "unet_lora_target_modules": off.OFFICIAL_UNET_LORA_TARGETS,
        "vae_lora_target_modules": off.OFFICIAL_VAE_LORA_TARGETS,
        "state_dict_timemapping": rule_weights(official_keys["TimeMapping"]),
        "state_dict_refiner": rule_weights(official_keys["Refiner"]),
    }
    if unet is not None:
        unet.add_adapter(
            LoraConfig(
                r=UNET_RANK,
                init_lora_weights="gaussian",
                target_modules=off.OFFICIAL_UNET_LORA_TARGETS,
            )
        )
        vae.add_adapter(
            LoraConfig(
                r=VAE_RANK,
                init_lora_weights="gaussian",
                target_modules=off.OFFICIAL_VAE_LORA_TARGETS,
            ),
            adapter_name="vae_skip",
        )
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in (unet, vae):
                for name, p in module.named_parameters():
                    if "lora_B" in name:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            unet.conv_in.weight.add_(torch.randn(unet.conv_in.weight.shape, generator=g) * 0.1)
        ckpt["state_dict_unet"] = {
            k: v.clone() for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k
        }
        ckpt["state_dict_vae"] = {k: v.clone() for k, v in vae.state_dict().items() if "lora" in k}
    return ckpt


@pytest.fixture(scope="module", params=[16, 32], ids=["x16", "x32"])
def converted(request, official_keys):
    """A small sd21 model holding the official DFRM (at the param's scale), TPM and S_learned."""
    scale = request.param
    model, _, _ = small_sd21(scale)
    off.apply_official(
        model,
        dfrm=rule_weights(official_keys[f"DFRM_x{scale}"]),
        tadm=official_tadm_checkpoint(official_keys),
    )
    return scale, model


# ---- the official test vectors --------------------------------------------------------------


@torch.no_grad()
def test_dfrm_forward_matches_official_vectors(converted, vectors):
    scale, model = converted
    v = vectors[f"DFRM_x{scale}"]
    z_lr = model.dfrm.g_e(v["hr"], v["latent"])
    y = model.dfrm.inv_module(z_lr)
    lr = quantize(y, training=False)
    assert lr.shape == v["lr"].shape == (1, 3, 256 // scale, 256 // scale)
    # The LR image is identical, except where a value sits within float error of a rounding
    # boundary (then it may differ by one 8-bit step).
    levels = (y.clamp(-1, 1) + 1) * 127.5
    differ = lr != v["lr"]
    near_boundary = (levels - levels.floor() - 0.5).abs() < 1e-3
    assert bool((near_boundary | ~differ).all())
    assert ((lr - v["lr"]).abs()[differ] <= 1 / 127.5 + 1e-6).all()
    assert rel_error(model.dfrm.g_d(z_lr), v["z_forward"]) < 1e-4


@torch.no_grad()
def test_dfrm_reverse_matches_official_vectors(converted, vectors):
    scale, model = converted
    v = vectors[f"DFRM_x{scale}"]
    z_reverse = model.dfrm.upscale(v["lr"])
    assert z_reverse.shape == v["z_reverse"].shape == (1, LATENT, 32, 32)
    assert rel_error(z_reverse, v["z_reverse"]) < 1e-4


@torch.no_grad()
def test_time_mapping_matches_official_vectors(converted, vectors):
    _, model = converted
    v = vectors["TimeMapping"]
    t = model.tpm(v["z_hat"])
    assert t.shape == (2,)
    assert rel_error(t, v["t"]) < 1e-4
    assert bool(((t >= 10) & (t <= 200)).all())


@torch.no_grad()
def test_refiner_matches_official_vectors(converted, vectors):
    _, model = converted
    v = vectors["Refiner"]
    out = model.scheduler.learned(v["z_hat"], v["eps"], v["t"])
    assert rel_error(out, v["out"]) < 1e-4


# ---- the converter: formats, LoRA, validation --------------------------------------------------


def test_lora_and_conv_in_compute_the_official_function(official_keys):
    """Official adapters (alpha 8, other adapter names) loaded into ours give the same UNet and
    VAE-decoder outputs."""
    model, official_unet, official_vae = small_sd21(16)
    ckpt = official_tadm_checkpoint(official_keys, official_unet, official_vae)
    off.apply_official(model, tadm=ckpt)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, LATENT, 16, 16, generator=g)
    context = torch.randn(1, 4, SMALL_UNET["cross_attention_dim"], generator=g)
    t = torch.tensor([37.5])
    with torch.no_grad():
        expected = official_unet.eval()(z, t, encoder_hidden_states=context).sample
        actual = model.unet(z, t, encoder_hidden_states=context).sample
        assert rel_error(actual, expected) < 1e-5
        assert torch.equal(model.unet.conv_in.weight, ckpt["state_dict_unet"]["conv_in.weight"])
        expected = official_vae.eval().decode(z).sample
        actual = model.vae.decode(z).sample
        assert rel_error(actual, expected) < 1e-5


def test_converted_model_round_trips_through_save_pretrained(official_keys, tmp_path):
    model, official_unet, official_vae = small_sd21(16)
    off.apply_official(
        model,
        dfrm=rule_weights(official_keys["DFRM_x16"]),
        tadm=official_tadm_checkpoint(official_keys, official_unet, official_vae),
    )
    model.save_pretrained(tmp_path / "converted")
    assert (tmp_path / "converted" / "unet_lora" / "adapter_model.safetensors").is_file()
    reloaded = TADM.from_pretrained(str(tmp_path / "converted"))
    assert reloaded.model_id == model.model_id
    state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert state.keys() == reloaded_state.keys()
    assert all(torch.equal(state[k], reloaded_state[k]) for k in state)
    z = torch.randn(1, LATENT, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(reloaded.enhance(z)[0], model.enhance(z)[0])


def test_dfrm_checkpoint_formats(official_keys, tmp_path):
    """The official `save_model` wrapper, a bare state dict, other wrappers with DDP or
    torch.compile prefixes, and safetensors all give the same state dict."""
    state = rule_weights(official_keys["DFRM_x32"])
    torch.save({"state_dict": state}, tmp_path / "model_dfrm.pkl")
    save_file(state, str(tmp_path / "dfrm.safetensors"))
    sources = [
        off.read_checkpoint(tmp_path / "model_dfrm.pkl"),
        off.read_checkpoint(tmp_path / "dfrm.safetensors"),
        state,
        {"params_ema": {f"module.{k}": v for k, v in state.items()}, "iter": 7},
        {"model": {"state_dict": {f"_orig_mod.{k}": v.half() for k, v in state.items()}}},
    ]
    sample = ["down_module.0.conv_in.weight", "inv_module.11.H.conv5.bias"]
    for i, source in enumerate(sources):
        assert off.dfrm_scale(source) == 32
        converted = off.convert_dfrm(source)
        assert converted.keys() == state.keys()
        for k in sample:
            assert converted[k].dtype == torch.float32
            assert torch.allclose(converted[k], state[k], rtol=1e-3, atol=1e-5)
            assert i == 4 or torch.equal(converted[k], state[k])  # the fp16 one is rounded


def test_flat_safetensors_tadm_checkpoint(official_keys, tmp_path):
    ckpt = official_tadm_checkpoint(official_keys)
    flat = {
        f"{section}.{k}": v
        for section in ("state_dict_timemapping", "state_dict_refiner")
        for k, v in ckpt[section].items()
    }
    save_file(flat, str(tmp_path / "tadm.safetensors"))
    data = off.read_tadm_checkpoint(tmp_path / "tadm.safetensors")
    assert (
        off.convert_refiner(data["state_dict_refiner"]).keys() == ckpt["state_dict_refiner"].keys()
    )
    assert off.tadm_lora_ranks(data) == (0, 0)


class Exploit:
    """Unpickling this would create a file: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_unsafe_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_dfrm.pkl"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Exploit(marker)}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        off.read_checkpoint(path, "dfrm")
    with pytest.raises(ValueError, match="dfrm: refusing"):
        off.load_official(dfrm=path)
    with pytest.raises(ValueError, match="tadm: refusing"):
        off.read_tadm_checkpoint(path)
    assert not marker.exists()


def test_mismatches_raise_value_errors_naming_keys(official_keys, tmp_path):
    state = rule_weights(official_keys["DFRM_x16"])
    missing = {k: v for k, v in state.items() if k != "inv_module.3.F.conv5.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['inv_module.3.F.conv5.weight'\]"):
        off.convert_dfrm(missing)
    with pytest.raises(ValueError, match="unexpected keys.*'extra.weight'"):
        off.convert_dfrm({**state, "extra.weight": torch.zeros(1)})
    wrong = {**state, "final_module.0.conv_in.bias": torch.zeros(7)}
    with pytest.raises(
        ValueError, match=r"final_module.0.conv_in.bias \(7,\) \(expected \(128,\)\)"
    ):
        off.convert_dfrm(wrong)
    with pytest.raises(ValueError, match="scale 32 was given"):
        off.convert_dfrm(state, scale=32)
    with pytest.raises(ValueError, match="no state dict found"):
        off.convert_dfrm({"epoch": 3})
    with pytest.raises(ValueError, match="does not exist"):
        off.read_checkpoint(tmp_path / "nope.pt", "dfrm")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="dfrm: .* not a valid safetensors file"):
        off.read_checkpoint(tmp_path / "bad.safetensors", "dfrm")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="dfrm: refusing to load"):
        off.read_checkpoint(tmp_path / "bad.pt", "dfrm")
    tpm = rule_weights(official_keys["TimeMapping"])
    with pytest.raises(ValueError, match="state_dict_timemapping.*time_predict.fuse_mlp.9.bias"):
        off.convert_time_mapping({k: v for k, v in tpm.items() if "fuse_mlp.9.bias" not in k})
    with pytest.raises(ValueError, match="not an official TADM checkpoint"):
        off.read_tadm_checkpoint({"foo": 1})


def test_lora_mismatches_raise(official_keys):
    model, official_unet, official_vae = small_sd21(16)
    ckpt = official_tadm_checkpoint(official_keys, official_unet, official_vae)
    unet_state = dict(ckpt["state_dict_unet"])
    dropped = next(k for k in unet_state if "lora_A" in k)
    del unet_state[dropped]
    with pytest.raises(ValueError, match="state_dict_unet.*missing keys"):
        off.apply_official(model, tadm={**ckpt, "state_dict_unet": unet_state})
    with pytest.raises(ValueError, match="rank_unet is 8 but its LoRA weights have rank 4"):
        off.tadm_lora_ranks({**ckpt, "rank_unet": 8})
    vae_state = {**ckpt["state_dict_vae"], "decoder.skip_conv_1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="skip_conv"):
        off.apply_official(model, tadm={**ckpt, "state_dict_vae": vae_state})
    no_lora, _, _ = small_sd21(16, unet_rank=0, vae_rank=0)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        off.apply_official(no_lora, tadm=ckpt)
    tiny = TADM.from_preset("tiny", 16)
    with pytest.raises(ValueError, match="sd21 layout"):
        off.apply_official(tiny, tadm=ckpt)


# ---- end to end into a real sd21 -------------------------------------------------------------


def official_sd21_checkpoint(official_keys: dict, unet_rank: int, vae_rank: int) -> dict:
    """An official TADM checkpoint for the real SD 2.1 UNet/VAE: keys and shapes from meta-device
    modules with the official adapters, values from the vectors' weight rule."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD21_UNET)
        unet.add_adapter(LoraConfig(r=unet_rank, target_modules=off.OFFICIAL_UNET_LORA_TARGETS))
        vae = AutoencoderKL.from_config(SD21_VAE)
        vae.add_adapter(
            LoraConfig(r=vae_rank, target_modules=off.OFFICIAL_VAE_LORA_TARGETS),
            adapter_name="vae_skip",
        )

    def keys(module, keep):
        return {k: list(v.shape) for k, v in module.state_dict().items() if keep(k)}

    return {
        "rank_unet": unet_rank,
        "rank_vae": vae_rank,
        "state_dict_unet": rule_weights(keys(unet, lambda k: "lora" in k or "conv_in" in k)),
        "state_dict_vae": rule_weights(keys(vae, lambda k: "lora" in k)),
        "state_dict_timemapping": rule_weights(official_keys["TimeMapping"]),
        "state_dict_refiner": rule_weights(official_keys["Refiner"]),
    }


@pytest.mark.slow
@torch.no_grad()
def test_save_official_into_real_sd21(official_keys, vectors, tmp_path):
    ckpt = official_sd21_checkpoint(official_keys, unet_rank=48, vae_rank=16)
    torch.save(ckpt, tmp_path / "model_sr.pkl")
    torch.save({"state_dict": rule_weights(official_keys["DFRM_x16"])}, tmp_path / "model_dfrm.pkl")
    out = tmp_path / "converted"
    model = off.save_official(out, tmp_path / "model_dfrm.pkl", tmp_path / "model_sr.pkl")
    assert model.scale == 16 and model.config.unet == SD21_UNET
    assert (model.config.unet_lora_rank, model.config.vae_lora_rank) == (48, 16)

    v = vectors["DFRM_x16"]
    assert rel_error(model.dfrm.upscale(v["lr"]), v["z_reverse"]) < 1e-4
    assert rel_error(model.tpm(vectors["TimeMapping"]["z_hat"]), vectors["TimeMapping"]["t"]) < 1e-4
    r = vectors["Refiner"]
    assert rel_error(model.scheduler.learned(r["z_hat"], r["eps"], r["t"]), r["out"]) < 1e-4
    key = "down_blocks.0.attentions.0.proj_in"
    lora_b = model.unet.get_submodule(key).lora_B["default"].weight
    official_b = ckpt["state_dict_unet"][f"{key}.lora_B.default.weight"]
    assert torch.allclose(lora_b, official_b * 8 / 48)
    conv_in = ckpt["state_dict_unet"]["conv_in.weight"]
    assert torch.equal(model.unet.conv_in.weight, conv_in)
    upsampler = model.vae.get_submodule("decoder.up_blocks.0.upsamplers.0.conv")
    assert hasattr(upsampler, "lora_A")

    config = json.loads((out / "config.json").read_text())
    assert config["scale"] == 16 and config["unet_lora_rank"] == 48
    with safe_open(str(out / "unet_lora" / "adapter_model.safetensors"), "pt") as f:
        assert torch.allclose(f.get_tensor(f"{key}.lora_B.weight"), official_b * 8 / 48)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("unet.conv_in.weight"), conv_in)
        name = "dfrm.inv_module.0.F.conv5.weight"
        assert torch.equal(f.get_tensor(name), model.dfrm.state_dict()[name[5:]])
