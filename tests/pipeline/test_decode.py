"""decode_image and the decode stage, on hand-built inputs and batches (no Ray)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import bad_images, bomb_png, encode, exif_rotated_jpeg, good_images, photo, png16
from PIL import Image

from pipeline.decode import decode_batch, decode_image


def test_rgb_passes_through_unchanged():
    pixels = photo(70, 50)
    decoded = decode_image(encode(Image.fromarray(pixels), "PNG"))
    assert decoded.conversion is None
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize(
    ("name", "conversion"),
    [
        ("gray.png", "L -> RGB"),
        ("rgba.png", "RGBA -> RGB, alpha dropped"),
        ("palette.png", "P -> RGB, alpha dropped"),
        ("cmyk.jpg", "CMYK -> RGB"),
        ("gray16.png", "I;16 16-bit grayscale -> 8-bit RGB"),
        ("rgb16.png", "16-bit RGB -> 8-bit RGB"),
        ("rotated.jpg", "EXIF orientation 6 applied"),
        ("odd.webp", None),
        ("Upper.TIF", None),
        ("nested/plain.bmp", None),
    ],
)
def test_every_mode_becomes_rgb_and_says_how(name: str, conversion: str | None):
    decoded = decode_image(good_images()[name])
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3
    assert decoded.conversion == conversion


def test_rgba_keeps_colour_channels():
    pixels = photo(40, 30)
    rgba = np.concatenate([pixels, np.full((30, 40, 1), 7, np.uint8)], axis=2)
    decoded = decode_image(encode(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]] * 20, dtype=np.uint16)
    decoded = decode_image(png16(values))
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])


def test_16_bit_rgb_keeps_the_high_byte():
    values = np.full((20, 20, 3), [1000, 30000, 65535], dtype=np.uint16)
    decoded = decode_image(png16(values))
    np.testing.assert_array_equal(decoded.pixels[0, 0], [3, 117, 255])


def test_exif_orientation_is_applied():
    decoded = decode_image(exif_rotated_jpeg(80, 64))
    assert decoded.pixels.shape == (80, 64, 3)  # stored 80 wide, shown 64 wide


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad/corrupt.jpg", "not a readable"),
        ("bad/truncated.png", "truncated"),
        ("bad/empty.jpg", "empty file"),
        ("bad/not-an-image.png", "not a readable"),
        ("bad/bomb.png", "decompression bomb: 20000x20000"),
    ],
)
def test_bad_files_raise_clear_value_errors(name: str, message: str):
    with pytest.raises(ValueError, match=message):
        decode_image(bad_images()[name])


def test_bomb_beyond_twice_the_limit_is_caught_by_pillow_too():
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(bomb_png(40000, 40000))


def test_max_pixels_is_a_parameter():
    data = encode(Image.fromarray(photo(64, 64)), "PNG")
    with pytest.raises(ValueError, match="exceeds the limit of 1000"):
        decode_image(data, max_pixels=1000)


def test_gif_renamed_png_is_not_read():
    with pytest.raises(ValueError, match="not a readable"):
        decode_image(encode(Image.fromarray(photo(32, 32)), "GIF"))


def test_decode_batch_makes_one_row_per_file_without_ray():
    files = {"x/ok.png": good_images()["gray.png"]} | bad_images()
    batch = {
        "path": np.array([f"/data/src/{k}" for k in files], dtype=object),
        "bytes": np.array(list(files.values()), dtype=object),
    }
    out = decode_batch(batch, prefix="/data/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert list(out["rel_path"]) == list(files)
    assert list(out["source_uri"]) == [f"/data/src/{k}" for k in files]
    assert list(out["status"]) == ["ok"] + ["error"] * len(bad_images())
    assert out["error"][0] is None and all(out["error"][1:])
    assert list(out["error_kind"]) == [None] + ["permanent"] * len(bad_images())
    assert list(out["source_bytes"]) == [len(v) for v in files.values()]
    assert list(out["source_sha256"]) == [hashlib.sha256(v).hexdigest() for v in files.values()]
    assert out["pixels"][0].shape == (64, 80, 3) and out["pixels"][1].size == 0
    assert (out["width"][0], out["height"][0]) == (80, 64)
    small = list(files).index("bad/too-small.png")
    assert out["error"][small] == "image is 12x40, smaller than the scale 16"
    assert (out["width"][small], out["height"][small]) == (12, 40)
    assert all(s >= 0 for s in out["seconds"])
