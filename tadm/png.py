"""PNG bytes of an (h, w, 3) uint8 image (numpy and PIL only: the archive format uses it)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin


def png_bytes(pixels: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """(h, w, 3) uint8 -> PNG bytes with `text` as tEXt chunks, compressed as far as zlib goes
    (an LR PNG's size is the archive's size)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=info, optimize=True)
    return out.getvalue()
