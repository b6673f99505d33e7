"""Quality of a model on whole images, against bicubic: used by training validation and the
model card.

Every figure compares (H, W, 3) uint8 images, i.e. what a user gets back as a PNG.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tadm import TADM
from tadm.images import to_float_batch, to_images, to_uint8_image
from tadm.losses import bicubic_down
from tadm.metrics import psnr, ssim
from tadm.model import pad_to
from tadm.png import png_bytes


def scores(prefix: str, out: np.ndarray, img: np.ndarray) -> dict[str, float]:
    return {f"{prefix}psnr": psnr(out, img), f"{prefix}ssim": ssim(out, img) or float("nan")}


@torch.inference_mode()
def evaluate(model: TADM, img: np.ndarray, vae_bound: bool = True) -> dict[str, float]:
    """Restore (downscale, LR PNG, upscale) vs bicubic down + PNG + bicubic up at the model's
    scale; the VAE-only bound (encode, decode; paper Table 4); bpp of both LRs as PNG (pixels
    only, without an archive's text chunks); and
    thumbnail_psnr, the LR PNG against the bicubic LR (how true its colours are as a thumbnail)."""
    h, w = img.shape[:2]
    hr = to_float_batch(img)
    lr = model.downscale(hr)
    bic_lr, bicubic = bicubic_round_trip(hr, model.scale)
    lr_pixels = to_images(lr)[0]
    result = {
        **scores("", to_uint8_image(model.upscale(lr, size=(h, w))), img),
        **scores("bicubic_", to_uint8_image(bicubic), img),
        "bpp": 8 * len(png_bytes(lr_pixels)) / (h * w),
        "bicubic_bpp": 8 * len(png_bytes(to_uint8_image(bic_lr))) / (h * w),
        "thumbnail_psnr": thumbnail_psnr(lr_pixels, to_uint8_image(bic_lr)),
    }
    if vae_bound:
        result.update(scores("vae_", vae_round_trip(model, hr), img))
    return result


def thumbnail_psnr(lr: np.ndarray, bicubic_lr: np.ndarray) -> float:
    """The LR PNG against the bicubic LR, over the bicubic LR's pixels (an LR padded up to the
    model's size step has a row or column more)."""
    return psnr(lr[: bicubic_lr.shape[0], : bicubic_lr.shape[1]], bicubic_lr)


def bicubic_round_trip(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline: bicubic down, 8-bit LR (as a PNG stores it), bicubic up to hr's size.
    hr (1, 3, H, W) in [0, 1] -> (LR (1, 3, H/s, W/s), restored (1, 3, H, W)), both in [0, 1]."""
    lr = (bicubic_down(hr, scale) * 255).round().clamp(0, 255) / 255
    return lr, F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False)


def vae_round_trip(model: TADM, hr: torch.Tensor) -> np.ndarray:
    """D(E(x)) without rescaling: the upper bound of any TADM on this VAE."""
    h, w = hr.shape[-2:]
    m = model.size_multiple
    x = pad_to(hr.to(model.device) * 2 - 1, -(-h // m) * m, -(-w // m) * m)
    return to_uint8_image((model.decode_latent(model.encode_latent(x))[..., :h, :w] + 1) / 2)


@torch.inference_mode()
def latent_path_psnr(model: TADM, img: np.ndarray) -> dict[str, float]:
    """PSNR after each step of the latent path, from one untiled forward pass (`model` in eval
    mode): where a model loses, as the model card's breakdown gives it.

    bicubic: the baseline. vae_bound: D(E(x)). vae_of_bicubic: D(E(bicubic round trip)), the
    VAE on a smooth image. no_f_no_q: D(G_d(z_lr)), without F and the 8-bit LR. lr_path:
    D(G_d(F^-1(Q(y)))), the LR PNG's path. enhanced: after the one-step enhancement (restore).
    """
    if model.training:
        raise ValueError("latent_path_psnr needs the model in eval mode (rounded 8-bit LR)")
    h, w = img.shape[:2]
    m = model.size_multiple

    def padded(t: torch.Tensor) -> torch.Tensor:
        return pad_to(t.to(model.device) * 2 - 1, -(-h // m) * m, -(-w // m) * m)

    def decoded(x: torch.Tensor) -> float:
        return psnr(to_uint8_image((x[..., :h, :w] + 1) / 2), img)

    hr = to_float_batch(img)
    _, bicubic = bicubic_round_trip(hr, model.scale)
    out = model(padded(hr), enhance=True)
    return {
        "bicubic": psnr(to_uint8_image(bicubic), img),
        "vae_bound": decoded(model.decode_latent(out.z)),
        "vae_of_bicubic": decoded(model.decode_latent(model.encode_latent(padded(bicubic)))),
        "no_f_no_q": decoded(model.decode_latent(out.z_hat_direct)),
        "lr_path": decoded(model.decode_latent(out.z_hat)),
        "enhanced": decoded(out.x_hat),
    }


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
