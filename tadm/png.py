"""PNG bytes of an (h, w, 3) uint8 image (numpy and PIL only: the archive format uses it)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin


def png_bytes(
    pixels: np.ndarray,
    text: dict[str, str] | None = None,
    *,
    chunks: PngImagePlugin.PngInfo | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """(h, w, 3) uint8 -> PNG bytes with `text` as tEXt chunks, then `chunks`, `icc_profile` as
    iCCP and `exif` (a TIFF structure) as eXIf, compressed as far as zlib goes (an LR PNG's
    size is the archive's size)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    for chunk in chunks.chunks if chunks else []:
        info.add(*chunk)
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if exif:
        options["exif"] = exif
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=info, optimize=True, **options)
    return out.getvalue()
