"""Images between numpy (H, W, 3) uint8, as stages carry them, and torch (B, 3, H, W)."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 images of one size -> (B, 3, H, W) uint8."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def to_images(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) uint8 -> B arrays (H, W, 3) uint8."""
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8, as a restored PNG stores it."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
