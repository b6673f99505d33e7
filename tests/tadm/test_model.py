"""TADM (tadm/model.py): the public API, checkpoints, identity, validation, the sd21 preset."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from tadm import TADM, TADMOutput, build_config
from tadm.presets import SD21_UNET, TINY_UNET, TINY_VAE


def tiny(scale: int = 16, seed: int = 0, **overrides) -> TADM:
    torch.manual_seed(seed)
    config = dataclasses.replace(build_config("tiny", scale), **overrides)
    return TADM.from_config(config).eval()


def image(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same_state(a: TADM, b: TADM) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def randomize_lora(model: TADM) -> None:
    """LoRA B starts at zero; give the adapters an effect so round trips are meaningful."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# ---- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [16, 32])
@pytest.mark.parametrize("size", [(97, 131), "scale", (64, 33)], ids=["97x131", "NxN", "64x33"])
def test_shapes_for_both_scales_and_odd_sizes(scale, size):
    model = tiny(scale)
    height, width = (scale, scale) if size == "scale" else size
    hr = image(height, width, batch=2)
    lr = model.downscale(hr)
    assert lr.dtype == torch.uint8
    assert lr.shape == (2, 3, math.ceil(height / scale), math.ceil(width / scale))
    restored = model.upscale(lr, (height, width))
    assert restored.shape == (2, 3, height, width)
    assert restored.dtype == torch.float32
    assert restored.min() >= 0 and restored.max() <= 1


def test_forward_returns_every_intermediate():
    model = tiny().train()
    x = image(64, 96) * 2 - 1
    out = model(x)
    assert isinstance(out, TADMOutput)
    c, f = model.config.latent_channels, model.config.vae_factor
    latent = (1, c, 64 // f, 96 // f)
    assert out.z.shape == out.z_hat.shape == out.z_hat_direct.shape == latent
    assert out.z_lr.shape == out.y.shape == out.y_q.shape == (1, 3, 4, 6)
    assert out.z0_hat.shape == latent and out.x_hat.shape == x.shape
    assert out.t.shape == (1,)
    stage1 = model(x, enhance=False)
    assert stage1.t is None and stage1.z0_hat is None and stage1.x_hat is None


# ---- validation ---------------------------------------------------------------------------------


def test_validation_errors_name_the_argument():
    model = tiny()
    good = image(64, 64)
    with pytest.raises(ValueError, match="hr"):
        model.downscale((good * 255).to(torch.uint8))  # dtype
    with pytest.raises(ValueError, match="hr"):
        model.downscale(torch.rand(1, 4, 64, 64))  # channels
    with pytest.raises(ValueError, match="hr"):
        model.downscale(torch.rand(3, 64, 64))  # no batch dimension
    with pytest.raises(ValueError, match="hr values"):
        model.downscale(good * 2 - 1)  # range [-1, 1] instead of [0, 1]
    with pytest.raises(ValueError, match="smaller than the scale 16"):
        model.downscale(image(15, 64))
    lr = model.downscale(good)
    with pytest.raises(ValueError, match="lr"):
        model.upscale(lr.float(), (64, 64))
    with pytest.raises(ValueError, match="size 64x80 .* needs an LR of 4x5"):
        model.upscale(lr, (64, 80))
    with pytest.raises(ValueError, match="size"):
        model.upscale(lr, (0, 64))
    for region in [(0, 0, 65, 10), (-1, 0, 4, 4), (10, 10, 0, 5), (60, 60, 5, 5)]:
        with pytest.raises(ValueError, match="region"):
            model.upscale(lr, (64, 64), region=region)
    with pytest.raises(ValueError, match="unknown preset 'sd99'"):
        TADM.from_preset("sd99")
    for scale in (8, 24, 64):
        with pytest.raises(ValueError, match="scale"):
            TADM.from_preset("tiny", scale)
    with pytest.raises(ValueError, match="precision"):
        model.to_precision("int8")
    with pytest.raises(ValueError, match="unknown model"):
        TADM.from_pretrained("no-such-model-or-folder")


# ---- checkpoints and identity ----------------------------------------------------------------


def test_save_load_round_trips_bit_exactly(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["scale"] == 16 and config["tile"] == 96
    reloaded = TADM.from_pretrained(str(tmp_path / "ckpt"))
    assert_same_state(model, reloaded)
    assert reloaded.model_id == model.model_id
    hr = image(48, 80)
    lr = model.downscale(hr)
    assert torch.equal(reloaded.downscale(hr), lr)
    assert torch.equal(reloaded.upscale(lr, (48, 80)), model.upscale(lr, (48, 80)))


def test_model_id_is_stable_and_tracks_every_weight(tmp_path):
    model = tiny()
    model_id = model.model_id
    assert len(model_id) == 16 and model_id == model.model_id
    assert tiny().model_id == model_id  # same seed, another instance
    assert tiny(seed=1).model_id != model_id
    assert tiny(scale=32).model_id != tiny(scale=16).model_id
    assert tiny(tile=64).model_id != model_id  # config counts too
    model.save_pretrained(tmp_path / "a")
    assert TADM.from_pretrained(str(tmp_path / "a")).model_id == model_id
    state = model.state_dict()
    names = [next(k for k in state if k.startswith(f"{part}.")) for part in
             ("dfrm", "tpm", "scheduler", "unet", "vae")] + ["null_prompt"]  # fmt: skip
    for name in names:
        with torch.no_grad():
            state[name].view(-1)[0] += 1e-6
            assert model.model_id != model_id, name
            state[name].view(-1)[0] -= 1e-6
    with torch.no_grad():  # a single weight in the middle of a large tensor
        state["unet.conv_out.weight"].view(-1)[17] *= -1
    assert model.model_id != model_id


def test_lora_config_round_trips_its_adapters_the_peft_way(tmp_path):
    model = tiny(unet_lora_rank=4, vae_lora_rank=2)
    randomize_lora(model)
    model.save_pretrained(tmp_path / "lora")
    for sub, rank in (("unet_lora", 4), ("vae_decoder_lora", 2)):
        adapter_config = json.loads((tmp_path / "lora" / sub / "adapter_config.json").read_text())
        assert adapter_config["r"] == rank
        weights = load_file(str(tmp_path / "lora" / sub / "adapter_model.safetensors"))
        assert weights and all("lora_" in k for k in weights)
    vae_weights = load_file(
        str(tmp_path / "lora" / "vae_decoder_lora" / "adapter_model.safetensors")
    )
    assert all(k.startswith("decoder.") for k in vae_weights)  # the encoder has no adapter
    main = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert not any("lora_" in k for k in main)
    reloaded = TADM.from_pretrained(str(tmp_path / "lora"))
    assert_same_state(model, reloaded)
    assert reloaded.model_id == model.model_id
    lr = model.downscale(image(64, 64))
    assert torch.equal(reloaded.upscale(lr, (64, 64)), model.upscale(lr, (64, 64)))
    plain = TADM.from_config(dataclasses.replace(model.config, unet_lora_rank=0, vae_lora_rank=0))
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if "lora_" not in k}, strict=False
    )
    assert not torch.equal(plain.eval().upscale(lr, (64, 64)), model.upscale(lr, (64, 64)))


