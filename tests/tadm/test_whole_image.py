"""Algorithm 1 inference (the "unet" tiling of TADM.downscale/upscale): E, the DFRM and D on the
whole image or on chunks within the latent budget, TPM and UNet per tile in batches."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tadm import TADM, build_config
from tadm.modules.dfrm import from_uint8
from tadm.tiling import Blender, chunk_grid, tile_grid

SIZE = 128  # HR pixels: a 32 x 32 latent for tiny (VAE factor 4)
TILE, STRIDE = 16, 8  # latent: a 3 x 3 tile grid on 32 x 32


def smooth_image(size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def randomize_f(model: TADM) -> None:
    """F's dense blocks end in zero convs (F starts as the identity): give them weights so F^-1
    has its full receptive field."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.dfrm.inv_module.named_parameters():
            if "conv5" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.fixture(scope="module")
def model() -> TADM:
    torch.manual_seed(0)
    config = dataclasses.replace(build_config("tiny", 16), tile=TILE, tile_stride=STRIDE)
    model = TADM.from_config(config).eval()
    model.tiling = "unet"
    randomize_f(model)
    return model


@pytest.fixture(scope="module")
def lr(model) -> torch.Tensor:
    return model.downscale(smooth_image())


def test_chunk_grid_is_the_whole_latent_when_it_fits_else_overlapping_chunks():
    assert len(chunk_grid(32, 32, 32 * 32, 4, 4)) == 1
    chunks = chunk_grid(100, 60, 40 * 40, 4, 4)
    assert {(c.h, c.w) for c in chunks} == {(40, 40)}
    assert chunks == tile_grid(100, 60, 40, 32)  # 2 x 4 = 8 pixels of overlap
    assert chunk_grid(100, 60, 5, 4, 4)[0].h == 12  # at least 2 * margin + step on a side


def test_one_tile_gives_the_same_result_with_either_tiling():
    torch.manual_seed(0)
    unet_tiling = TADM.from_preset("tiny", 16).eval()  # default tiles: one covers 128 x 128
    unet_tiling.tiling = "unet"
    every = TADM.from_config(unet_tiling.config).eval()
    every.load_state_dict(unet_tiling.state_dict())
    assert every.tiling == "all"  # the default
    hr = smooth_image(seed=1)
    lr = unet_tiling.downscale(hr)
    assert torch.equal(every.downscale(hr), lr)
    a, t_a = unet_tiling.upscale(lr, (SIZE, SIZE), return_timesteps=True)
    b, t_b = every.upscale(lr, (SIZE, SIZE), return_timesteps=True)
    assert (a - b).abs().max() < 1e-5 and torch.equal(t_a, t_b)  # blending weights cancel


def test_upscale_is_tiles_enhanced_one_by_one_blended_in_latent_space(model, lr):
    """The batched UNet calls give what one call per tile gives; the result is independent of
    how many tiles go into one call."""
    with torch.no_grad():
        z_hat = model.dfrm_upscale(from_uint8(lr))  # (1, C, 32, 32): the whole LR
        blender = Blender(1, model.config.latent_channels, (0, 0, 32, 32), torch.device("cpu"))
        for tile in tile_grid(32, 32, TILE, STRIDE):
            z0_hat, _ = model.enhance(z_hat[..., tile.y : tile.y + TILE, tile.x : tile.x + TILE])
            blender.add(z0_hat, tile.y, tile.x)
        expected = ((model.decode_latent(blender.result()) + 1) / 2).clamp(0, 1)
    calls: list[int] = []
    hook = model.unet.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    try:
        for budget, batches in ((10**6, [9]), (32 * 32, [4, 4, 1])):
            model.max_latent_pixels = budget  # still the whole 32 x 32 latent for D
            calls.clear()
            out = model.upscale(lr, (SIZE, SIZE))
            assert calls == batches
            assert (out - expected).abs().max() < 1e-5, budget
    finally:
        hook.remove()
        model.max_latent_pixels = 256 * 256


