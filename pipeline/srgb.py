"""Pixels in the colour space their metadata states -> plain sRGB: restore --to-srgb, and the
tiles `tadm serve` makes of PNGs that state their colours with gAMA and cHRM.

An ICC profile goes through LittleCMS (PIL.ImageCms). A PNG without one states its colour space
with gAMA (the transfer: sample = light ** gamma) and cHRM (the primaries' and the white's
chromaticities), unless its sRGB chunk says the pixels are sRGB already; those two are converted
here: samples to linear light, to CIE XYZ through the primaries, white adapted to sRGB's D65
(Bradford, as ICC's relative colorimetric intent does), to linear sRGB, clipped to its gamut,
then sRGB's transfer. A chunk no conversion can use (gAMA 0, primaries that span no colour
space) is left out, as PNG decoders ignore it, and named.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

from pipeline.metadata import Metadata, colour_chunks

SRGB = ImageCms.createProfile("sRGB")
# The chromaticities (x, y) of sRGB's white (D65), red, green and blue: cHRM's order
SRGB_CHROMATICITIES = (0.3127, 0.3290, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)
BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
# How a restore row's conversion begins when --to-srgb made its image (before any other note):
# a description is quoted as Python's repr does, in double quotes when it holds a "'"
SRGB_NOTE = r"^(ICC ['\"]|PNG |no ICC profile: taken as sRGB)"
STRIP_PIXELS = 1 << 20  # pixels converted at a time through a matrix, so memory stays bounded


def icc_to_srgb(pixels: np.ndarray, icc: bytes) -> tuple[np.ndarray, str]:
    """Pixels in the colour space of the ICC profile `icc` -> sRGB (LittleCMS, perceptual
    intent), and the note "ICC '<description>' -> sRGB"; ValueError for an unusable profile."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.profileToProfile(Image.fromarray(pixels), profile, SRGB, outputMode="RGB")
        description = ImageCms.getProfileDescription(profile).strip()
    except (OSError, ImageCms.PyCMSError) as e:
        raise ValueError(f"--to-srgb: the image's ICC profile is unusable: {e}") from None
    return np.asarray(srgb, dtype=np.uint8), f"ICC {description!r} -> sRGB"


def png_colour_to_srgb(pixels: np.ndarray, png_colour: bytes | None) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 pixels of a PNG with no ICC profile, whose colour chunks are
    `png_colour` (pipeline.metadata.png_colour) -> sRGB, and the note saying what was done:
    "PNG gAMA 1, cHRM -> sRGB", or "no ICC profile: taken as sRGB" when no chunk says otherwise
    (an sRGB chunk, or none), naming the chunks left out as unusable."""
    chunks = dict(colour_chunks(png_colour or b""))
    if b"sRGB" in chunks:  # PNG: it overrides gAMA and cHRM, which are there for old decoders
        return pixels, "no ICC profile: taken as sRGB, as its PNG sRGB chunk says"
    gamma = matrix = None
    unusable = []
    if b"gAMA" in chunks:
        gamma = struct.unpack(">I", chunks[b"gAMA"])[0] / 100000
        if gamma == 0:
            unusable.append("gAMA 0")
            gamma = None
    if b"cHRM" in chunks:
        matrix = to_srgb_matrix(tuple(v / 100000 for v in struct.unpack(">8I", chunks[b"cHRM"])))
        if matrix is None:
            unusable.append("cHRM")
    unused = f", its PNG {', '.join(unusable)} unusable, left out" if unusable else ""
    if gamma is None and matrix is None:
        return pixels, "no ICC profile: taken as sRGB" + unused
    light = decode_lut(gamma)
    converted = [f"gAMA {gamma:g}"] if gamma is not None else []
    if matrix is None:  # sRGB's primaries: a per-sample table does it all
        out = srgb_encode(light)[pixels]
    else:
        converted.append("cHRM")
        out = np.empty_like(pixels)
        flat, done = pixels.reshape(-1, 3), out.reshape(-1, 3)
        to_linear_srgb = matrix.T.astype(np.float32)
        for start in range(0, len(flat), STRIP_PIXELS):
            linear = light[flat[start : start + STRIP_PIXELS]] @ to_linear_srgb  # (N, 3)
            done[start : start + STRIP_PIXELS] = srgb_encode(np.clip(linear, 0, 1))
    return out, f"PNG {', '.join(converted)} -> sRGB" + unused


def decode_lut(gamma: float | None) -> np.ndarray:
    """(256,) float32 linear light of each 8-bit sample: sample ** (1 / gamma) for a PNG gAMA,
    sRGB's transfer inverted without one."""
    v = np.arange(256, dtype=np.float64) / 255
    if gamma is None:
        light = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    else:
        light = v ** (1 / gamma)
    return light.astype(np.float32)


def srgb_encode(light: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> 8-bit sRGB samples (sRGB's transfer, rounded)."""
    light = light.astype(np.float64)
    v = np.where(light <= 0.0031308, light * 12.92, 1.055 * light ** (1 / 2.4) - 0.055)
    return np.rint(v * 255).astype(np.uint8)


def rgb_to_xyz(chromaticities: tuple[float, ...]) -> np.ndarray | None:
    """The (3, 3) matrix from linear RGB to XYZ of primaries and white given as cHRM orders
    them (white x, y, red x, y, green x, y, blue x, y), white at Y = 1; None when they span no
    colour space (a y of 0, primaries on one line, or white outside them)."""
    xy = np.array(chromaticities, dtype=np.float64).reshape(4, 2)
    if (xy[:, 1] <= 0).any():
        return None
    xyz = np.stack([xy[:, 0] / xy[:, 1], np.ones(4), (1 - xy.sum(axis=1)) / xy[:, 1]], axis=1)
    primaries = xyz[1:].T  # columns: red, green, blue
    if abs(np.linalg.det(primaries)) < 1e-9:
        return None
    weights = np.linalg.solve(primaries, xyz[0])
    return primaries * weights if (weights > 0).all() else None


def to_srgb_matrix(chromaticities: tuple[float, ...]) -> np.ndarray | None:
    """Linear RGB of these primaries -> linear sRGB, their white adapted to D65 (Bradford);
    None when they span no colour space."""
    source = rgb_to_xyz(chromaticities)
    if source is None:
        return None
    srgb = rgb_to_xyz(SRGB_CHROMATICITIES)
    white_source = source.sum(axis=1)  # XYZ of RGB (1, 1, 1)
    white_srgb = srgb.sum(axis=1)
    cone_gain = (BRADFORD @ white_srgb) / (BRADFORD @ white_source)
    adapt = np.linalg.inv(BRADFORD) @ np.diag(cone_gain) @ BRADFORD
    return np.linalg.inv(srgb) @ adapt @ source


def as_stated(pixels: np.ndarray, metadata: Metadata) -> tuple[np.ndarray, Metadata]:
    """(h, w, 3) uint8 pixels of an image whose metadata is `metadata`, and what to encode
    them with, so that a browser shows the colours the image states: its ICC profile, or
    else the pixels converted to sRGB as its PNG gAMA and cHRM say (a JPEG or WebP has no
    place for those)."""
    if not metadata.icc and metadata.png_colour:
        pixels, _ = png_colour_to_srgb(pixels, metadata.png_colour)
    return pixels, Metadata(icc=metadata.icc)
