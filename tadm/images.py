"""Images between numpy (H, W, 3) uint8, as files and stages carry them, and torch
(B, 3, H, W) (their PNG bytes: tadm/png.py)."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 images of one size -> (B, 3, H, W) uint8."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def to_images(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) uint8 -> B arrays (H, W, 3) uint8."""
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8, as a restored PNG stores it."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float_batch(img: np.ndarray) -> torch.Tensor:
    """One (H, W, 3) uint8 image -> (1, 3, H, W) float in [0, 1], as the model takes it."""
    return to_tensor([img]).float() / 255


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, as a restored PNG stores it."""
    return to_images(to_pixels(x))[0]
