"""DFRM (tadm/modules/dfrm.py): 8-bit quantization, shapes of both chains, the official layout."""

import pytest
import torch

from tadm.modules.common import ConvBlock
from tadm.modules.dfrm import DFRM, from_uint8, quantize, to_uint8

STEP = 2 / 255  # one 8-bit step on [-1, 1]


def on_grid(y: torch.Tensor) -> bool:
    levels = (y + 1) * 127.5
    return bool(((levels - levels.round()).abs() < 1e-4).all())


def test_every_uint8_value_round_trips_exactly():
    lr = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    y = from_uint8(lr)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), lr)
    assert torch.equal(quantize(y, training=False), y)  # grid values are fixed points
    assert torch.equal(to_uint8(quantize(y, training=False)), lr)


def test_rounding_quantization_is_on_the_8_bit_grid_and_nearest():
    torch.manual_seed(0)
    y = torch.rand(2, 3, 17, 19) * 2.4 - 1.2  # some values outside [-1, 1]
    y_q = quantize(y, training=False)
    assert on_grid(y_q)
    assert y_q.min() >= -1 and y_q.max() <= 1
    assert (y_q - y.clamp(-1, 1)).abs().max() <= STEP / 2 + 1e-6
    assert torch.equal(quantize(y_q, training=False), y_q)
    assert torch.equal(from_uint8(to_uint8(y_q)), y_q)


def test_uniform_noise_relaxation_stays_within_half_a_step_and_passes_gradients():
    torch.manual_seed(0)
    y = (torch.rand(4, 3, 16, 16) * 1.8 - 0.9).requires_grad_()
    y_q = quantize(y, training=True)
    noise = y_q - y
    assert noise.abs().max() <= STEP / 2 + 1e-6
    assert noise.abs().mean() > STEP / 8  # it is noisy, not rounded
    assert not on_grid(y_q.detach())
    y_q.sum().backward()
    assert torch.allclose(y.grad, torch.ones_like(y))  # identity gradient inside [-1, 1]


@pytest.mark.parametrize("scale", [16, 32])
def test_shapes_of_both_chains(scale):
    torch.manual_seed(0)
    dfrm = DFRM(scale, latent_channels=4, vae_factor=8, pixel_width=4, latent_width=16,
                num_res_blocks=1, inn_blocks=2, inn_growth=8)  # fmt: skip
    h, w = 2 * scale, 3 * scale
    x = torch.rand(2, 3, h, w) * 2 - 1  # (B, 3, H, W)
    z = torch.randn(2, 4, h // 8, w // 8)  # (B, 4, H/8, W/8)
    z_lr = dfrm.g_e(x, z)
    assert z_lr.shape == (2, 3, h // scale, w // scale)
    assert dfrm.downscale(x, z).shape == (2, 3, h // scale, w // scale)
    assert dfrm.g_d(z_lr).shape == z.shape
    assert dfrm.upscale(quantize(dfrm.inv_module(z_lr), False)).shape == z.shape


def test_official_layout_keys():
    """Names follow the official DFRM, so its state dicts load unchanged (see test_official)."""
    keys = DFRM(16).state_dict().keys()
    assert "down_module.1.downsample.1.weight" in keys  # PixelUnshuffle + 1x1 conv
    assert "latent_module.10.conv_in.weight" in keys  # after PixelUnshuffle at index 9
    assert "fusing_module.8.conv_in.weight" in keys  # ConvBlock(144 -> 3)
    assert "final_module.10.conv_in.weight" in keys  # after PixelShuffle at index 9
    assert "inv_module.11.H.conv5.weight" in keys  # 12 coupling blocks
    assert DFRM(16).state_dict()["fusing_module.8.conv_in.weight"].shape == (3, 144, 3, 3)


def test_decoder_keep_width_widens_g_d_after_each_pixel_shuffle():
    """Tiny's 32x: 3 pixel shuffles quarter 192 channels to 3 before the latent, unless kept."""
    kw = dict(latent_channels=16, vae_factor=4, latent_width=192, num_res_blocks=1)
    narrow, wide = DFRM(32, **kw), DFRM(32, **kw, decoder_keep_width=True)
    convs = {
        name: [m.conv_in.in_channels for m in d.final_module if isinstance(m, ConvBlock)]
        for name, d in (("narrow", narrow), ("wide", wide))
    }
    assert convs == {"narrow": [3, 48, 12, 3], "wide": [3, 48, 48, 48]}
    z_lr = torch.randn(1, 3, 2, 3)
    assert wide.g_d(z_lr).shape == narrow.g_d(z_lr).shape == (1, 16, 16, 24)
    assert wide.state_dict().keys() == narrow.state_dict().keys()  # same names, wider convs


@pytest.mark.parametrize("scale", [8, 12, 24])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        DFRM(scale)
