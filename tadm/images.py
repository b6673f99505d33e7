"""Images between numpy (H, W, 3) uint8, as files and stages carry them, and torch
(B, 3, H, W); and the PNG bytes of such an image."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, PngImagePlugin


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


def png_bytes(
    pixels: np.ndarray,
    text: dict[str, str] | None = None,
    *,
    itxt: dict[str, str] | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """(h, w, 3) uint8 -> PNG bytes with `text` as tEXt chunks, `itxt` as uncompressed iTXt
    chunks, `icc_profile` as iCCP and `exif` (a TIFF structure) as eXIf, compressed as far as
    zlib goes (an LR PNG's size is the archive's size)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    for key, value in (itxt or {}).items():
        info.add_itxt(key, value, zip=False)
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if exif:
        options["exif"] = exif
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=info, optimize=True, **options)
    return out.getvalue()