def test_z_hat_of_windows_equals_the_whole_images(model):
    """dfrm_context covers the receptive field of F^-1 and G_d: cores read with it give the
    whole image's z_hat, and one LR pixel changes z_hat no farther than it."""
    lr = torch.randint(0, 256, (1, 3, 24, 40), generator=torch.Generator().manual_seed(1))
    y = from_uint8(lr.to(torch.uint8))
    r = model.scale // model.config.vae_factor
    box = (0, 0, 24 * r, 40 * r)
    with torch.no_grad():
        whole = model._z_hat(y, box)
        model.max_latent_pixels = (8 * r) ** 2  # cores of 8 x 8 LR pixels
        try:
            windows = model._z_hat(y, box)
        finally:
            model.max_latent_pixels = 256 * 256
        assert (windows - whole).abs().max() < 1e-5
        poked = y.clone()
        poked[..., 12, 20] += 0.5
        changed = (model.dfrm_upscale(poked) - whole).abs().amax(1)[0] > 0  # (96, 160)
    rows, cols = changed.nonzero().T
    ctx = model.dfrm_context
    assert rows.min() >= (12 - ctx) * r and rows.max() < (13 + ctx) * r
    assert cols.min() >= (20 - ctx) * r and cols.max() < (21 + ctx) * r
    assert cols.max() - cols.min() > 2 * r  # it does reach beyond the pixel


def test_chunked_decode_regions_equal_the_full_restore_and_use_the_cache(model, lr, monkeypatch):
    monkeypatch.setattr("tadm.model.CHUNK_MARGIN", 4)
    model.max_latent_pixels = 16 * 16  # D in a 3 x 3 grid of 16 x 16 chunks, stride 8
    try:
        full, full_t = model.upscale(lr, (SIZE, SIZE), return_timesteps=True)
        assert not full_t.isnan().any()
        tiles: list[int] = []
        hook = model.unet.register_forward_hook(lambda _m, a, _o: tiles.append(a[0].shape[0]))
        try:
            latents: dict = {}
            x, y, w, h = 2, 3, 20, 10  # HR pixels: inside the first chunk (latent 0..16)
            region, t_map = model.upscale(
                lr, (SIZE, SIZE), region=(x, y, w, h), return_timesteps=True, latents=latents
            )
            assert region.shape == (1, 3, h, w)
            assert (region - full[..., y : y + h, x : x + w]).abs().max() < 1e-5
            needed = ~t_map[0].isnan()  # the tiles the first chunk needs: rows/cols 0..1 of 3
            assert needed[:2, :2].all() and not needed[2].any() and not needed[:, 2].any()
            assert torch.allclose(t_map[0][needed], full_t[0][needed])
            assert sum(tiles) == 4 and len(latents) == 4
            again = model.upscale(lr, (SIZE, SIZE), region=(x, y, w, h), latents=latents)
            assert sum(tiles) == 4 and torch.equal(again, region)  # all from the cache
        finally:
            hook.remove()
    finally:
        model.max_latent_pixels = 256 * 256


def test_chunked_downscale_stays_close_to_the_whole_image(model):
    hr = smooth_image(seed=2)
    whole = model.downscale(hr)
    model.max_latent_pixels = 20 * 20
    try:
        chunked = model.downscale(hr)
    finally:
        model.max_latent_pixels = 256 * 256
    assert chunked.shape == whole.shape == (1, 3, 8, 8)
    assert (chunked.int() - whole.int()).abs().float().mean() < 2.0


def test_tiling_and_budget_are_validated(model, lr):
    model.tiling = "some"
    try:
        with pytest.raises(ValueError, match="tiling must be one of"):
            model.upscale(lr, (SIZE, SIZE))
    finally:
        model.tiling = "unet"
    model.max_latent_pixels = 0
    try:
        with pytest.raises(ValueError, match="max_latent_pixels must be positive"):
            model.downscale(smooth_image())
    finally:
        model.max_latent_pixels = 256 * 256


def test_every_tile_tiling_batches_its_tiles_with_the_same_result(model, lr):
    """The "all" tiling: tiles of E, G_e and F, of the UNet and of D go in batches; one tile
    per call gives the same LR and restore."""
    model.tiling = "all"
    hr = smooth_image(seed=3)
    try:
        model.max_latent_pixels = 10**6  # the 9 tiles in one call
        batched_lr, batched = model.downscale(hr), model.upscale(lr, (SIZE, SIZE))
        model.max_latent_pixels = 1  # one tile per call
        single_lr, single = model.downscale(hr), model.upscale(lr, (SIZE, SIZE))
    finally:
        model.tiling, model.max_latent_pixels = "unet", 256 * 256
    assert (batched_lr.int() - single_lr.int()).abs().max() <= 1  # rounding ties at most
    assert (batched - single).abs().max() < 1e-5
