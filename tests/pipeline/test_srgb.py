"""restore --to-srgb of a PNG's gAMA and cHRM, against LittleCMS converting through ICC
profiles that state the same colour space."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from conftest import display_p3_icc, display_profile, photo, s15f16
from PIL import Image, ImageCms

from pipeline.metadata import Metadata
from pipeline.restore.write import encode_restored
from pipeline.srgb import SRGB_CHROMATICITIES, png_colour_to_srgb, to_srgb_matrix

P3 = (0.3127, 0.3290, 0.680, 0.320, 0.265, 0.690, 0.150, 0.060)  # D65 white, P3 primaries
# The same primaries as ICC colourants: XYZ adapted to D50 (Bradford), as profiles store them
P3_D50 = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def gama(gamma: float) -> bytes:
    return b"gAMA" + struct.pack(">I", round(gamma * 100000))


def chrm(chromaticities: tuple[float, ...]) -> bytes:
    return b"cHRM" + struct.pack(">8I", *(round(v * 100000) for v in chromaticities))


def gamma_icc(primaries: tuple[tuple[float, float, float], ...], gamma: float) -> bytes:
    """An RGB display profile with these D50 colourants and a plain power curve `gamma`."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))  # u8Fixed8
    colourants = {
        s: b"XYZ \0\0\0\0" + s15f16(*p)
        for s, p in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)
    }
    curves = dict.fromkeys((b"rTRC", b"gTRC", b"bTRC"), curve)
    return display_profile("gamma", b"RGB ", colourants | curves)


def littlecms(pixels: np.ndarray, icc: bytes) -> np.ndarray:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    srgb = ImageCms.profileToProfile(
        Image.fromarray(pixels), source, ImageCms.createProfile("sRGB")
    )
    return np.asarray(srgb, dtype=np.int16)


def every_level() -> np.ndarray:
    """Every 8-bit level on each channel alone and on grey, and random colours: (64, 256, 3)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 256, 3), dtype=np.uint8)
    levels = np.arange(256, dtype=np.uint8)
    for channel in range(3):
        pixels[channel, :, channel] = levels
        pixels[channel, :, [c for c in range(3) if c != channel]] = 0
    pixels[3] = levels[:, None]
    return pixels


@pytest.mark.parametrize(
    ("chunks", "icc", "note"),
    [
        (chrm(P3), display_p3_icc(), "PNG cHRM -> sRGB"),  # no gAMA: sRGB's curve, as P3's
        (gama(1 / 2.2) + chrm(P3), gamma_icc(P3_D50, 2.2), "PNG gAMA 0.45455, cHRM -> sRGB"),
        (gama(1.0), gamma_icc(SRGB_D50, 1.0), "PNG gAMA 1 -> sRGB"),  # linear light
    ],
)
def test_gama_and_chrm_convert_as_littlecms_converts_a_profile_of_that_space(chunks, icc, note):
    pixels = every_level()
    converted, said = png_colour_to_srgb(pixels, chunks)
    assert said == note
    expected = littlecms(pixels, icc)
    assert np.abs(converted.astype(np.int16) - expected).max() <= 1
    assert np.abs(pixels.astype(np.int16) - expected).max() > 40  # a conversion it needed


def test_srgb_chromaticities_and_a_d50_white_keep_grey_grey():
    np.testing.assert_allclose(to_srgb_matrix(SRGB_CHROMATICITIES), np.eye(3), atol=1e-12)
    d50 = (0.3457, 0.3585) + SRGB_CHROMATICITIES[2:]  # white adapted: grey stays grey
    grey = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 256, 3)
    converted, _ = png_colour_to_srgb(grey, chrm(d50))
    assert np.abs(converted.astype(np.int16) - grey).max() <= 1


def test_strips_give_what_one_pass_gives(monkeypatch):
    pixels = every_level()
    whole, _ = png_colour_to_srgb(pixels, gama(0.5) + chrm(P3))
    monkeypatch.setattr("pipeline.srgb.STRIP_PIXELS", 1000)
    stripped, _ = png_colour_to_srgb(pixels, gama(0.5) + chrm(P3))
    np.testing.assert_array_equal(stripped, whole)


@pytest.mark.parametrize(
    ("chunks", "note"),
    [
        (None, "no ICC profile: taken as sRGB"),
        (
            gama(1.0) + chrm(P3) + b"sRGB\x00",
            "no ICC profile: taken as sRGB, as its PNG sRGB chunk says",
        ),
        (
            gama(0) + chrm((0.0,) * 8),
            "no ICC profile: taken as sRGB, its PNG gAMA 0, cHRM unusable, left out",
        ),
        (
            chrm((0.3127, 0.329, 0.64, 0.33, 0.64, 0.33, 0.15, 0.06)),
            "no ICC profile: taken as sRGB, its PNG cHRM unusable, left out",
        ),
        (
            gama(1.0) + chrm((0.9, 0.05, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)),
            "PNG gAMA 1 -> sRGB, its PNG cHRM unusable, left out",
        ),
    ],
)
def test_what_states_no_other_colour_space_leaves_the_pixels_and_says_why(chunks, note):
    """An sRGB chunk overrides gAMA and cHRM; a gAMA of 0, and primaries that span no colour
    space (two alike, a white outside them), are unusable, as PNG decoders take them."""
    pixels = every_level()
    converted, said = png_colour_to_srgb(pixels, chunks)
    assert said == note
    if "gAMA 1 ->" not in note:
        np.testing.assert_array_equal(converted, pixels)


def test_a_restore_to_srgb_converts_and_leaves_the_chunks_out():
    metadata = Metadata(png_colour=gama(1.0), density=b"1 1 m")
    pixels = photo(40, 30)
    data, names, conversion = encode_restored(pixels, "png", metadata, srgb=True)
    assert (names, conversion) == ("density", "PNG gAMA 1 -> sRGB")
    with Image.open(io.BytesIO(data)) as img:
        assert "gamma" not in img.info
        expected = littlecms(pixels, gamma_icc(SRGB_D50, 1.0))
        assert np.abs(np.asarray(img, dtype=np.int16) - expected).max() <= 1
    _, names, conversion = encode_restored(pixels, "png", metadata, srgb=False)
    assert (names, conversion) == ("density,png_colour", None)
