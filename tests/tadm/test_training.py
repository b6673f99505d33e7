"""The training stages without Ray: which parameters train, and that each stage learns."""

import numpy as np
import pytest
import torch

from tadm import TADM
from tadm.training import RandomCrops, StageConfig, stage_loss, trainable_parameters


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-8, 9, size=(96, 80, 3)), axis=1)
    return [
        np.clip(smooth + 128, 0, 255).astype(np.uint8),
        rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
    ]


def names(model: TADM, stage: str) -> set[str]:
    trainable_parameters(model, stage)
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


def test_each_stage_trains_its_parts():
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16)
    assert names(model, "vae") == {"vae"}
    assert names(model, "dfrm") == {"dfrm"}
    assert names(model, "enhance") == {"unet", "vae", "tpm", "scheduler"}
    trainable_parameters(model, "enhance")
    assert not any(p.requires_grad for p in model.vae.encoder.parameters())
    assert names(model, "joint") == {"unet", "vae", "tpm", "scheduler", "dfrm"}


def test_lora_stage_trains_adapters_and_conv_in_only():
    import dataclasses

    from tadm.presets import build_config

    config = dataclasses.replace(build_config("tiny", 16), unet_lora_rank=4, vae_lora_rank=2)
    model = TADM.from_config(config)
    trainable_parameters(model, "enhance")
    unet = {n for n, p in model.unet.named_parameters() if p.requires_grad}
    assert unet and all("lora_" in n or n.startswith("conv_in.") for n in unet)
    vae = {n for n, p in model.vae.named_parameters() if p.requires_grad}
    assert vae and all("lora_" in n and n.startswith("decoder.") for n in vae)


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage"):
        StageConfig("warmup")


@pytest.mark.parametrize("stage", ["vae", "dfrm", "enhance", "joint"])
def test_loss_falls_on_a_fixed_batch(stage, images):
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16).train()
    x = RandomCrops(images, 32, seed=1).batch(2)
    lr = 3e-4 if stage == "joint" else 1e-3  # joint trains everything, at a lower rate
    cfg = StageConfig(stage, lr=lr)
    optimizer = torch.optim.Adam(trainable_parameters(model, stage), lr=lr)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same quantization noise every step
        loss, logs = stage_loss(model, x, stage, cfg, model.scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses


def test_colour_augmentation_reorders_and_scales_the_channels():
    """Each colour-augmented crop is the plain crop (same seed: same place and flips) with its
    channels in some order, each scaled by a gain in 0.8-1.2; the orders vary."""
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, size=(40, 50, 3)).astype(np.uint8)  # no clipping at 1.2x
    orders = set()
    for seed in range(12):
        plain = (RandomCrops([base], 24, seed=seed).batch(1)[0] + 1) * 127.5
        coloured = (RandomCrops([base], 24, seed=seed, colour=True).batch(1)[0] + 1) * 127.5
        order = []
        for channel in coloured:
            ratios = [(channel / source).flatten() for source in plain]
            matches = [i for i, r in enumerate(ratios) if r.max() - r.min() < 1e-4]
            assert len(matches) == 1
            assert 0.8 <= ratios[matches[0]].mean() <= 1.2
            order.append(matches[0])
        assert sorted(order) == [0, 1, 2]
        orders.add(tuple(order))
    assert len(orders) > 2


def test_random_crops_pad_small_images_and_stay_in_range(images):
    crops = RandomCrops(images, 64, seed=0).batch(8)
    assert crops.shape == (8, 3, 64, 64)
    assert crops.min() >= -1 and crops.max() <= 1
    with pytest.raises(ValueError, match="no training images"):
        RandomCrops([], 64)
