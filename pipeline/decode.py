"""Decode stage of archive: source bytes -> 8-bit RGB pixels, one error row per bad file.

Not Ray's read_images, which stops the whole job on one corrupt file: this stage catches every
per-image failure and turns it into a row with status "error" and a message.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.rows import NO_PIXELS, to_batch, to_rows

# Decompression-bomb limit, set deliberately: 16384 x 16384 = 268 MP, far above any photo and
# below what one decode may allocate (~800 MB of RGB). Pillow itself raises at twice this.
MAX_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The formats archive reads; a GIF or PSD renamed to .png is an error, not a surprise.
PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
EXIF_ORIENTATION = 0x0112
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    conversion: str | None  # what was done to get there, e.g. "RGBA -> RGB, alpha dropped"


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode one image file to 8-bit RGB; raise ValueError with a clear message if it can't."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x MAX_IMAGE_PIXELS; the explicit check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        if img.width * img.height > max_pixels:
            raise ValueError(bomb_message(img.width, img.height, max_pixels))
        sixteen_bit = ";16" in raw_mode(img)
        img.load()
        steps = []
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation in range(2, 9):
            img = ImageOps.exif_transpose(img)
            steps.append(f"EXIF orientation {orientation} applied")
        rgb, converted = to_rgb(img, sixteen_bit)
        if converted:
            steps.append(converted)
    except Image.DecompressionBombError as e:
        raise ValueError(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ValueError(f"not a readable {'/'.join(PILLOW_FORMATS)} image") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"corrupt or truncated image: {e}") from None
    except ValueError:
        raise
    except Exception as e:  # Pillow raises assorted errors on malformed files
        raise ValueError(f"corrupt image: {type(e).__name__}: {e}") from None
    return Decoded(pixels=rgb, conversion="; ".join(steps) or None)


def bomb_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
        f"the limit of {max_pixels}"
    )


def raw_mode(img: Image.Image) -> str:
    """The decoder's raw mode ("RGB;16B" for a 16-bit PNG), or "" when not known."""
    if not img.tile:
        return ""
    args = img.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def to_rgb(img: Image.Image, sixteen_bit: bool) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 RGB from any Pillow mode, and a note on what was converted."""
    mode = img.mode
    if mode in SIXTEEN_BIT_GRAY_MODES:
        # Pillow's convert("L") clips 16-bit values at 255; scale the 0..65535 range instead.
        gray = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
        gray = np.round(gray).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), f"{mode} 16-bit grayscale -> 8-bit RGB"
    if mode == "F":
        raise ValueError("unsupported image: 32-bit floating-point pixels (mode F)")
    if mode == "RGB":
        note = "16-bit RGB -> 8-bit RGB" if sixteen_bit else None
        return np.asarray(img, dtype=np.uint8), note
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        note = f"{mode} -> RGB, alpha dropped"
    else:
        note = f"{mode} -> RGB"
    if sixteen_bit:
        note = f"16-bit {note}"
    try:
        rgb = img.convert("RGB")
    except ValueError as e:
        raise ValueError(f"unsupported image: cannot convert mode {mode} to RGB ({e})") from None
    return np.asarray(rgb, dtype=np.uint8), note


def decode_batch(
    batch: dict[str, np.ndarray], *, prefix: str, uri_prefix: str, scale: int, max_pixels: int
) -> dict[str, np.ndarray]:
    """Ray Data stage: {"path", "bytes", "size", "mtime", "etag", "error"} (read_sources'
    rows) -> one row per file with its pixels or its error.

    `prefix` is stripped from each path to give rel_path; `uri_prefix` ("s3://" or "")
    turns a path into source_uri; mtime and etag, the source as listed, are recorded.
    """
    rows = []
    for source in to_rows(batch):
        start = time.perf_counter()
        path = source["path"]
        data = bytes(source["bytes"])
        row = {
            "source_uri": uri_prefix + path,
            "rel_path": path[len(prefix) :],
            "status": "ok",
            "source_bytes": len(data),
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "source_mtime": source.get("mtime"),
            "source_etag": source.get("etag"),
            "pixels": NO_PIXELS,
        }
        try:
            if source.get("error"):  # not read
                row.update(source_bytes=source["size"], source_sha256=None)
                raise ValueError(source["error"])
            decoded = decode_image(data, max_pixels)
            height, width = decoded.pixels.shape[:2]
            row.update(width=width, height=height, conversion=decoded.conversion)
            if width < scale or height < scale:
                raise ValueError(f"image is {width}x{height}, smaller than the scale {scale}")
            row["pixels"] = decoded.pixels
        except ValueError as e:
            row.update(status="error", error=str(e))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return to_batch(rows, DECODE_COLUMNS)


DECODE_COLUMNS = (
    "source_uri",
    "rel_path",
    "status",
    "error",
    "width",
    "height",
    "source_bytes",
    "source_sha256",
    "conversion",
    "source_mtime",
    "source_etag",
    "pixels",
    "seconds",
)
