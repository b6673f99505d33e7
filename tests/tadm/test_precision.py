"""Inference precision (tadm/precision.py, TADM.to_precision): which weights are cast, the
dtypes the API returns, the model id, and the rules per device (CPU: fp32 default, bf16 on
request, fp16 refused)."""

import dataclasses
import logging

import pytest
import torch

from tadm import TADM, build_config, config
from tadm.precision import (
    DECODER_PARTS,
    HALF_PARTS,
    PRECISIONS,
    cast_parts,
    default_precision,
    dtype_of,
    resolve_precision,
)

SIZE = (48, 80)


def tiny(seed: int = 0) -> TADM:
    torch.manual_seed(seed)
    return TADM.from_config(build_config("tiny", 16)).eval()


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def dtypes(model: TADM, names: tuple[str, ...]) -> set[torch.dtype]:
    return {p.dtype for name in names for p in model.get_submodule(name).parameters()}


def test_bf16_casts_the_heavy_parts_and_keeps_f_tpm_and_scheduler_in_fp32():
    model = tiny()
    model_id = model.model_id
    assert model.precision == "fp32"
    assert model.to_precision("bf16") is model and model.precision == "bf16"
    assert dtypes(model, HALF_PARTS + DECODER_PARTS) == {torch.bfloat16}
    assert dtypes(model, ("dfrm.inv_module", "tpm", "scheduler")) == {torch.float32}
    assert model.null_prompt.dtype == torch.float32
    assert model.model_id == model_id  # the id of the float32 weights it was cast from
    assert model.to_precision("bf16") is model  # the same precision again: nothing to do


def test_fp16_keeps_the_vae_decoder_in_fp32():
    model = tiny()
    cast_parts(model, "fp16")  # what to_precision("fp16") does on CUDA
    assert dtypes(model, HALF_PARTS) == {torch.float16}
    assert dtypes(model, DECODER_PARTS) == {torch.float32}
    assert dtype_of(model.unet) == torch.float16


def test_bf16_round_trip_returns_the_promised_dtypes_close_to_fp32():
    reference, model = tiny(), tiny().to_precision("bf16")
    hr = image()
    lr32, lr16 = reference.downscale(hr), model.downscale(hr)
    assert lr16.dtype == torch.uint8 and lr16.shape == lr32.shape
    levels = (lr16.int() - lr32.int()).abs()
    assert levels.float().mean() < 1.0 and (levels <= 2).float().mean() > 0.9
    restored = model.upscale(lr32, SIZE)
    assert restored.dtype == torch.float32 and restored.shape == (1, 3, *SIZE)
    assert restored.min() >= 0 and restored.max() <= 1
    assert (restored - reference.upscale(lr32, SIZE)).abs().mean() < 0.02


def test_cpu_rules_and_one_way_casts():
    assert default_precision("cpu") == "fp32" and default_precision("cuda") == "fp16"
    model = tiny()
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        model.to_precision("fp16")
    assert model.precision == "fp32" and dtype_of(model.unet) == torch.float32  # untouched
    with pytest.raises(ValueError, match="precision must be one of"):
        model.to_precision("int8")
    model.to_precision("bf16")
    with pytest.raises(ValueError, match="already cast to bf16: load it again"):
        model.to_precision("fp32")


def test_resolve_precision_fills_the_device_default_and_checks_it():
    assert tuple(PRECISIONS) == config.PRECISIONS  # the CLI's choices, named without torch
    assert resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision(None, torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")


def test_a_cast_logs_nothing():
    """diffusers' own `to(dtype)` warns (on its own logger, which does not propagate) about
    float32 modules the UNet does not have."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        tiny().to_precision("bf16")
    finally:
        diffusers_logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []


def test_fp32_model_id_still_tracks_the_weights():
    """Only a cast keeps the id; an fp32 model still hashes its weights each time."""
    model = tiny()
    other = TADM.from_config(dataclasses.replace(model.config, tile=64)).eval()
    other.load_state_dict(model.state_dict())
    assert other.model_id != model.model_id  # config counts
    with torch.no_grad():
        model.unet.conv_out.bias.add_(1e-3)
    assert model.model_id != tiny().model_id
