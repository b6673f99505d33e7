"""TADM (tadm/model.py): the public API, checkpoints, identity, validation, the sd21 preset."""

import dataclasses
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def test_nan_or_infinite_pixels_are_refused():
    """NaN passes a range check (every comparison with it is False): it would give a black LR."""
    model = tiny()
    for bad in (float("nan"), float("inf"), -float("inf")):
        hr = image(64, 64)
        hr[0, 1, 5, 7] = bad
        with pytest.raises(ValueError, match="hr has NaN or infinite values"):
            model.downscale(hr)


def test_empty_batches_arrays_and_non_integer_sizes_and_regions_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"hr is an empty batch \(B = 0\)"):
        model.downscale(torch.rand(0, 3, 64, 64))
    with pytest.raises(TypeError, match="hr must be a torch tensor .* got ndarray"):
        model.downscale(image(64, 64).numpy())
    lr = model.downscale(image(64, 80))
    with pytest.raises(ValueError, match=r"lr is an empty batch \(B = 0\)"):
        model.upscale(lr[:0], (64, 80))
    with pytest.raises(TypeError, match="lr must be a torch tensor .* got ndarray"):
        model.upscale(lr.numpy(), (64, 80))
    for size in [(64.0, 80), (63.9, 79.5), (64,), (64, 80, 3), 64, "ab"]:
        with pytest.raises(ValueError, match=r"size must be 2 integers \(H, W\), got "):
            model.upscale(lr, size)
    for region in [(10.5, 10, 20, 20), (10, 10, 20), (0, 0, 8, 8, 1), (0, 0, True, 8)]:
        with pytest.raises(ValueError, match=r"region must be 4 integers \(x, y, w, h\), got "):
            model.upscale(lr, (64, 80), region=region)
    # Integers of any kind (numpy's, a list) are integers.
    whole = model.upscale(lr, (np.int64(64), 80), region=[0, 0, np.int32(80), 64])
    assert torch.equal(whole, model.upscale(lr, (64, 80)))


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


def test_a_model_cast_to_half_precision_is_not_saved(tmp_path):
    """Its weights are rounded: saved, they would be another model than the id on its LRs."""
    model = tiny()
    model_id = model.model_id
    model.to_precision("bf16")
    with pytest.raises(ValueError, match=f"cast to bf16: .* another model than {model_id}"):
        model.save_pretrained(tmp_path / "half")
    assert not (tmp_path / "half").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A breakage: config.json becomes `change(its parsed content)`."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(change(config)))

    return edit


def without(key: str) -> Callable[[dict], dict]:
    return lambda config: {k: v for k, v in config.items() if k != key}


BROKEN_CHECKPOINTS = {
    "truncated weights": (
        lambda folder: truncate(folder / "model.safetensors"),
        r"model.safetensors is truncated or not a safetensors file \(.*incomplete metadata",
    ),
    "empty weights": (
        lambda folder: (folder / "model.safetensors").write_bytes(b""),
        "model.safetensors is truncated or not a safetensors file",
    ),
    "no weights": (
        lambda folder: (folder / "model.safetensors").unlink(),
        "has no model.safetensors",
    ),
    "x16 weights, scale 32 config": (
        edit_config(lambda c: {**c, "scale": 32}),
        r"model.safetensors does not match config.json \(scale 32\): \d+ missing \(dfrm\.",
    ),
    "weights of another width": (
        edit_config(lambda c: {**c, "tpm": {**c["tpm"], "hidden": 32}}),
        r"does not match config.json .*of another shape \(tpm\..* \[64\] in the file, \[32\]",
    ),
    "not JSON": (
        lambda folder: (folder / "config.json").write_text("{scale: 16"),
        "config.json is not valid JSON",
    ),
    "a JSON list": (
        edit_config(lambda c: [1, 2]),
        "config.json is not a TADM config: the config must be a JSON object, got list",
    ),
    "unknown nested key": (
        edit_config(lambda c: {**c, "dfrm": {**c["dfrm"], "foo": 1}}),
        r"unknown config fields \['dfrm.foo'\]; known: \['dfrm.decoder_keep_width', ",
    ),
    "nested section not an object": (
        edit_config(lambda c: {**c, "tpm": [1]}),
        "config section 'tpm' must be a JSON object, got list",
    ),
    "no scale": (
        edit_config(without("scale")),
        r"the config lacks the required fields \['scale'\]",
    ),
    "float scale": (edit_config(lambda c: {**c, "scale": 16.0}), "scale must be int, got 16.0"),
    "string scale": (edit_config(lambda c: {**c, "scale": "16"}), "scale must be int, got '16'"),
    "bool rank": (
        edit_config(lambda c: {**c, "unet_lora_rank": True}),
        "unet_lora_rank must be int, got True",
    ),
    "string nested value": (
        edit_config(lambda c: {**c, "tpm": {**c["tpm"], "t_max": "200"}}),
        "tpm.t_max must be float, got '200'",
    ),
    "vae config without its blocks": (
        edit_config(lambda c: {**c, "vae": without("block_out_channels")(c["vae"])}),
        r"the vae config lacks \['block_out_channels'\]",
    ),
    "negative width": (
        edit_config(lambda c: {**c, "dfrm": {**c["dfrm"], "latent_width": -3}}),
        "config.json describes no model that can be built .*negative dimension",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN_CHECKPOINTS, ids=list(BROKEN_CHECKPOINTS))
def test_a_broken_checkpoint_is_a_value_error_naming_it_and_the_problem(
    tiny_model, tmp_path, breakage
):
    folder = Path(shutil.copytree(tiny_model, tmp_path / "ckpt"))
    TADM.from_pretrained(str(folder))  # it loads before it is broken
    breaks, problem = BROKEN_CHECKPOINTS[breakage]
    breaks(folder)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(repr(str(folder)))}.*{problem}"):
        TADM.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "ckpt"
    tiny(unet_lora_rank=4, vae_lora_rank=2).save_pretrained(folder)
    return folder


BROKEN_ADAPTERS = {
    "another rank": (
        edit_config(lambda c: {**c, "unet_lora_rank": 8}),
        r"the adapter in unet_lora/ does not fit the LoRA rank 8 of config.json \(size mismatch",
    ),
    "truncated adapter": (
        lambda folder: truncate(folder / "vae_decoder_lora" / "adapter_model.safetensors"),
        "vae_decoder_lora/adapter_model.safetensors is truncated or not a safetensors file",
    ),
    "no adapter": (
        lambda folder: shutil.rmtree(folder / "unet_lora"),
        "has no unet_lora/adapter_model.safetensors",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN_ADAPTERS, ids=list(BROKEN_ADAPTERS))
def test_a_broken_lora_adapter_is_a_value_error_naming_it(lora_checkpoint, tmp_path, breakage):
    folder = Path(shutil.copytree(lora_checkpoint, tmp_path / "ckpt"))
    breaks, problem = BROKEN_ADAPTERS[breakage]
    breaks(folder)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(repr(str(folder)))}.*{problem}"):
        TADM.from_pretrained(str(folder))


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
