"""The quality figures of training validation and the model card."""

import numpy as np
import pytest
import torch

from tadm import TADM
from tadm.evaluation import bicubic_round_trip, evaluate, latent_path_psnr
from tadm.images import to_uint8_image
from tadm.metrics import psnr


@pytest.fixture(scope="module")
def model(tiny_model) -> TADM:
    return TADM.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-5, 6, size=(72, 100, 3)), axis=1) + 128
    return np.clip(smooth, 0, 255).astype(np.uint8)  # not a multiple of the model's size step


def test_the_latent_path_breakdown_agrees_with_the_full_evaluation(model, image):
    path = latent_path_psnr(model, image)
    full = evaluate(model, image)
    assert path["bicubic"] == pytest.approx(full["bicubic_psnr"])
    assert path["vae_bound"] == pytest.approx(full["vae_psnr"])  # the same D(E(x))
    assert all(np.isfinite(v) for v in path.values()), path
    # one forward pass without tiling: the restore of an image smaller than a tile is the same
    assert path["enhanced"] == pytest.approx(full["psnr"], abs=0.05)


def test_thumbnail_psnr_compares_the_lr_png_with_the_bicubic_lr(model, image):
    full = evaluate(model, image, vae_bound=False)
    lr = model.downscale(torch.tensor(image).permute(2, 0, 1)[None].float() / 255)
    bicubic_lr, _ = bicubic_round_trip(torch.tensor(image).permute(2, 0, 1)[None] / 255, 16)
    # the bicubic LR of 72x100 at x16 is 4x6
    expected = psnr(lr[0, :, :4, :6].permute(1, 2, 0).numpy(), to_uint8_image(bicubic_lr))
    assert full["thumbnail_psnr"] == pytest.approx(expected)
    assert 5 < full["thumbnail_psnr"] < 100


def test_the_breakdown_refuses_a_model_in_training_mode(model, image):
    with pytest.raises(ValueError, match="eval mode"):
        latent_path_psnr(model.train(), image)
    model.eval()
