"""Reconstruction quality: PSNR and SSIM between a restored image and its source, and the
Gaussian-window SSIM terms that the training loss and the bench's MS-SSIM build on.

psnr and ssim compare (H, W, 3) uint8 arrays, i.e. what a user gets back from restore as a PNG.
SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), averaged over the three
channels and over the valid window positions, as skimage's structural_similarity(...,
gaussian_weights=True, use_sample_covariance=False) computes it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW = 11
SIGMA = 1.5


def psnr(restored: np.ndarray, source: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    diff = restored.astype(np.float64) - source.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(restored: np.ndarray, source: np.ndarray) -> float | None:
    """Structural similarity in [-1, 1]; None when a side is shorter than the 11 px window."""
    if min(source.shape[:2]) < WINDOW:
        return None
    luminance, contrast_structure = ssim_terms(planes(restored), planes(source), 255.0)
    return float((luminance * contrast_structure).mean())


def planes(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, 1, H, W) float64 on 0..255, one plane per channel."""
    return torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[:, None]


def gaussian_blur(t: Tensor) -> Tensor:
    """Separable 11x11 Gaussian (sigma 1.5) of each channel of (B, C, H, W), valid positions
    only: (B, C, H - 10, W - 10), in t's dtype."""
    taps = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(taps**2) / (2 * SIGMA**2))
    g = (g / g.sum()).to(dtype=t.dtype, device=t.device)
    c = t.shape[1]
    t = F.conv2d(t, g.view(1, 1, 1, WINDOW).expand(c, 1, 1, WINDOW), groups=c)
    return F.conv2d(t, g.view(1, 1, WINDOW, 1).expand(c, 1, WINDOW, 1), groups=c)


def ssim_terms(x: Tensor, y: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """SSIM's luminance and contrast-structure maps of (B, C, H, W) images on 0..data_range,
    over the valid window positions; their product is the SSIM map. Differentiable."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = gaussian_blur(x), gaussian_blur(y)
    var_x = gaussian_blur(x * x) - mu_x**2
    var_y = gaussian_blur(y * y) - mu_y**2
    cov = gaussian_blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance, (2 * cov + c2) / (var_x + var_y + c2)
