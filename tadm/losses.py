"""Training losses (paper Eq. 6-8 and 11).

Perceptual term: LPIPS (tadm/lpips.py) when its VGG16 weights are given by path; nothing is
downloaded. Without them, a weight-free substitute: (1 - SSIM) plus an L1 loss on Sobel
gradients, which rewards structure and sharp edges the way the perceptual terms do. Which one a
run used is recorded in its training log.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tadm.metrics import ssim_terms
from tadm.model import TADMOutput

SUBSTITUTE = "ssim+gradient (weight-free substitute for LPIPS)"
Perceptual = Callable[[Tensor, Tensor], Tensor]


def bicubic_down(x: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downscaling, the guidance target of Eq. 7."""
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    return F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)


def rescaling_loss(
    out: TADMOutput, x: Tensor, scale: int, lambda_gui: float
) -> tuple[Tensor, dict]:
    """Eq. 8: L_rec (Eq. 6, both chains) + lambda_gui * L_gui (Eq. 7). x in [-1, 1]."""
    z = out.z.detach()
    l_rec = (out.z_hat_direct - z).abs().mean() + (out.z_hat - z).abs().mean()
    l_gui = (out.y - bicubic_down(x, scale)).abs().mean()
    return l_rec + lambda_gui * l_gui, {"l_rec": l_rec.item(), "l_gui": l_gui.item()}


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of (B, 3, H, W) images in [0, 1], per channel (tadm/metrics.py's Gaussian
    window), in their dtype and differentiable."""
    luminance, contrast_structure = ssim_terms(a, b, 1.0)
    return (luminance * contrast_structure).mean()


def _sobel(x: Tensor) -> Tensor:
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device)
    kernels = torch.stack((k, k.t()))[:, None].repeat(3, 1, 1, 1).to(x.dtype)  # (6, 1, 3, 3)
    return F.conv2d(x, kernels, groups=3, padding=1)


def perceptual_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Weight-free perceptual substitute on images in [-1, 1]."""
    a, b = (x_hat.clamp(-1, 1) + 1) / 2, (x + 1) / 2
    return (1 - ssim(a, b)) + (_sobel(a) - _sobel(b)).abs().mean()


def enhancement_loss(
    out: TADMOutput, x: Tensor, lambda_perc: float, perceptual: Perceptual = perceptual_loss
) -> tuple[Tensor, dict]:
    """Eq. 11: |x_hat - x|_1 + lambda_perc * perceptual. x in [-1, 1]."""
    return pixel_loss(out.x_hat, x, lambda_perc, perceptual)


def pixel_loss(
    x_hat: Tensor, x: Tensor, lambda_perc: float, perceptual: Perceptual = perceptual_loss
) -> tuple[Tensor, dict]:
    """|x_hat - x|_1 + lambda_perc * perceptual; the perceptual term is not computed at 0."""
    l1 = (x_hat - x).abs().mean()
    if not lambda_perc:
        return l1, {"l1": l1.item()}
    perc = perceptual(x_hat, x)
    return l1 + lambda_perc * perc, {"l1": l1.item(), "perceptual": perc.item()}


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = F.mse_loss(a.float(), b.float()).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()
