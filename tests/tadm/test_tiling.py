"""Tiled inference (tadm/tiling.py and TADM.downscale/upscale, Algorithm 1)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tadm import TADM
from tadm.modules.dfrm import from_uint8, quantize, to_uint8
from tadm.tiling import Blender, gaussian_weights, grid_shape, tile_grid, tile_starts

SIZE = 128  # HR pixels
TILE_PX, STRIDE_PX = 64, 32  # small tiles in HR pixels: a 3 x 3 grid on 128 x 128


def smooth_image(size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


@pytest.fixture(scope="module")
def models() -> tuple[TADM, TADM]:
    """The same tiny weights, with the default tiles (one tile covers everything here) and with
    small tiles (several tiles). Both run every part per tile (the default "all" tiling; the
    "unet" tiling has its own tests in tests/tadm/test_whole_image.py)."""
    torch.manual_seed(0)
    whole = TADM.from_preset("tiny", 16).eval()
    f = whole.config.vae_factor
    small = dataclasses.replace(whole.config, tile=TILE_PX // f, tile_stride=STRIDE_PX // f)
    tiled = TADM.from_config(small).eval()
    tiled.load_state_dict(whole.state_dict())
    return whole, tiled


@pytest.fixture(scope="module")
def lr(models) -> torch.Tensor:
    return models[0].downscale(smooth_image())


@pytest.fixture(scope="module")
def tiled_restore(models, lr) -> tuple[torch.Tensor, torch.Tensor]:
    return models[1].upscale(lr, (SIZE, SIZE), return_timesteps=True)


# ---- helpers ------------------------------------------------------------------------------------


def test_tile_starts_cover_the_length_with_the_last_tile_flush():
    assert tile_starts(16, 96, 64) == [0]
    assert tile_starts(96, 96, 64) == [0]
    assert tile_starts(200, 96, 64) == [0, 64, 104]
    assert tile_starts(16, 8, 4) == [0, 4, 8]
    for length in range(8, 60):
        starts = tile_starts(length, 8, 4)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s : s + 8] = True
        assert covered.all() and starts[-1] + 8 == length
        assert all(b - a <= 4 for a, b in zip(starts, starts[1:], strict=False))


def test_tile_grid_is_row_major_and_matches_grid_shape():
    tiles = tile_grid(20, 12, 8, 4)
    assert grid_shape(20, 12, 8, 4) == (4, 2)
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(4) for c in range(2)]
    assert (tiles[-1].y, tiles[-1].x, tiles[-1].h, tiles[-1].w) == (12, 4, 8, 8)
    small = tile_grid(6, 5, 8, 4)  # smaller than a tile: one tile of the latent's size
    assert [(t.h, t.w) for t in small] == [(6, 5)]


def test_gaussian_weights_are_positive_symmetric_and_peak_in_the_middle():
    w = gaussian_weights(9, 6)
    assert w.shape == (9, 6) and bool((w > 0).all())
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w[4].max() == w.max() and w[0, 0] == w.min()


def test_blender_reproduces_a_constant_and_crops_to_its_window():
    blender = Blender(1, 2, (3, 5, 10, 7), torch.device("cpu"))  # window y0, x0, h, w
    assert blender.overlaps(0, 0, 4, 6) and not blender.overlaps(0, 0, 3, 6)
    for y, x in ((0, 0), (0, 6), (6, 0), (6, 6), (20, 20)):
        blender.add(torch.full((1, 2, 8, 8), 0.25), y, x)
    out = blender.result()
    assert out.shape == (1, 2, 10, 7)
    assert torch.allclose(out, torch.full_like(out, 0.25))


# ---- tiled inference ----------------------------------------------------------------------------


def test_upscale_with_one_tile_equals_the_untiled_chain(models, lr):
    model = models[0]
    hr = model.upscale(lr, (SIZE, SIZE))
    with torch.no_grad():
        z_hat = model.dfrm.upscale(from_uint8(lr))  # (1, C, SIZE / f, SIZE / f)
        z0_hat, _ = model.enhance(z_hat)
        expected = ((model.decode_latent(z0_hat) + 1) / 2).clamp(0, 1)
    assert hr.shape == expected.shape == (1, 3, SIZE, SIZE)
    assert (hr - expected).abs().max() < 1e-5


def test_downscale_with_one_tile_equals_the_untiled_chain(models):
    model, hr = models[0], smooth_image(seed=1)
    lr = model.downscale(hr)
    with torch.no_grad():
        x = hr * 2 - 1
        y = model.dfrm.downscale(x, model.encode_latent(x))
        expected = to_uint8(quantize(y, training=False))
    diff = (lr.int() - expected.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 0.01  # equal up to rounding ties


def test_tiles_leave_no_seam(models, lr, tiled_restore):
    """Across tile borders, the error against the one-tile restore and the step between
    neighbouring pixels are no larger than inside the tiles."""
    whole = models[0].upscale(lr, (SIZE, SIZE))
    tiled, t_map = tiled_restore
    assert t_map.shape == (1, 3, 3) and not t_map.isnan().any()
    assert t_map.unique().numel() > 1  # each tile has its own time step
    error = (tiled - whole).abs().mean(1)[0]  # (H, W)
    image = tiled.mean(1)[0]
    borders = {32, 64, 96}  # pixel rows/columns where tiles start or end
    for name, field in (("error", error), ("image", image)):
        for axis_field in (field, field.T):
            steps = (axis_field[:, 1:] - axis_field[:, :-1]).abs().mean(0)  # steps[j - 1]: j-1|j
            at_border = torch.stack([steps[j - 1] for j in sorted(borders)])
            inside = torch.stack([steps[j - 1] for j in range(1, SIZE) if j not in borders])
            assert at_border.max() <= inside.max(), name
            assert at_border.mean() <= 1.5 * inside.mean(), name


def test_region_equals_the_same_crop_of_the_full_restore(models, lr, tiled_restore):
    model = models[1]
    full, full_t = tiled_restore
    x, y, w, h = 5, 70, 30, 41  # inside tile rows 1-2 and tile columns 0-1 only
    region, t_map = model.upscale(lr, (SIZE, SIZE), region=(x, y, w, h), return_timesteps=True)
    assert region.shape == (1, 3, h, w)
    assert (region - full[..., y : y + h, x : x + w]).abs().max() < 1e-5
    needed = torch.zeros(3, 3, dtype=torch.bool)
    needed[1:, :2] = True  # tiles start at pixels 0, 32, 64 and span 64 px
    assert torch.equal(~t_map[0].isnan(), needed)
    assert torch.allclose(t_map[0][needed], full_t[0][needed])


def test_cached_latents_give_the_same_region_without_running_the_unet(models, lr, tiled_restore):
    model = models[1]
    full, full_t = tiled_restore
    calls: list[int] = []  # tiles through the UNet (several tiles go in one call)
    hook = model.unet.register_forward_hook(lambda _m, args, _o: calls.extend([1] * len(args[0])))
    try:
        latents: dict = {}
        x, y, w, h = 5, 70, 30, 41  # tiles (1..2, 0..1)
        first = model.upscale(lr, (SIZE, SIZE), region=(x, y, w, h), latents=latents)
        assert sorted(latents) == [(1, 0), (1, 1), (2, 0), (2, 1)] and len(calls) == 4
        again, t_map = model.upscale(
            lr, (SIZE, SIZE), region=(x, y, w, h), return_timesteps=True, latents=latents
        )
        assert len(calls) == 4  # every tile came from the cache
        assert torch.equal(again, first)
        assert (again - full[..., y : y + h, x : x + w]).abs().max() < 1e-5
        assert torch.allclose(t_map[0][1:, :2], full_t[0][1:, :2])
        model.upscale(lr, (SIZE, SIZE), region=(40, 70, 30, 41), latents=latents)
        assert len(calls) == 4 + 2 and len(latents) == 6  # only column 2 was new
    finally:
        hook.remove()
