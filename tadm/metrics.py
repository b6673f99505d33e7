"""Reconstruction quality: PSNR and SSIM between a restored image and its source, and the
Gaussian-window SSIM terms that the training loss and the bench's MS-SSIM build on.

psnr and ssim compare (H, W, 3) uint8 arrays, i.e. what a user gets back from restore as a PNG.
SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), averaged over the three
channels and over the valid window positions, as skimage's structural_similarity(...,
gaussian_weights=True, use_sample_covariance=False) computes it.

Both run over horizontal strips of about STRIP_PIXELS pixels (SSIM's strips overlap by the
window's 10 rows), so their memory is bounded whatever the image size: a whole 24 MP image in
float64 would need some 150 bytes per pixel for SSIM's maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Array = TypeVar("Array", Tensor, np.ndarray)

WINDOW = 11
SIGMA = 1.5
STRIP_PIXELS = 1 << 17  # pixels per strip: SSIM's float64 maps of a strip take ~50 MB


def strip_rows(width: int) -> int:
    """Rows per strip of an image `width` pixels wide."""
    return max(WINDOW, STRIP_PIXELS // max(width, 1))


def psnr(restored: np.ndarray, source: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images), of 8-bit values whose
    peak is `peak` (255; less for a source whose values use fewer bits than its samples hold:
    pipeline/decode.py's levels)."""
    rows = strip_rows(source.shape[1])
    squared = 0  # sum of squared differences, exact in int64
    for y in range(0, source.shape[0], rows):
        diff = restored[y : y + rows].astype(np.int32) - source[y : y + rows].astype(np.int32)
        squared += int(np.sum(diff * diff, dtype=np.int64))
    mse = squared / source.size
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def ssim(restored: np.ndarray, source: np.ndarray) -> float | None:
    """Structural similarity in [-1, 1]; None when a side is shorter than the 11 px window."""
    height, width = source.shape[:2]
    if min(height, width) < WINDOW:
        return None
    valid = height - WINDOW + 1  # rows of the SSIM map
    rows = strip_rows(width)
    total = 0.0
    for y in range(0, valid, rows):  # map rows [y, y + rows) need image rows [y, y + rows + 10)
        end = min(y + rows, valid) + WINDOW - 1
        luminance, contrast_structure = ssim_terms(
            channels(restored[y:end]), channels(source[y:end]), 255.0, blur=separable_blur
        )
        total += float((luminance * contrast_structure).sum())
    return total / (3 * valid * (width - WINDOW + 1))


def channels(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float64 on 0..255."""
    return img.transpose(2, 0, 1).astype(np.float64)


def gaussian_taps() -> Tensor:
    """The 11 weights of the Gaussian window (sigma 1.5), summing to 1, in float64."""
    taps = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(taps**2) / (2 * SIGMA**2))
    return g / g.sum()


def separable_blur(a: np.ndarray) -> np.ndarray:
    """gaussian_blur of (..., H, W) numpy arrays, as 11 shifted sums per axis: (..., H - 10,
    W - 10). On a CPU it runs several times faster than torch's float64 convolution."""
    g = gaussian_taps().tolist()
    w = a.shape[-1] - WINDOW + 1
    rows = a[..., :w] * g[0]
    for k in range(1, WINDOW):
        rows += a[..., k : k + w] * g[k]
    h = a.shape[-2] - WINDOW + 1
    out = rows[..., :h, :] * g[0]
    for k in range(1, WINDOW):
        out += rows[..., k : k + h, :] * g[k]
    return out


def planes(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, 1, H, W) float64 on 0..255, one plane per channel."""
    return torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[:, None]


def gaussian_blur(t: Tensor) -> Tensor:
    """Separable 11x11 Gaussian (sigma 1.5) of each channel of (B, C, H, W), valid positions
    only: (B, C, H - 10, W - 10), in t's dtype."""
    g = gaussian_taps().to(dtype=t.dtype, device=t.device)
    c = t.shape[1]
    t = F.conv2d(t, g.view(1, 1, 1, WINDOW).expand(c, 1, 1, WINDOW), groups=c)
    return F.conv2d(t, g.view(1, 1, WINDOW, 1).expand(c, 1, WINDOW, 1), groups=c)


def ssim_terms(
    x: Array, y: Array, data_range: float, blur: Callable[[Array], Array] = gaussian_blur
) -> tuple[Array, Array]:
    """SSIM's luminance and contrast-structure maps of (B, C, H, W) images on 0..data_range,
    over the valid window positions; their product is the SSIM map. Differentiable with the
    default blur; with `separable_blur`, of (..., H, W) numpy arrays."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance, (2 * cov + c2) / (var_x + var_y + c2)