@pytest.fixture
def base_folder(tmp_path):
    """A tiny diffusers base model folder, v_prediction, with a stored null prompt."""
    torch.manual_seed(3)
    folder = tmp_path / "base"
    AutoencoderKL.from_config(TINY_VAE).save_pretrained(folder / "vae")
    UNet2DConditionModel.from_config(TINY_UNET).save_pretrained(folder / "unet")
    DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", clip_sample=False,
    ).save_pretrained(folder / "scheduler")  # fmt: skip
    null_prompt = torch.randn(1, 4, TINY_UNET["cross_attention_dim"])
    save_file({"null_prompt": null_prompt}, str(folder / "null_prompt.safetensors"))
    return folder, null_prompt


def test_base_model_folder_supplies_weights_and_is_not_copied(base_folder, tmp_path):
    folder, null_prompt = base_folder
    model = TADM.from_preset("tiny", 16, base_model=str(folder)).eval()
    assert model.config.scheduler.prediction_type == "v_prediction"
    assert model.scheduler.prediction_type == "v_prediction"
    assert torch.equal(model.null_prompt, null_prompt)
    saved_unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    unet_state = model.unet.state_dict()
    assert all(torch.equal(unet_state[k], v) for k, v in saved_unet.items())
    saved_vae = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(model.vae.state_dict()["decoder.conv_out.weight"],
                       saved_vae["decoder.conv_out.weight"])  # fmt: skip

    model.save_pretrained(tmp_path / "ckpt")
    written = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    frozen = [k for k in written if k.startswith(("vae.", "unet.")) and "conv_in" not in k]
    assert frozen == []  # the frozen base stays in the base folder
    assert "unet.conv_in.weight" in written  # trained fully, so it is saved
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["base_model"] == str(folder)
    reloaded = TADM.from_pretrained(str(tmp_path / "ckpt"))
    assert_same_state(model, reloaded)
    assert reloaded.model_id == model.model_id
    lr = model.downscale(image(64, 64))
    assert torch.equal(reloaded.upscale(lr, (64, 64)), model.upscale(lr, (64, 64)))


def test_base_model_and_checkpoint_as_file_uris(base_folder, tmp_path):
    folder, _ = base_folder
    torch.manual_seed(0)  # DFRM, TPM and S_learned start fresh
    model = TADM.from_preset("tiny", 16, base_model=f"file://{folder}").eval()
    assert model.config.scheduler.prediction_type == "v_prediction"
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = TADM.from_pretrained(f"file://{tmp_path / 'ckpt'}")
    assert reloaded.model_id == model.model_id
    # The model id ignores where the base model lives.
    shutil.copytree(folder, tmp_path / "elsewhere")
    torch.manual_seed(0)
    moved = TADM.from_preset("tiny", 16, base_model=str(tmp_path / "elsewhere"))
    assert moved.model_id == model.model_id


# ---- the paper's configuration ------------------------------------------------------------------


@pytest.mark.slow
@torch.no_grad()
def test_sd21_builds_from_its_configs_and_runs_one_small_forward():
    torch.manual_seed(0)
    model = TADM.from_preset("sd21", 16).eval()
    unet_config = json.loads(json.dumps(dict(model.unet.config)))  # tuples -> lists
    assert {k: unet_config[k] for k in SD21_UNET} == SD21_UNET
    assert model.vae.config.scaling_factor == 0.18215
    assert model.null_prompt.shape == (1, 77, 1024)
    assert model.unet.peft_config["default"].r == 48
    assert model.vae.peft_config["default"].r == 16
    assert model.size_multiple == 64
    x = image(64, 64) * 2 - 1  # one 8x8 latent: a single small UNet call
    out = model(x)
    assert out.z.shape == out.z0_hat.shape == (1, 4, 8, 8)
    assert out.y_q.shape == (1, 3, 4, 4)
    assert out.x_hat.shape == x.shape and torch.isfinite(out.x_hat).all()
    assert 10 <= out.t.item() <= 200
