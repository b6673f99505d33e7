"""Reconstruction quality: PSNR and SSIM between a restored image and its source.

Both compare (H, W, 3) uint8 arrays, i.e. what a user gets back from restore as a PNG.
SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), averaged over the three
channels and over the valid window positions, as skimage's structural_similarity(...,
gaussian_weights=True, use_sample_covariance=False) computes it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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
    x = torch.from_numpy(restored.astype(np.float64)).permute(2, 0, 1)[:, None]  # (3, 1, H, W)
    y = torch.from_numpy(source.astype(np.float64)).permute(2, 0, 1)[:, None]
    taps = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(taps**2) / (2 * SIGMA**2))
    g = g / g.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid positions only
        t = F.conv2d(t, g.view(1, 1, 1, WINDOW))
        return F.conv2d(t, g.view(1, 1, WINDOW, 1))

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())
