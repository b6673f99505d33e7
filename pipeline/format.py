"""The LR file: a lossless PNG thumbnail whose text chunks say how to restore it.

Chunks: tadm:width, tadm:height (the HR size to restore), tadm:scale and
tadm:model_id (the model that made it, and must restore it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tadm.images import png_bytes


@dataclass(frozen=True)
class LrHeader:
    width: int  # HR width to restore
    height: int  # HR height to restore
    scale: int  # 16 or 32
    model_id: str  # TADM.model_id of the model that wrote the file


def encode_lr_png(lr: np.ndarray, header: LrHeader) -> bytes:
    """(h, w, 3) uint8 -> PNG bytes carrying the tadm:* chunks."""
    text = {
        "tadm:width": str(header.width),
        "tadm:height": str(header.height),
        "tadm:scale": str(header.scale),
        "tadm:model_id": header.model_id,
    }
    return png_bytes(lr, text)


def decode_lr_png(data: bytes) -> tuple[np.ndarray, LrHeader]:
    """PNG bytes -> ((h, w, 3) uint8, header); ValueError if it is not a TADM LR file."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
            img.load()
            text = dict(img.text)
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"corrupt LR PNG: {e}") from None
    try:
        header = LrHeader(
            width=int(text["tadm:width"]),
            height=int(text["tadm:height"]),
            scale=int(text["tadm:scale"]),
            model_id=text["tadm:model_id"],
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a TADM LR PNG: missing or bad text chunk {e}") from None
    return pixels, header
