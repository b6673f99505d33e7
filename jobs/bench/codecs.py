"""The image codecs TADM is compared with, each behind one quality knob (higher = better).

Lossy: JPEG, WebP and AVIF through Pillow; JPEG XL through imagecodecs (libjxl). Each runs at its
library's best-compression settings a data team would pick for an archive (JPEG with optimized
Huffman tables, WebP method 6, AVIF at Pillow's default speed, JPEG XL effort 7), 4:2:0 chroma
where the library defaults to it. Lossless: the same LR pixels TADM stores as PNG, as WebP or
JPEG XL at maximum effort.

A codec missing from this Python (a Pillow built without AVIF, no imagecodecs) is reported with
the reason, never silently dropped.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, features


@dataclass(frozen=True)
class Codec:
    """One lossy codec: `encode(img, quality)` with quality in [low, high], higher = better."""

    name: str
    library: str  # library and version, for the results
    settings: str  # the fixed settings besides quality
    low: float  # lowest quality (smallest files)
    high: float  # highest quality searched
    integer: bool  # quality is an integer setting
    sweep: tuple[float, ...]  # qualities of the R-D curve
    encode_fn: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]  # file bytes -> (H, W, 3) uint8

    def encode(self, img: np.ndarray, quality: float) -> bytes:
        """(H, W, 3) uint8 -> file bytes."""
        return self.encode_fn(img, round(quality) if self.integer else float(quality))


@dataclass(frozen=True)
class Lossless:
    """A lossless format for the LR image: the same pixels as the archived PNG."""

    name: str
    library: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]


def pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return np.ascontiguousarray(imagecodecs.jpegxl_decode(data)[..., :3])


def pillow_encoder(fmt: str, **options: object) -> Callable[[np.ndarray, float], bytes]:
    def encode(img: np.ndarray, quality: float) -> bytes:
        out = io.BytesIO()
        Image.fromarray(img).save(out, format=fmt, quality=quality, **options)
        return out.getvalue()

    return encode


def jxl_distance(quality: float) -> float:
    """libjxl's JxlEncoderDistanceFromQuality: quality 0..100 -> Butteraugli distance 25..0."""
    if quality >= 30:
        return 0.1 + (100 - quality) * 0.09
    return 53 / 3000 * quality**2 - 23 / 20 * quality + 25


def jxl_encode(img: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(img, distance=jxl_distance(quality), effort=7))


def lossy_codecs() -> tuple[list[Codec], dict[str, str]]:
    """The codecs this Python can run, and {name: why not} for those it cannot."""
    pillow = f"Pillow {Image.__version__}"
    codecs = [
        Codec(
            "jpeg",
            f"{pillow}, libjpeg {features.version_codec('jpg')}",
            "optimize=True, 4:2:0",
            1,
            95,
            True,
            (1, 5, 10, 20, 30, 50, 75, 90),
            pillow_encoder("JPEG", optimize=True),
            pillow_decode,
        )
    ]
    missing: dict[str, str] = {}
    if features.check("webp"):
        codecs.append(
            Codec(
                "webp",
                f"{pillow}, libwebp {features.version('webp')}",
                "method=6, 4:2:0",
                0,
                95,
                False,
                (0, 5, 10, 20, 30, 50, 75, 90),
                pillow_encoder("WEBP", method=6),
                pillow_decode,
            )
        )
    else:
        missing["webp"] = "Pillow was built without WebP (PIL.features.check('webp') is False)"
    if features.check("avif"):
        codecs.append(
            Codec(
                "avif",
                f"{pillow}, libavif {features.version('avif')}",
                "speed=6 (Pillow's default), 4:2:0",
                0,
                95,
                True,
                (0, 10, 20, 30, 40, 50, 65, 80),
                pillow_encoder("AVIF"),
                pillow_decode,
            )
        )
    else:
        missing["avif"] = "Pillow was built without AVIF (PIL.features.check('avif') is False)"
    jxl = jxl_library()
    if jxl is None:
        missing["jxl"] = (
            "imagecodecs with libjxl is not installed (pip install 'tadm-archive[bench]')"
        )
    else:
        codecs.append(
            Codec(
                "jxl",
                jxl,
                "effort=7, quality -> distance as libjxl maps it",
                0,
                95,
                False,
                (0, 10, 20, 30, 45, 60, 75, 90),
                jxl_encode,
                jxl_decode,
            )
        )
    return codecs, missing


def jxl_library() -> str | None:
    """imagecodecs and its libjxl version, or None when JPEG XL cannot be encoded here."""
    try:
        import imagecodecs
    except ImportError:
        return None
    if not imagecodecs.JPEGXL.available:
        return None
    return f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpegxl_version()}"


def webp_lossless(img: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="WEBP", lossless=True, quality=100, method=6)
    return out.getvalue()


def jxl_lossless(img: np.ndarray) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(img, lossless=True, effort=9))


def lossless_formats() -> tuple[list[Lossless], dict[str, str]]:
    """Lossless alternatives to PNG for the LR image, and {name: why not} for missing ones."""
    formats, missing = [], {}
    if features.check("webp"):
        formats.append(
            Lossless(
                "webp-lossless",
                f"libwebp {features.version('webp')}",
                webp_lossless,
                pillow_decode,
            )
        )
    else:
        missing["webp-lossless"] = "Pillow was built without WebP"
    jxl = jxl_library()
    if jxl is None:
        missing["jxl-lossless"] = "imagecodecs with libjxl is not installed"
    else:
        formats.append(Lossless("jxl-lossless", jxl, jxl_lossless, jxl_decode))
    return formats, missing
