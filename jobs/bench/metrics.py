"""Distortion metrics of a restored (H, W, 3) uint8 image against its source.

- PSNR and SSIM: tadm/metrics.py, the figures the manifest records.
- MS-SSIM (Wang, Simoncelli, Bovik 2003): 5 scales with the paper's weights, SSIM's luminance
  and contrast-structure terms (tadm/metrics.py, the same 11x11 Gaussian window), 2x2 average
  pooling between scales, per channel then averaged;
  contrast-structure terms are clamped at 0 and odd sides padded as pytorch-msssim does (its
  values agree). Needs sides >= 176 px (11 px at the coarsest scale): None below that.
- GMSD (Xue, Zhang, Mou, Bovik 2014): gradient magnitude similarity deviation on luminance,
  after the authors' 2x2 average and 2x downsampling, Prewitt gradients, c = 170 on a 0..255
  scale. Weight-free; lower is better, 0 for identical images.
- LPIPS (VGG16): only when its weights are given by path (tadm/lpips.py); lower is better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tadm.lpips import LPIPS
from tadm.metrics import WINDOW, planes, psnr, ssim, ssim_terms

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176
GMSD_C = 170.0

# name -> (higher is better, what it is)
METRICS: dict[str, tuple[bool, str]] = {
    "psnr": (True, "PSNR (dB)"),
    "ssim": (True, "SSIM"),
    "ms_ssim": (True, "MS-SSIM"),
    "gmsd": (False, "GMSD"),
    "lpips": (False, "LPIPS (VGG)"),
}


def ms_ssim(restored: np.ndarray, source: np.ndarray) -> float | None:
    """Multi-scale SSIM in [0, 1]; None when a side is under 176 px."""
    if min(source.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    x, y = planes(restored), planes(source)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    cs_terms = []
    for level in range(len(MS_SSIM_WEIGHTS)):
        if level:  # odd sides padded, as pytorch-msssim does
            pad = (x.shape[-2] % 2, x.shape[-1] % 2)
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
        luminance, cs = ssim_terms(x, y, 255.0)
        cs_terms.append(cs.mean(dim=(1, 2, 3)).clamp(min=0))  # (3,)
    # the coarsest scale carries l_M
    cs_terms[-1] = cs_terms[-1] * luminance.mean(dim=(1, 2, 3)).clamp(min=0)
    per_channel = torch.prod(torch.stack(cs_terms) ** weights[:, None], dim=0)
    return float(per_channel.mean())


def gmsd(restored: np.ndarray, source: np.ndarray) -> float:
    """Gradient magnitude similarity deviation (lower is better)."""
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)

    def gradient_magnitude(img: np.ndarray) -> torch.Tensor:
        y = (planes(img).permute(1, 0, 2, 3) * luma).sum(1, keepdim=True)  # (1, 1, H, W)
        y = F.avg_pool2d(F.pad(y, (0, 1, 0, 1)), 2, stride=2)
        prewitt = torch.tensor([[1.0, 0, -1]] * 3, dtype=torch.float64) / 3
        kernels = torch.stack([prewitt, prewitt.T])[:, None]  # (2, 1, 3, 3)
        g = F.conv2d(y, kernels, padding=1)
        return g.pow(2).sum(1).sqrt()

    m_r, m_d = gradient_magnitude(source), gradient_magnitude(restored)
    gms = (2 * m_r * m_d + GMSD_C) / (m_r**2 + m_d**2 + GMSD_C)
    return float(gms.std(correction=0))


class Scorer:
    """Every metric of one restored image; LPIPS when `lpips_weights` is given."""

    def __init__(self, lpips_weights: str | Path | None = None) -> None:
        self.lpips = LPIPS.from_file(lpips_weights) if lpips_weights else None

    @property
    def unavailable(self) -> dict[str, str]:
        """{metric: why it is not reported}."""
        missing = {"dists": "not implemented here (no DISTS network in tadm/)"}
        if self.lpips is None:
            missing["lpips"] = "no VGG16 LPIPS weights given (--lpips PATH); nothing is downloaded"
        return missing

    @property
    def names(self) -> list[str]:
        return [m for m in METRICS if m != "lpips" or self.lpips is not None]

    @torch.inference_mode()
    def __call__(self, restored: np.ndarray, source: np.ndarray) -> dict[str, float | None]:
        scores: dict[str, float | None] = {
            "psnr": psnr(restored, source),
            "ssim": ssim(restored, source),
            "ms_ssim": ms_ssim(restored, source),
            "gmsd": gmsd(restored, source),
        }
        if self.lpips is not None:
            a = planes(restored).permute(1, 0, 2, 3).float() / 127.5 - 1  # (1, 3, H, W)
            b = planes(source).permute(1, 0, 2, 3).float() / 127.5 - 1
            scores["lpips"] = float(self.lpips(a, b))
        return scores
