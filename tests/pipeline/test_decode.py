"""decode_image and the decode stage, on hand-built inputs and batches (no Ray)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import warnings
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import (
    UNNAMED_TAG,
    bad_images,
    bomb_png,
    camera_exif,
    camera_tiff,
    display_p3_icc,
    encode,
    exif_entry,
    exif_ifd,
    exif_rotated_jpeg,
    exiftool,
    good_images,
    gray_icc,
    multi_frame_images,
    photo,
    png16,
    png_chunk,
    real_world_images,
    thumbnail_exif,
    xmp_packet,
)
from PIL import Image, PngImagePlugin, TiffImagePlugin, TiffTags

from pipeline.decode import decode_batch, decode_image, image_end
from pipeline.exif import reset_exif_orientation
from pipeline.format import MAX_PIXELS, LrHeader, decode_lr_png, encode_lr_png, encode_output
from pipeline.metadata import Metadata, not_held, raw_profile
from pipeline.restore.write import encode_restored

CONTAINERS = Path(__file__).parent.parent / "data" / "containers"


def tiff(pixels: np.ndarray, orientation: int | None = None, xmp: bytes | None = None) -> bytes:
    """A TIFF of `pixels` with `orientation` (tag 274) and `xmp` (tag 700) in its own tags."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    if orientation:
        tags[0x0112] = orientation
    if xmp:
        tags[700] = xmp
    return encode(Image.fromarray(pixels), "TIFF", tiffinfo=tags)


def png_turned(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` as decode_image turns a PNG with EXIF orientation `orientation`."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(Image.fromarray(pixels), "PNG", exif=exif))
    assert decoded.conversion == f"EXIF orientation {orientation} applied"
    return decoded.pixels


def gif_header(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A one-frame GIF: a `screen` of width x height, one `frame` of width x height at 0, 0."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", *screen, 0, 0, 0)
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, *frame, 0)
        + b"\x02\x02\x44\x01\x00\x3b"
    )


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
    assert decoded.conversion == "EXIF orientation 6 applied"


@pytest.mark.parametrize("orientation", range(2, 9))
def test_tiff_orientation_is_applied_once_and_said(orientation: int):
    pixels = photo(64, 48, 20)
    expected = png_turned(pixels, orientation)
    assert not np.array_equal(expected[:48, :48], pixels[:48, :48])  # the PNG was turned
    decoded = decode_image(tiff(pixels, orientation))
    assert decoded.conversion == f"EXIF orientation {orientation} applied"
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.metadata.names is None  # an orientation alone, applied, makes no EXIF


ELEMENT_XMP = xmp_packet(8).replace(
    b' tiff:Orientation="8">', b"><tiff:Orientation>8</tiff:Orientation>"
)


@pytest.mark.parametrize(
    ("orientation", "xmp", "carried", "source"),
    [
        (None, xmp_packet(8), xmp_packet(1), "XMP"),
        (None, ELEMENT_XMP, ELEMENT_XMP.replace(b">8<", b">1<"), "XMP"),
        (8, xmp_packet(8), xmp_packet(1), "EXIF"),
    ],
)
def test_tiff_xmp_orientation_is_applied_and_carried_as_1(
    orientation: int | None, xmp: bytes, carried: bytes, source: str
):
    pixels = photo(64, 48, 21)
    decoded = decode_image(tiff(pixels, orientation, xmp))
    assert decoded.conversion == f"{source} orientation 8 applied"
    np.testing.assert_array_equal(decoded.pixels, png_turned(pixels, 8))
    assert decoded.metadata == Metadata(xmp=carried)


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


@pytest.mark.parametrize("max_pixels", [MAX_PIXELS, 1000])
def test_bomb_beyond_twice_the_limit_is_named_with_the_tools_limit(max_pixels: int):
    # Pillow's own check raises first here, quoting its limit; the message is the tool's.
    message = "decompression bomb: 100000x100000 = 10000000000 pixels exceeds the limit of "
    with pytest.raises(ValueError) as raised:
        decode_image(bomb_png(100000, 100000), max_pixels)
    assert str(raised.value) == f"{message}{max_pixels}"
    with pytest.raises(ValueError) as raised:
        decode_image(gif_header((60000, 50000), (1, 1)), max_pixels)
    assert str(raised.value).startswith("decompression bomb: 60000x50000 = 3000000000 pixels")


def test_bomb_found_by_pillow_while_opening_still_names_the_tools_limit():
    with pytest.raises(ValueError) as raised:
        decode_image(gif_header((1, 1), (60000, 50000)))  # the frame reaches past the screen
    assert str(raised.value) == f"decompression bomb: over the limit of {MAX_PIXELS} pixels"


def test_max_pixels_is_a_parameter():
    data = encode(Image.fromarray(photo(64, 64)), "PNG")
    with pytest.raises(ValueError, match="exceeds the limit of 1000"):
        decode_image(data, max_pixels=1000)


def test_ico_renamed_png_is_not_read():
    with pytest.raises(ValueError, match="not a readable"):
        decode_image(encode(Image.fromarray(photo(32, 32)), "ICO"))


def test_a_file_of_a_known_format_that_does_not_open_says_why():
    """A PNG whose ICC profile chunk fails its checksum: what Pillow's PNG reader found."""
    data = bytearray(encode(Image.fromarray(photo(8, 8)), "PNG", icc_profile=b"x" * 200))
    at = data.index(b"iCCP")
    (size,) = struct.unpack(">I", data[at - 4 : at])
    data[at + 4 + size] ^= 0xFF  # its CRC
    with pytest.raises(ValueError) as raised:
        decode_image(bytes(data))
    assert str(raised.value) == (
        "not a readable PNG/JPEG/WEBP/TIFF/BMP/GIF/HEIF/AVIF/JXL image "
        "(PNG: broken PNG file (bad header checksum in b'iCCP'))"
    )
    with pytest.raises(
        ValueError, match=r"^not a readable PNG/JPEG/WEBP/TIFF/BMP/GIF/HEIF/AVIF/JXL image$"
    ):
        decode_image(b"hello, not an image")


@pytest.mark.parametrize(
    ("pixels", "said"),
    [
        (np.zeros((8, 8, 3), np.float64), "3 64-bit floating-point samples a pixel"),
        (np.zeros((8, 8, 3), np.int16), "3 16-bit signed integer samples a pixel"),
        (np.zeros((8, 8), np.float16), "1 16-bit floating-point sample a pixel"),
    ],
)
def test_a_tiff_of_samples_pillow_does_not_read_says_what_they_are(pixels, said):
    """A scientific TIFF (a float elevation model, signed microscopy counts)."""
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
    with pytest.raises(ValueError) as raised:
        decode_image(out.getvalue())
    assert str(raised.value).endswith(
        f"image (TIFF: unknown pixel mode) (its pixels: {said}; convert it to 8 or 16-bit "
        "unsigned integer samples, which archive reads)"
    )


def test_a_broken_jpeg_xl_says_what_libjxl_found_without_its_advice_to_its_developers():
    data = encode(Image.fromarray(photo(64, 64)), "JXL")
    with pytest.raises(ValueError, match=r"^corrupt image: RuntimeError: Generic Error$"):
        decode_image(data[: len(data) // 2])


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


def test_exif_travels_with_its_orientation_reset_and_every_other_byte_kept():
    data = real_world_images()["camera/exif.jpg"]
    decoded = decode_image(data)
    assert decoded.pixels.shape == (128, 96, 3)  # stored 128 wide, orientation 6
    assert decoded.metadata.names == "exif"
    with Image.open(io.BytesIO(data)) as img:
        original = img.info["exif"].removeprefix(b"Exif\x00\x00")
    exif = decoded.metadata.exif
    assert len(exif) == len(original)
    assert sum(a != b for a, b in zip(exif, original, strict=True)) == 1  # 6 -> 1
    read = Image.Exif()
    read.load(exif)
    assert read[0x0112] == 1 and read[0x010F] == "TADM Camera Co."
    assert read.get_ifd(0x8769)[0x9003] == "2024:05:17 10:30:00"
    assert read.get_ifd(0x8825)[1] == "N"
    assert reset_exif_orientation(b"not a TIFF structure") is None


@pytest.mark.parametrize("orientation", [2, 6])
def test_exif_resolution_and_dimensions_turn_with_the_pixels(orientation: int):
    """A fax's 204x98 dpi, stored 128x96 pixels: turned a quarter, the EXIF says 98x204 dpi
    and 96x128 pixels, as the pixels archived are; mirrored only, as it was."""
    exif = camera_exif(orientation)
    exif.update({282: 204.0, 283: 98.0, 296: 2})
    exif.get_ifd(0x8769).update({0xA002: 128, 0xA003: 96})
    image = Image.fromarray(photo(128, 96, 3))
    decoded = decode_image(encode(image, "JPEG", exif=exif))
    read = Image.Exif()
    read.load(decoded.metadata.exif)
    turned = orientation == 6
    assert decoded.pixels.shape == ((128, 96, 3) if turned else (96, 128, 3))
    assert (read[282], read[283]) == ((98.0, 204.0) if turned else (204.0, 98.0))
    dimensions = read.get_ifd(0x8769)
    assert (dimensions[0xA002], dimensions[0xA003]) == ((96, 128) if turned else (128, 96))
    assert read[0x0112] == 1 and read[0x010F] == "TADM Camera Co."


def test_icc_profile_and_xmp_travel_and_xmp_orientation_is_reset():
    p3 = decode_image(real_world_images()["colour/p3.png"])
    assert p3.metadata == Metadata(icc=display_p3_icc()) and p3.conversion is None
    rotated = encode(Image.fromarray(photo(80, 64)), "JPEG", xmp=xmp_packet(6))
    decoded = decode_image(rotated)
    assert decoded.pixels.shape == (80, 64, 3)  # Pillow reads the orientation from XMP
    assert decoded.conversion == "XMP orientation 6 applied"
    assert decoded.metadata.xmp == xmp_packet(1)


def test_a_cmyk_profile_is_not_carried_with_rgb_pixels():
    cmyk = encode(Image.fromarray(photo(64, 64)).convert("CMYK"), "JPEG", icc_profile=b"junk")
    decoded = decode_image(cmyk)
    assert decoded.metadata.icc is None
    assert decoded.conversion.startswith("CMYK -> RGB; ICC profile unreadable")


@pytest.mark.parametrize(
    ("name", "size", "names"),
    [
        ("phone/photo.heic", (96, 128), "exif,icc"),
        ("phone/photo.avif", (128, 96), "exif,xmp"),
        ("web/still.gif", (80, 96), None),
    ],
)
def test_phone_and_modern_formats(name: str, size: tuple[int, int], names: str | None):
    decoded = decode_image(real_world_images()[name])
    assert decoded.pixels.shape == (*size, 3)
    assert decoded.metadata.names == names


def test_jpeg_xl():
    pixels = photo(64, 48)
    decoded = decode_image(encode(Image.fromarray(pixels), "JXL", lossless=True))
    np.testing.assert_array_equal(decoded.pixels, pixels)


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    b'syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="A"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


@pytest.mark.parametrize(
    ("nclx", "note"),
    [
        ({}, None),  # sRGB's: BT.709 primaries, sRGB transfer
        ({"color_primaries": 12, "transfer_characteristics": 13}, "Display P3 primaries, sRGB"),
        ({"color_primaries": 9, "transfer_characteristics": 16}, "BT.2020 primaries, PQ (HDR)"),
    ],
)
def test_a_heif_colour_description_not_srgb_is_named(nclx: dict, note: str | None):
    """A phone's HEIC can say its colours by code points (nclx) rather than by an ICC profile:
    the LR, without a profile, is read as sRGB, so other colours are named."""
    heic = encode(Image.fromarray(photo(64, 48)), "HEIF", matrix_coefficients=6, **nclx)
    conversion = decode_image(heic).conversion
    if note is None:
        assert conversion is None
    else:
        assert conversion == (
            f"not carried: HEIF colour description (nclx: {note} transfer; the LR's colours "
            "read as sRGB)"
        )


def test_a_jpeg_xl_box_its_plugin_does_not_read_is_named():
    """Pillow's JPEG XL plugin gives the Exif box, not the XMP one ("xml ")."""
    image = Image.fromarray(photo(64, 48))
    assert decode_image(encode(image, "JXL", lossless=True, xmp=XMP)).conversion == (
        "not carried: JPEG XL XMP"
    )
    assert decode_image(encode(image, "JXL", lossless=True)).conversion is None


@pytest.mark.parametrize("name", sorted(multi_frame_images()))
def test_multi_frame_images_are_errors_naming_their_frames(name: str):
    frames = {"gif": 3, "png": 2, "webp": 3, "tif": 2}[name.rsplit(".", 1)[1]]
    with pytest.raises(ValueError, match=f"with {frames} frames .* not archived"):
        decode_image(multi_frame_images()[name])


def test_decode_batch_carries_metadata_and_decodes_no_file_without_an_image_name():
    files = {"camera/exif.jpg": real_world_images()["camera/exif.jpg"], "notes.txt": b""}
    batch = {
        "path": np.array([f"/src/{k}" for k in files], dtype=object),
        "bytes": np.array(list(files.values()), dtype=object),  # read_sources reads no .txt
        "size": np.array([len(files["camera/exif.jpg"]), 7]),
    }
    out = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert list(out["status"]) == ["ok", "error"]
    assert out["metadata"][0] == "exif" and out["exif"][0].startswith(b"MM\x00*")
    assert out["icc"][0] == b"" and out["xmp"][0] == b""
    assert out["source_sha256"][0] == hashlib.sha256(files["camera/exif.jpg"]).hexdigest()
    assert out["error"][1] == "not an image file: only images are archived"
    # Its listed size; its SHA-256 comes from the copy --keep-failed makes (archive/write.py).
    assert (out["source_bytes"][1], out["source_sha256"][1]) == (7, None)


def test_decode_batch_passes_what_was_not_read_beside_an_images_bytes_to_the_write_stage():
    data = real_world_images()["camera/exif.jpg"]
    batch = {
        "path": np.array(["/src/a.jpg"], dtype=object),
        "bytes": np.array([data], dtype=object),
        "s3_tags": np.array([b""], dtype=object),
        "not_read": np.array(["S3 object tags (2: reading them was refused)"], dtype=object),
    }
    out = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert out["status"][0] == "ok" and out["metadata"][0] == "exif"
    assert out["conversion"][0] == "EXIF orientation 6 applied"
    assert out["not_read"][0] == "S3 object tags (2: reading them was refused)"


IPTC = b"\x1c\x02\x78\x00\x07caption"  # IPTC 2:120, Caption-Abstract


def photoshop_resources(iptc: bytes = IPTC) -> bytes:
    """Photoshop image resources holding one IPTC block (resource 0x0404)."""
    return b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2)


def jpeg_with_app13(pixels: np.ndarray, payload: bytes, comment: bytes = b"scanned 1998") -> bytes:
    """A JPEG with a comment and `payload` in an APP13 segment."""
    return jpeg_with_segments(pixels, [(0xED, payload), (0xFE, comment)])


def jpeg_with_segments(pixels: np.ndarray, segments: list[tuple[int, bytes]]) -> bytes:
    """A JPEG with these (marker, payload) segments after its SOI."""
    data = encode(Image.fromarray(pixels), "JPEG")
    spliced = b"".join(
        bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
        for marker, payload in segments
    )
    return data[:2] + spliced + data[2:]


def png_with_text(pixels: np.ndarray, keys: list[str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key in keys:
        info.add_text(key, "value")
    return encode(Image.fromarray(pixels), "PNG", pnginfo=info)


def test_a_pngs_exif_and_iptc_in_imagemagicks_raw_profile_text_travel():
    """Older ImageMagick wrote EXIF and IPTC as PNG text before PNG had eXIf: they travel as
    the EXIF (orientation applied, then set to 1) and IPTC of any other source."""
    exif = Image.Exif()
    exif.update({271: "Sony", 274: 6})
    exif.get_ifd(0x8825)[1] = "N"
    iptc = b"\x1c\x02\x19\x00\x04dune"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", raw_profile("exif", exif.tobytes()), zip=True)
    info.add_text("Raw profile type iptc", raw_profile("iptc", iptc), zip=True)
    data = encode(Image.fromarray(photo(48, 32)), "PNG", pnginfo=info)
    decoded = decode_image(data)
    assert decoded.pixels.shape == (48, 32, 3)
    assert decoded.conversion == "EXIF orientation 6 applied"
    assert decoded.metadata.names == "exif,photoshop"
    carried = Image.Exif()
    carried.load(decoded.metadata.exif)
    assert carried[274] == 1 and carried[271] == "Sony" and carried.get_ifd(0x8825) == {1: "N"}
    assert decoded.metadata.photoshop == b"8BIM\x04\x04\x00\x00\x00\x00\x00\x09" + iptc + b"\x00"
    # Beside a PNG's own eXIf and Photoshop text, they are not carried, and said so.
    info.add_text(
        "Raw profile type 8bim", raw_profile("8bim", b"8BIM\x04\x0c\x00\x00\x00\x00\x00\x00")
    )
    both = encode(
        Image.fromarray(photo(48, 32)),
        "PNG",
        pnginfo=info,
        exif=b"Exif\x00\x00" + exif.tobytes()[6:],
    )
    assert (
        "PNG text 'Raw profile type exif', 'Raw profile type iptc'" in decode_image(both).conversion
    )


def test_a_jpegs_photoshop_resources_and_comment_travel():
    """IPTC (in Photoshop's APP13 resources) and the comment, byte for byte."""
    comment = b"scanned 1998 \xe9\x00"  # not UTF-8, and a NUL: bytes, not text
    data = jpeg_with_app13(photo(64, 48, 3), b"Photoshop 3.0\x00" + photoshop_resources(), comment)
    decoded = decode_image(data)
    assert decoded.metadata == Metadata(photoshop=photoshop_resources(), comment=comment)
    assert decoded.metadata.names == "photoshop,comment" and decoded.conversion is None
    gif = decode_image(encode(Image.fromarray(photo(64, 48, 3)), "GIF", comment=b"hi"))
    assert gif.metadata.comment == b"hi" and gif.conversion == "P -> RGB"


def test_a_pngs_unicode_comment_travels_as_utf8():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", "日本語 comment")
    decoded = decode_image(encode(Image.fromarray(photo(64, 48, 3)), "PNG", pnginfo=info))
    assert decoded.metadata.comment == "日本語 comment".encode() and decoded.conversion is None


@pytest.mark.parametrize(
    ("make", "note"),
    [
        (  # 8 APP13 segments of Photoshop resources, joined
            lambda p: jpeg_with_segments(
                p, [(0xED, b"Photoshop 3.0\x00" + b"8BIM" * 16_000) for _ in range(8)]
            ),
            "not carried: Photoshop resources of 512,000 bytes, over the 500,000 an LR carries",
        ),
        (  # two comments, joined by a newline: more than one COM segment holds
            lambda p: jpeg_with_segments(p, [(0xFE, b"c" * 40_000), (0xFE, b"d" * 40_000)]),
            "not carried: comment of 80,001 bytes, over the 65,533 an LR carries",
        ),
        (
            lambda p: png_with_text(p, ["Raw profile type 8bim"]),  # "value": no raw profile
            "not carried: PNG text 'Raw profile type 8bim'",
        ),
        (
            lambda p: jpeg_with_app13(p, b"Adobe_Photoshop2.5:" + IPTC),
            "not carried: APP13 segment that is no Photoshop 3.0 block",
        ),
        (
            lambda p: png_with_text(p, ["Author", "Title"]),
            "not carried: PNG text 'Author', 'Title'",
        ),
        (
            lambda p: png_with_text(p, [f"k{i}" for i in range(7)]),
            "not carried: PNG text 'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6'",
        ),
        (lambda p: png_with_text(p, ["Comment"]), None),
        (  # Pillow keeps the last of one keyword
            lambda p: png_with_text(p, ["Comment", "Comment"]),
            "not carried: PNG text 'Comment' but the last of its 2 chunks",
        ),
        (
            lambda p: png_with_info(p, lambda i: i.add_itxt("Comment", "Привет", "ru", "Отзыв")),
            "not carried: PNG text 'Comment' language tag",
        ),
        (  # how to show the pixels travels; when they were made does not, so it is named
            lambda p: png_with_info(
                p,
                lambda i: [
                    i.add(b"gAMA", struct.pack(">I", 100000)),
                    i.add(b"cHRM", struct.pack(">8I", *[31270, 32900] * 4)),
                    i.add(b"tIME", struct.pack(">HBBBBB", 2021, 7, 4, 12, 34, 56)),
                ],
            ),
            "not carried: PNG tIME",
        ),
        (  # an ICC profile overrides the sRGB chunk: the profile travels
            lambda p: with_chunk(
                encode(Image.fromarray(p), "PNG", icc_profile=display_p3_icc()),
                png_chunk(b"sRGB", b"\x00"),
            ),
            "not carried: PNG sRGB",
        ),
        (  # an aspect ratio alone (unit 0): no density to carry
            lambda p: png_with_chunks(p, [png_chunk(b"pHYs", struct.pack(">IIB", 2, 1, 0))]),
            "not carried: PNG pHYs",
        ),
        (  # what follows IEND is no part of the image (the file is kept as it is for it)
            lambda p: png_with_chunks(
                p, [], after=png_chunk(b"tEXt", b"Comment\x00late") + b"junk"
            ),
            None,
        ),
        (  # an iTXt that is not UTF-8: Pillow leaves it out of its text
            lambda p: png_with_chunks(
                p, [png_chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00\xff\xfe")]
            ),
            "not carried: PNG text 'Comment'",
        ),
        (
            lambda p: png_with_chunks(p, [png_chunk(b"prV" + bytes([c]), b"") for c in b"abcdefg"]),
            "not carried: PNG prVa, prVb, prVc, prVd, prVe, prVf, prVg",
        ),
        (  # a transparent colour of RGB pixels, some of them black
            lambda p: encode(Image.fromarray(p), "PNG", transparency=(0, 0, 0)),
            "RGB -> RGB, alpha dropped; not carried: PNG tRNS",
        ),
        (  # a resolution in no unit (1): an aspect ratio alone
            lambda p: encode(Image.fromarray(p), "TIFF", tiffinfo={282: 2, 283: 1, 296: 1}),
            "not carried: TIFF tags XResolution, YResolution, ResolutionUnit",
        ),
        (  # half a density
            lambda p: encode(Image.fromarray(p), "TIFF", tiffinfo={282: 300, 296: 2}),
            "not carried: TIFF tags XResolution, ResolutionUnit",
        ),
        (lambda p: gif_with_xmp(p), "P -> RGB; not carried: GIF application extension XMP"),
        (  # Pillow keeps the last application extension it reads
            lambda p: gif_with_xmp(p, then=b"NETSCAPE2.0"),
            "P -> RGB; not carried: GIF application extension XMP",
        ),
        (
            lambda p: gif_with_xmp(p, then=b"ICCRGBG1012"),
            "P -> RGB; not carried: GIF application extensions XMP, 'ICCRGBG1012'",
        ),
        (  # Pillow reads the comments before the image only
            lambda p: gif_with_blocks(p, after=GIF_COMMENT),
            "P -> RGB; not carried: GIF comment after the image",
        ),
        (lambda p: gif_with_blocks(p, after=b"\x21\xfe\x00"), "P -> RGB"),  # an empty one
        (lambda p: gif_with_blocks(p, before=GIF_COMMENT), "P -> RGB"),  # carried
        (  # carried as one, joined by a newline
            lambda p: gif_with_blocks(p, before=GIF_COMMENT * 2),
            "P -> RGB; not carried: GIF comments apart (2 joined by newlines)",
        ),
        (
            lambda p: jpeg_with_segments(p, [(0xFE, b"first"), (0xFE, b"second")]),
            "not carried: JPEG COM segments apart (2 joined by newlines)",
        ),
        (  # text drawn over the image, which Pillow does not draw
            lambda p: gif_with_blocks(p, after=GIF_PLAIN_TEXT),
            "P -> RGB; not carried: GIF plain text extension",
        ),
        (
            lambda p: gif_with_blocks(p, before=GIF_PLAIN_TEXT + GIF_COMMENT, after=GIF_COMMENT),
            "P -> RGB; not carried: GIF plain text extension, GIF comment after the image",
        ),
        (
            lambda p: webp_with_chunks(p, [webp_chunk(b"XTRA", b"secret")]),
            "not carried: WebP chunk 'XTRA'",
        ),
        (
            lambda p: webp_with_chunks(p, [webp_chunk(b"XTRA", b"odd"), webp_chunk(b"C2PA", b"")]),
            "not carried: WebP chunks 'XTRA', 'C2PA'",
        ),
        (  # a chunk after the RIFF chunk is no part of the image (the file is kept for it)
            lambda p: webp_with_chunks(p, []) + webp_chunk(b"XTRA", b"secret"),
            None,
        ),
        (  # its pixels and their alpha (ALPH), ICC profile, EXIF and XMP
            lambda p: encode(
                Image.fromarray(np.dstack([p, np.full(p.shape[:2], 128, np.uint8)])),
                "WEBP",
                icc_profile=display_p3_icc(),
                exif=camera_exif(1),
                xmp=xmp_packet(1),
            ),
            "RGBA -> RGB, alpha dropped",
        ),
        (
            lambda p: bmp_v5(p, BMP_CALIBRATED, endpoints=SRGB_ENDPOINTS),
            "not carried: BMP calibrated colour endpoints",
        ),
        (lambda p: bmp_v5(p, BMP_CALIBRATED), None),  # no endpoints nor gammas: nothing said
        (
            lambda p: bmp_v5(p, b"LINK", profile=b"C:\\Windows\\color\\P3.icc\x00"),
            "not carried: BMP linked ICC profile",
        ),
        (lambda p: bmp_v5(p, b"sRGB"), None),
        (lambda p: bmp_v5(p, b"Win "), None),
        (  # its offset beyond the file's end
            lambda p: bmp_v5(p, b"MBED", profile=display_p3_icc())[:-100],
            "not carried: BMP ICC profile",
        ),
        (  # carried in its EXIF
            lambda p: encode(Image.fromarray(p), "TIFF", tiffinfo={270: "d", 33432: "(c) me"}),
            None,
        ),
        (  # Photoshop's layers, not carried; a date in IFD0 and a private tag, in its EXIF
            lambda p: tiff_with_tags(
                p,
                {
                    37724: (TiffTags.UNDEFINED, b"Adobe Photoshop Document Data Block\x00"),
                    36867: (TiffTags.ASCII, "2024:01:02 03:04:05"),
                    65000: (TiffTags.UNDEFINED, b"private"),
                },
            ),
            "not carried: TIFF tags ImageSourceData",
        ),
        (  # carried in its EXIF
            lambda p: encode(
                Image.fromarray(p),
                "TIFF",
                tiffinfo={tag: "x" for tag in (269, 270, 271, 272, 285, 305, 315)},
            ),
            None,
        ),
        (
            lambda p: png_with_text(p, [f"k{i:02d}" for i in range(52)]),
            "not carried: PNG text " + ", ".join(f"'k{i:02d}'" for i in range(50)) + " and 2 more",
        ),
        (  # a camera's Exif and GPS IFDs travel in its EXIF; its IPTC is said by what it is
            lambda p: tiff_with_tags(
                p,
                {
                    271: (TiffTags.ASCII, "Canon"),
                    33723: (TiffTags.UNDEFINED, b"\x1c\x02\x19\x00\x04dune"),
                    34665: (TiffTags.LONG, {36867: "2026:01:02 03:04:05"}),
                    34853: (TiffTags.LONG, {1: "N"}),
                },
            ),
            "not carried: TIFF IPTC",
        ),
        (  # what lays the pixels out, and a profile, XMP and density that are carried
            lambda p: encode(
                Image.fromarray(p),
                "TIFF",
                compression="jpeg",
                icc_profile=display_p3_icc(),
                tiffinfo={700: xmp_packet(1)},
                dpi=(300, 300),
            ),
            None,
        ),
        (lambda p: encode(Image.fromarray(p).convert("P"), "TIFF"), "P -> RGB"),  # ColorMap
        (  # ExtraSamples, opaque throughout
            lambda p: encode(Image.fromarray(p).convert("RGBA"), "TIFF"),
            "RGBA -> RGB, its alpha opaque throughout",
        ),
        (lambda p: encode(Image.fromarray(p), "JPEG"), None),
        (lambda p: encode(Image.fromarray(p), "PNG", pnginfo=xmp_info()), None),
    ],
)
def test_metadata_that_does_not_travel_is_named(make, note: str | None):
    """What a source holds beside its pixels and metadata that travels is said in its row,
    never dropped without a word."""
    assert decode_image(make(photo(64, 48, 3))).conversion == note


# What a TIFF's EXIF carries of a camera's tags, by ExifTool's names
CAMERA_TAGS = (
    "Make",
    "Model",
    "Artist",
    "DateTimeOriginal",
    "ExposureTime",
    "GPSLatitude",
    "GPSLongitude",
)


def exiftool_numbers(tmp_path: Path, files: dict[str, bytes]) -> dict[str, dict]:
    """Each file's tags as ExifTool reads them (-n: numbers, not texts), by its name."""
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    command = [exiftool(), "-j", "-n", *(str(tmp_path / name) for name in files)]
    read = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {Path(tags["SourceFile"]).name: tags for tags in read}


@pytest.mark.parametrize(("order", "big"), [("<", False), (">", False), ("<", True)])
def test_a_tiffs_exif_and_gps_travel_in_its_exif(tmp_path: Path, order: str, big: bool):
    """A camera TIFF's Make, Model and Artist, its Exif IFD (capture date, exposure) and GPS
    IFD (the position's rationals) travel in its EXIF, in its byte order, orientation 1, into a
    restored JPEG, as ExifTool reads them; its MakerNote and an entry of an unknown field type
    do not, and its row says so. ExifTool reads a BigTIFF's GPS IFD by the Exif IFD's tag
    names: a classic TIFF of the same tags is what the restored JPEG is compared with."""
    source = camera_tiff(order, big, orientation=6)
    decoded = decode_image(source)
    assert decoded.conversion == (
        f"EXIF orientation 6 applied; not carried: TIFF EXIF MakerNote, {UNNAMED_TAG}"
    )
    assert decoded.metadata.exif[:2] == source[:2]
    jpeg = encode_restored(decoded.pixels, "jpeg", decoded.metadata, False)[0]
    read = exiftool_numbers(
        tmp_path, {"source.tif": camera_tiff(order, orientation=6), "restored.jpg": jpeg}
    )
    tags = {name: read["source.tif"][name] for name in CAMERA_TAGS}
    assert tags == {name: read["restored.jpg"].get(name) for name in CAMERA_TAGS}
    assert tags["Make"] == "TADM Camera Co." and tags["ExposureTime"] == 0.004
    assert tags["GPSLatitude"] == pytest.approx(48 + 51 / 60 + 29.5 / 3600)
    assert (read["source.tif"]["Orientation"], read["restored.jpg"]["Orientation"]) == (6, 1)
    assert "MakerNoteUnknown" not in read["restored.jpg"]


def test_a_colour_key_some_pixel_uses_is_transparency_at_any_bit_depth():
    """A PNG tRNS colour key of 8 or 16-bit gray or RGB pixels: where a pixel has it, the image
    has transparent pixels, which its LR drops, and its row says so; a key no pixel has is
    transparency of none."""
    gray = (photo(64, 48, 3)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    gray[:8] = 1000
    rgb = photo(64, 48, 4).astype(np.uint16) * 257
    rgb[:8] = (1000, 2000, 3000)

    def keyed(pixels: np.ndarray, key: bytes) -> bytes:
        data = png16(pixels)
        return data[:33] + png_chunk(b"tRNS", key) + data[33:]  # after IHDR

    for data, transparent in (
        (keyed(gray, struct.pack(">H", 1000)), True),
        (keyed(gray, struct.pack(">H", 1001)), False),
        (keyed(rgb, struct.pack(">HHH", 1000, 2000, 3000)), True),
        (keyed(rgb, struct.pack(">HHH", 60000, 2000, 3000)), False),
    ):
        decoded = decode_image(data)
        assert decoded.transparent == transparent
        assert ("alpha dropped" in decoded.conversion) == transparent, decoded.conversion


def test_a_tag_a_tiffs_first_ifd_repeats_is_named():
    """A broken first IFD holding Make twice: the first travels in its EXIF, the second (which
    a reader might have shown instead) is named, as one an Exif IFD repeats is."""
    data = bytearray(camera_tiff())
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    for entry in range(first + 2, first + 2 + 12 * count, 12):
        if struct.unpack_from("<H", data, entry)[0] == 272:  # Model, after Make: a second Make
            struct.pack_into("<H", data, entry, 271)
    decoded = decode_image(bytes(data))
    assert decoded.conversion == (
        f"not carried: TIFF EXIF MakerNote, {UNNAMED_TAG}, TIFF tags Make"
    )
    read = Image.Exif()
    read.load(decoded.metadata.exif)
    assert (read[271], read.get(272)) == ("TADM Camera Co.", None)


@pytest.mark.parametrize(
    ("make", "density"),
    [
        (lambda p: encode(Image.fromarray(p), "JPEG", dpi=(300, 150)), b"300 150 in"),
        (lambda p: jfif_in_cm(encode(Image.fromarray(p), "JPEG", dpi=(118, 118))), b"118 118 cm"),
        (lambda p: encode(Image.fromarray(p), "JPEG"), None),  # JFIF's 1:1 aspect ratio
        (lambda p: encode(Image.fromarray(p), "PNG", dpi=(300, 300)), b"11811 11811 m"),
        (lambda p: encode(Image.fromarray(p), "BMP", dpi=(96, 96)), b"3780 3780 m"),
        (
            lambda p: encode(Image.fromarray(p), "BMP", dpi=(1e6 / 39.3701,) * 2),
            b"1000000 1000000 m",
        ),
        (lambda p: bmp_density(encode(Image.fromarray(p), "BMP"), -1), None),  # signed
        (lambda p: encode(Image.fromarray(p), "TIFF", dpi=(300, 300)), b"300 300 in"),
        (
            lambda p: encode(Image.fromarray(p), "TIFF", tiffinfo={282: 118.5, 283: 59, 296: 3}),
            b"118.5 59 cm",
        ),
        (lambda p: encode(Image.fromarray(p), "WEBP"), None),
    ],
)
def test_the_pixel_density_a_source_states_is_carried(make, density: bytes | None):
    """A scan's 300 dpi says how large the paper was: the LR carries it, without a note."""
    decoded = decode_image(make(photo(64, 48, 3)))
    assert decoded.metadata.density == density and decoded.conversion is None


def test_a_pngs_colour_chunks_travel_as_they_were():
    """A gamma-1.0 PNG shown without its gAMA is far too dark: the LR (the thumbnail) and a
    restored PNG keep it; a JPEG or WebP has no place for it, and its restore says so."""
    chunks = [
        png_chunk(b"gAMA", struct.pack(">I", 100000)),
        png_chunk(
            b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
        ),
        png_chunk(b"sRGB", b"\x01"),
    ]
    data = encode(Image.fromarray(photo(64, 48, 3)), "PNG")
    data = data[:33] + b"".join(chunks) + data[33:]  # after IHDR, before the pixels
    decoded = decode_image(data)
    colour = b"".join(c[4:-4] for c in chunks)  # each chunk's type and data
    assert decoded.metadata.png_colour == colour and decoded.conversion is None
    header = LrHeader(64, 48, 16, "m", decoded.metadata)
    lr = encode_lr_png(photo(4, 3), header)
    assert all(c in lr for c in chunks) and decode_lr_png(lr)[1] == header
    with Image.open(io.BytesIO(encode_output(decoded.pixels, "png", decoded.metadata))) as img:
        assert (img.info["gamma"], img.info["srgb"]) == (1.0, 1)
        assert img.info["chromaticity"][:2] == (0.3127, 0.329)
    assert not_held(decoded.metadata, "jpeg") == not_held(decoded.metadata, "webp")
    assert not_held(decoded.metadata, "jpeg") == {"png_colour": ""}


def test_the_density_of_an_image_turned_a_quarter_is_turned_too():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(photo(64, 48, 3)), "JPEG", dpi=(300, 150), exif=exif)
    decoded = decode_image(data)
    assert decoded.pixels.shape[:2] == (64, 48) and decoded.metadata.density == b"150 300 in"


def bmp_density(bmp: bytes, ppm: int) -> bytes:
    """A BMP whose header states `ppm` pixels per metre across and down (signed numbers)."""
    return bmp[:38] + struct.pack("<ii", ppm, ppm) + bmp[46:]


def jfif_in_cm(jpeg: bytes) -> bytes:
    """A JPEG whose JFIF header states its density in pixels per centimetre (unit 2)."""
    assert jpeg[6:11] == b"JFIF\x00"
    return jpeg[:13] + b"\x02" + jpeg[14:]


def png_with_chunks(pixels: np.ndarray, chunks: list[bytes], after: bytes = b"") -> bytes:
    """A PNG with these chunks before its IEND, and the bytes `after` after it."""
    data = encode(Image.fromarray(pixels), "PNG")
    iend = len(data) - 12
    return data[:iend] + b"".join(chunks) + data[iend:] + after


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    """PNG bytes with `chunk` before the IEND chunk."""
    return png[:-12] + chunk + png[-12:]


def png_with_info(pixels: np.ndarray, add) -> bytes:
    """A PNG with the chunks `add(info)` puts in its PngInfo."""
    info = PngImagePlugin.PngInfo()
    add(info)
    return encode(Image.fromarray(pixels), "PNG", pnginfo=info)


def gif_with_xmp(pixels: np.ndarray, then: bytes = b"") -> bytes:
    """A GIF with an XMP application extension after its global colour table, and the
    application extension `then` (identifier) after it."""
    extension = b"\x21\xff\x0bXMP DataXMP" + b"\x0c<x:xmpmeta/>" + b"\x00"
    if then:
        extension += b"\x21\xff\x0b" + then + b"\x03\x01\x00\x00\x00"
    return gif_with_blocks(pixels, before=extension)


GIF_COMMENT = b"\x21\xfe\x0bafter image\x00"  # a comment extension: one sub-block of 11 bytes
GIF_PLAIN_TEXT = (  # a grid of 8x16 cells at 0, 0, its colours, and its text
    b"\x21\x01\x0c" + struct.pack("<4H4B", 0, 0, 64, 16, 8, 16, 1, 0) + b"\x0bHello world\x00"
)


def gif_with_blocks(pixels: np.ndarray, before: bytes = b"", after: bytes = b"") -> bytes:
    """A GIF with the extension blocks `before` after its global colour table, before its
    image, and `after` after its image, before its trailer."""
    data = encode(Image.fromarray(pixels).convert("P"), "GIF")
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    assert data.endswith(b"\x3b")
    return data[:at] + before + data[at:-1] + after + data[-1:]


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    """One RIFF chunk: its FourCC, size and data, padded to an even size."""
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)


def webp_with_chunks(pixels: np.ndarray, chunks: list[bytes]) -> bytes:
    """An extended WebP (VP8X, as its EXIF asks) with these chunks at the end of its RIFF
    chunk."""
    data = encode(Image.fromarray(pixels), "WEBP", exif=camera_exif(1)) + b"".join(chunks)
    assert data[12:16] == b"VP8X"
    return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]


BMP_CALIBRATED = bytes(4)  # LCS_CALIBRATED_RGB
# sRGB's red, green and blue in CIE XYZ (2.30 fixed point), and gammas of 2.2 (16.16)
SRGB_ENDPOINTS = struct.pack(
    "<9I",
    *(
        round(v * 2**30)
        for v in (0.4124, 0.2126, 0.0193, 0.3576, 0.7152, 0.1192, 0.1805, 0.0722, 0.9505)
    ),
) + struct.pack("<3I", *[round(2.2 * 2**16)] * 3)


def bmp_v5(
    pixels: np.ndarray, space: bytes, profile: bytes = b"", endpoints: bytes = bytes(48)
) -> bytes:
    """A 24-bit BMP of `pixels` whose BITMAPV5HEADER states the colour space `space` (as its
    name is spelled, b"MBED", b"sRGB": stored as a little-endian number, reversed), these
    `endpoints` and gammas, and `profile` after the pixels, at the offset it states from the
    header's start."""
    height, width = pixels.shape[:2]
    row = (width * 3 + 3) // 4 * 4
    rows = b"".join(
        pixels[y, :, ::-1].tobytes().ljust(row, b"\x00") for y in reversed(range(height))
    )
    header = struct.pack("<IiiHHIIiiII", 124, width, height, 1, 24, 0, len(rows), 0, 0, 0, 0)
    header += bytes(16) + space[::-1] + endpoints  # no bit masks
    header += struct.pack("<4I", 4, 124 + len(rows), len(profile), 0)  # intent, profile
    size = 14 + len(header) + len(rows) + len(profile)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(header)) + header + rows + profile


def tiff_with_subifd(pixels: np.ndarray) -> bytes:
    """A TIFF of `pixels` whose second image, `pixels` upside down, lies in a SubIFD (tag 330)
    of its first IFD, as a DNG's full-size raw does, not in its IFD chain."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[330] = 0
    ifd.tagtype[330] = TiffTags.LONG
    first, second = Image.fromarray(pixels), Image.fromarray(pixels[::-1])
    data = bytearray(encode(first, "TIFF", save_all=True, append_images=[second], tiffinfo=ifd))
    assert data[:4] == b"II*\x00"
    first_ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first_ifd)[0]
    entries = range(first_ifd + 2, first_ifd + 2 + 12 * count, 12)
    entry = next(at for at in entries if struct.unpack_from("<H", data, at)[0] == 330)
    chain = first_ifd + 2 + 12 * count  # the offset of the next IFD
    data[entry + 8 : entry + 12] = data[chain : chain + 4]  # the second IFD, as a SubIFD
    data[chain : chain + 4] = bytes(4)  # and none after the first
    return bytes(data)


def xmp_info() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(1).decode())
    return info


def int32_tiff(values: np.ndarray) -> bytes:
    """A TIFF of 32-bit signed integer pixels (Pillow mode I)."""
    return encode(Image.fromarray(values.astype(np.int32), "I"), "TIFF")


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        (np.arange(256 * 256).reshape(256, 256) * 16, 0, 1048560),
        (np.full((40, 40), -5), -5, -5),
    ],
)
def test_32_bit_integer_pixels_beyond_16_bits_are_a_permanent_error_not_white(
    values: np.ndarray, low: int, high: int
):
    data = int32_tiff(values)
    message = (
        f"unsupported image: 32-bit integer pixels (mode I) with values from {low} to {high}, "
        "outside 0-65535"
    )
    with pytest.raises(ValueError) as raised:
        decode_image(data)
    assert str(raised.value) == message
    batch = {"path": np.array(["/src/deep.tif"], dtype=object), "bytes": np.array([data], object)}
    out = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert (out["status"][0], out["error"][0], out["error_kind"][0]) == (
        "error",
        message,
        "permanent",  # --keep-failed keeps it as it is
    )


def test_integer_pixels_within_16_bits_are_scaled_as_16_bit():
    values = np.array([[0, 257, 32896, 65535]] * 20)
    decoded = decode_image(int32_tiff(values))
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 1, 128, 255])
    assert decoded.conversion == "I 32-bit grayscale -> 8-bit RGB"
    unsigned = encode(Image.fromarray(values.astype(np.uint16)), "TIFF")  # Pillow's I;16
    decoded = decode_image(unsigned)
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 1, 128, 255])
    assert decoded.conversion == "I;16 16-bit grayscale -> 8-bit RGB"
    signed = encode(Image.fromarray(values.astype(np.uint16) // 2), "TIFF", tiffinfo={339: 2})
    decoded = decode_image(signed)  # SampleFormat 2: signed 16-bit, Pillow's mode I
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 0, 64, 127])
    assert decoded.conversion == "I 16-bit grayscale -> 8-bit RGB"
    with pytest.raises(ValueError, match="values from -32640 to 257, outside 0-65535"):
        decode_image(encode(Image.fromarray(values.astype(np.uint16)), "TIFF", tiffinfo={339: 2}))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, reading the cut short
@pytest.mark.parametrize(
    ("exif", "why"),
    [
        (b"garbage bytes, no TIFF structure", "not a TIFF structure"),
        (b"II*\x00\xff\xff\xff\xff", "its first IFD cut short"),
        (b"MM\x00*\x00\x00\x00\x08\x00\x05", "its first IFD cut short"),
    ],
)
def test_an_unreadable_exif_is_dropped_with_a_word_and_the_pixels_archived(exif: bytes, why: str):
    pixels = photo(64, 48, 4)
    plain = decode_image(encode(Image.fromarray(pixels), "JPEG")).pixels
    note = f"EXIF unreadable ({why}), dropped"
    jpeg = decode_image(jpeg_with_segments(pixels, [(0xE1, b"Exif\x00\x00" + exif)]))
    np.testing.assert_array_equal(jpeg.pixels, plain)
    assert (jpeg.conversion, jpeg.metadata) == (note, Metadata())
    png = decode_image(encode(Image.fromarray(pixels), "PNG", exif=exif))
    np.testing.assert_array_equal(png.pixels, pixels)
    assert (png.conversion, png.metadata) == (note, Metadata())


def test_an_unreadable_exif_beside_a_readable_xmp_keeps_the_xmp_and_its_orientation():
    data = jpeg_with_segments(
        photo(80, 64, 5),
        [
            (0xE1, b"Exif\x00\x00not TIFF"),
            (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(6)),
        ],
    )
    decoded = decode_image(data)
    assert decoded.pixels.shape == (80, 64, 3)
    assert decoded.conversion == (
        "XMP orientation 6 applied; EXIF unreadable (not a TIFF structure), dropped"
    )
    assert decoded.metadata == Metadata(xmp=xmp_packet(1))


JUMBF = b"JP\x00\x01\x00\x00\x00\x01\x00\x00\x00\x20jumbc2pa"  # a C2PA manifest's first box
EXTENDED_XMP = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + b"<x:xmpmeta/>"
XMP_SEGMENT = b"http://ns.adobe.com/xap/1.0/\x00"


def other_exif() -> bytes:
    exif = Image.Exif()
    exif[0x013B] = "Another Artist"
    return exif.tobytes()


OTHER_XMP = xmp_packet(1).replace(b"Ada", b"Bob")


@pytest.mark.parametrize(
    ("segments", "note"),
    [
        ([(0xEB, JUMBF)], "not carried: JPEG APP11 (JUMBF)"),
        ([(0xEC, b"Ducky\x00\x01\x00\x04\x00\x00\x00\x50")], "not carried: JPEG APP12"),
        ([(0xE1, EXTENDED_XMP)], "not carried: JPEG extended XMP"),
        ([(0xE3, b"Meta\x00"), (0xE2, b"FPXR\x00\x00")], "not carried: JPEG APP2, APP3"),
        (  # each kind once, in marker order, beside what travels
            [
                (0xE1, EXTENDED_XMP),
                (0xEC, b"Ducky\x00"),
                (0xEB, JUMBF),
                (0xEB, JUMBF),
                (0xE1, EXTENDED_XMP),
                (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(1)),
                (0xED, b"Photoshop 3.0\x00" + photoshop_resources()),
            ],
            "not carried: JPEG APP11 (JUMBF), APP12, extended XMP",
        ),
        (  # Pillow reads the first EXIF segment and the last XMP one
            [(0xE1, camera_exif(1).tobytes()), (0xE1, other_exif())],
            "not carried: JPEG EXIF segments after the first",
        ),
        (
            [(0xE1, XMP_SEGMENT + OTHER_XMP), (0xE1, XMP_SEGMENT + xmp_packet(1))],
            "not carried: JPEG XMP segments before the last",
        ),
        (
            [(0xEB, JUMBF), (0xED, b"Adobe_Photoshop2.5:" + IPTC)],
            "not carried: APP13 segment that is no Photoshop 3.0 block, JPEG APP11 (JUMBF)",
        ),
    ],
)
def test_jpeg_segments_that_do_not_travel_are_named(segments: list[tuple[int, bytes]], note: str):
    assert decode_image(jpeg_with_segments(photo(64, 48, 6), segments)).conversion == note


@pytest.mark.parametrize(
    "segments",
    [
        [(0xE1, camera_exif(1).tobytes()), (0xE1, camera_exif(1).tobytes())],
        [(0xE1, camera_exif(1).tobytes()), (0xE1, b"Exif\x00\x00")],
        [(0xE1, XMP_SEGMENT + xmp_packet(1)), (0xE1, XMP_SEGMENT + xmp_packet(1))],
    ],
    ids=["same-exif", "empty-exif", "same-xmp"],
)
def test_a_segment_that_repeats_the_one_read_loses_nothing(segments):
    assert decode_image(jpeg_with_segments(photo(64, 48, 6), segments)).conversion is None


@pytest.mark.parametrize(
    "data",
    [
        real_world_images()["camera/exif.jpg"],
        real_world_images()["news/iptc.jpg"],
        real_world_images()["xmp.jpg"],
        real_world_images()["colour/p3.jpg"],
        good_images()["cmyk.jpg"],  # APP14 Adobe
        jpeg_with_segments(photo(64, 48, 7), [(0xE0, b"JFXX\x00\x10")]),
    ],
    ids=["camera", "news", "xmp", "icc", "adobe", "jfxx"],
)
def test_ordinary_jpegs_have_no_segments_named(data: bytes):
    assert "not carried" not in (decode_image(data).conversion or "")


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", [3, 4, 8, 9])  # SHORT, LONG, SSHORT, SLONG
def test_an_orientation_of_any_integer_type_is_applied_once_and_reset(order: str, kind: int):
    """The standard says SHORT; Pillow reads others too, and turns the pixels by them: the
    EXIF carried must then say 1, or viewers turn the image twice."""
    code = {3: "H", 4: "I", 8: "h", 9: "i"}[kind]
    value = struct.pack(order + code, 6)
    entry = exif_entry(order, 0x0112, kind, 1, value)
    exif = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    exif += exif_ifd(order, [entry], 0)
    data = encode(Image.fromarray(photo(80, 64, 2)), "JPEG", exif=b"Exif\x00\x00" + exif)
    decoded = decode_image(data)
    assert decoded.pixels.shape == (80, 64, 3)  # stored 80 wide, shown 64 wide
    assert decoded.conversion == "EXIF orientation 6 applied"
    read = Image.Exif()
    read.load(decoded.metadata.exif)
    assert read[0x0112] == 1
    assert len(decoded.metadata.exif) == len(exif)


def test_16_bit_gray_with_a_gray_profile_is_converted_as_its_8_bit_version_is():
    """A gray profile describes the gray values, whatever their bit depth: 16-bit gray goes
    to sRGB through it as 8-bit gray does, not as if it had none."""
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (20, 1))
    icc = gray_icc("Linear Gray", 1.0)
    iccp = png_chunk(b"iCCP", b"Linear Gray\x00\x00" + zlib.compress(icc))
    gama = png_chunk(b"gAMA", struct.pack(">I", 100000))  # of the gray values, not of sRGB
    plain = png16(values)
    with_profile = plain[:33] + iccp + gama + plain[33:]  # after the signature and IHDR
    eight_bit = encode(
        Image.fromarray(np.round(values / 257).astype(np.uint8)), "PNG", icc_profile=icc
    )
    decoded = decode_image(with_profile)
    assert decoded.conversion == (
        "I;16 16-bit grayscale -> sRGB through ICC profile 'Linear Gray'; not carried: PNG gAMA"
    )
    np.testing.assert_array_equal(decoded.pixels, decode_image(eight_bit).pixels)
    assert decoded.pixels[0, 16, 0] > decode_image(plain).pixels[0, 16, 0] + 40  # linear: lighter
    assert decoded.metadata == Metadata()  # neither the profile nor gAMA describes sRGB pixels


def test_an_xmp_that_is_not_utf8_is_said_to_lose_its_invalid_bytes():
    xmp = xmp_packet(1).replace(b"Ada", b"Jos\xe9")
    decoded = decode_image(encode(Image.fromarray(photo(64, 48, 4)), "JPEG", xmp=xmp))
    assert decoded.metadata.xmp == xmp
    assert decoded.conversion == "XMP not UTF-8: its invalid bytes carried as U+FFFD"


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("form", ["rational", "two shorts"])
def test_an_orientation_pillow_reads_in_another_form_is_reset_as_one_short(order: str, form: str):
    """A RATIONAL 6/1 or a SHORT of count 2 (6, 6): Pillow turns the pixels by it, so the EXIF
    carried must say 1 however it was stored."""
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    if form == "rational":  # stored apart, after the IFD (8 + 2 + 12 + 4 = 26)
        entry = exif_entry(order, 0x0112, 5, 1, 26)
        exif = header + exif_ifd(order, [entry], 0) + struct.pack(order + "II", 6, 1)
    else:
        entry = exif_entry(order, 0x0112, 3, 2, struct.pack(order + "HH", 6, 6))
        exif = header + exif_ifd(order, [entry], 0)
    data = encode(Image.fromarray(photo(80, 64, 3)), "JPEG", exif=b"Exif\x00\x00" + exif)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow: "tag 274 had too many entries"
        decoded = decode_image(data)
        read = Image.Exif()
        read.load(decoded.metadata.exif)
    assert decoded.pixels.shape == (80, 64, 3)
    assert decoded.conversion == "EXIF orientation 6 applied"
    assert read[0x0112] == 1 and len(decoded.metadata.exif) == len(exif)


# A camera TIFF's Exif IFD (a date, a MakerNote stored apart) and GPS IFD, as Pillow writes them
CAMERA_TIFF_TAGS = {
    34665: {36867: "2024:01:01 12:00:00", 37500: b"MakerNote" * 10},
    34853: {1: "N"},
}
# The start of an MP4 file (its ftyp box), as a Motion Photo's video follows its JPEG
VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("fmt", "options", "end"),
    [
        ("JPEG", {}, "the JPEG's end (a Motion Photo's video, say)"),
        ("JPEG", {"progressive": True}, "the JPEG's end (a Motion Photo's video, say)"),
        (  # RST markers in its entropy-coded data
            "JPEG",
            {"restart_marker_rows": 1},
            "the JPEG's end (a Motion Photo's video, say)",
        ),
        (  # an EOI inside its EXIF segment, ending the thumbnail
            "JPEG",
            {"exif": b"Exif\x00\x00" + thumbnail_exif()},
            "the JPEG's end (a Motion Photo's video, say)",
        ),
        ("PNG", {}, "the PNG's IEND chunk"),
        ("GIF", {}, "the GIF's trailer"),
        ("GIF", {"comment": b"scanned 1998"}, "the GIF's trailer"),  # a block first
        ("BMP", {}, "the BMP's data"),
        ("TIFF", {}, "the TIFF's data"),
        ("TIFF", {"compression": "tiff_lzw"}, "the TIFF's data"),
        ("TIFF", {"tiffinfo": CAMERA_TIFF_TAGS}, "the TIFF's data"),  # an Exif and a GPS IFD
        ("WEBP", {}, "the WebP's RIFF chunk"),
        ("WEBP", {"lossless": True}, "the WebP's RIFF chunk"),
        ("HEIF", {}, "the HEIF's last box"),
        ("AVIF", {}, "the AVIF's last box"),
        ("JXL", {"lossless": True, "xmp": b"<x/>"}, "the JPEG XL container's last box"),
    ],
)
def test_bytes_after_the_image_keep_the_file_as_it_is(fmt: str, options: dict, end: str):
    """A Motion Photo's video follows its JPEG's EOI, where no decoder reads: an LR would lose
    it, so the file is to be kept as it is. Padding (0x00 and 0xFF bytes) loses nothing."""
    data = encode(Image.fromarray(photo(64, 48, 3)), fmt, **options)
    assert image_end(data, fmt) == image_end(data + VIDEO, fmt) == len(data)
    assert decode_image(data).kept_reason is None
    decoded = decode_image(data + VIDEO)
    assert decoded.kept_reason == (
        f"1,048 bytes after {end}, which an LR cannot hold: kept as it is"
    )
    np.testing.assert_array_equal(decoded.pixels, decode_image(data).pixels)
    assert decode_image(data + b"\x00" * 100 + b"\xff" * 7).kept_reason is None


def bmp_size(bmp: bytes, size: int) -> bytes:
    """A BMP whose header states `size` as its file size (bfSize)."""
    return bmp[:2] + struct.pack("<I", size) + bmp[6:]


def bmp_rle8(bmp: bytes, pixel_bytes: int) -> bytes:
    """A BMP whose header says its pixels are RLE8-compressed, of `pixel_bytes` bytes."""
    return bmp[:30] + struct.pack("<II", 1, pixel_bytes) + bmp[38:]


@pytest.mark.parametrize(
    ("make", "end"),
    [
        (lambda p: encode(Image.fromarray(p), "BMP"), len),
        (lambda p: encode(Image.fromarray(p).convert("P"), "BMP"), len),  # a palette first
        (lambda p: encode(Image.fromarray(p).convert("1"), "BMP"), len),  # rows of 1 bit
        (  # top-down rows: a negative height
            lambda p: (lambda b: b[:22] + struct.pack("<i", -p.shape[0]) + b[26:])(
                encode(Image.fromarray(p), "BMP")
            ),
            len,
        ),
        (lambda p: bmp_v5(p, b"MBED", profile=display_p3_icc()), len),  # the profile last
        # A size of 0, as some writers state, or a wrong one: the end of the pixels and profile
        (lambda p: bmp_size(encode(Image.fromarray(p), "BMP"), 0), len),
        (lambda p: bmp_size(encode(Image.fromarray(p), "BMP"), 54 + 100), len),
        (lambda p: (lambda b: bmp_size(b, len(b + VIDEO)))(encode(Image.fromarray(p), "BMP")), len),
        (lambda p: bmp_size(bmp_v5(p, b"MBED", profile=display_p3_icc()), 0), len),
        (lambda p: bmp_size(bmp_rle8(encode(Image.fromarray(p), "BMP"), 1000), 0), lambda d: 1054),
        (lambda p: bmp_rle8(encode(Image.fromarray(p), "BMP"), 0), lambda d: None),  # not said
    ],
)
def test_a_bmps_end_is_where_its_pixels_and_profile_end(make, end):
    """Bytes after a BMP's pixels and profile keep it as it is, whatever file size its header
    states: 0, a wrong one, or one that counts those bytes."""
    data = make(photo(61, 47, 3))  # rows padded to 4 bytes
    assert image_end(data + VIDEO, "BMP") == end(data)


@pytest.mark.parametrize("size", [None, 0, 54 + 100, "with the tail"])
def test_a_bmp_whose_header_states_a_wrong_size_is_kept_for_a_tail_alone(size):
    data = encode(Image.fromarray(photo(61, 47, 3)), "BMP")
    if size == "with the tail":  # a writer that appended the tail and counted it
        data = bmp_size(data, len(data + VIDEO))
    elif size is not None:
        data = bmp_size(data, size)
    assert decode_image(data).kept_reason is None
    assert decode_image(data + b"\x00" * 10).kept_reason is None
    assert decode_image(data + VIDEO).kept_reason == (
        "1,048 bytes after the BMP's data, which an LR cannot hold: kept as it is"
    )


def test_a_bmps_embedded_icc_profile_travels():
    """A BMP's BITMAPV5HEADER can embed an ICC profile, which Pillow does not read: it
    travels with the pixels as any source's profile does."""
    pixels = photo(64, 48, 3)
    decoded = decode_image(bmp_v5(pixels, b"MBED", profile=display_p3_icc()))
    assert decoded.metadata.icc == display_p3_icc() and decoded.metadata.names == "icc"
    assert decoded.conversion is None and decoded.kept_reason is None
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_a_tiffs_subifd_images_make_it_a_multi_frame_image():
    """Images in a TIFF's SubIFDs (a DNG's full-size raw, a pyramid's levels) are no frames to
    Pillow, which reads the first IFD only: such a TIFF is a multi-frame image all the same,
    an error row as a multi-page TIFF is, never archived as its first image alone."""
    data = tiff_with_subifd(photo(64, 48, 3))
    with Image.open(io.BytesIO(data)) as img:
        assert img.n_frames == 1
    message = "TIFF image with 1 SubIFD image beside its first: multi-frame images are not archived"
    with pytest.raises(ValueError, match=f"^{message}$"):
        decode_image(data)


def tifffile_tiff(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, photometric="rgb", **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "options",
    [{"tile": (16, 16)}, {"tile": (16, 16), "compression": "zlib"}, {"bigtiff": True}],
)
def test_bytes_after_a_tiled_or_big_tiffs_data_keep_it_as_it_is(options: dict):
    data = tifffile_tiff(photo(64, 48, 3), **options)
    assert decode_image(data).kept_reason is None
    assert decode_image(data + b"\x00" * 100).kept_reason is None
    assert decode_image(data + VIDEO).kept_reason == (
        "1,048 bytes after the TIFF's data, which an LR cannot hold: kept as it is"
    )


def tiff_entry_value(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF whose first IFD's entry of `tag` holds `value`."""
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    entries = range(first + 2, first + 2 + 12 * count, 12)
    entry = next(at for at in entries if struct.unpack_from("<H", data, at)[0] == tag)
    return data[: entry + 8] + struct.pack("<I", value) + data[entry + 12 :]


def test_a_tiff_whose_structure_points_past_its_end_is_kept_as_it_is():
    """An Exif IFD past the end of the file: Pillow reads the image without it, but where the
    TIFF's data end cannot be read, bytes after them (a tail) cannot be ruled out, so the file
    is kept as it is, tail or not, and its EXIF does not hold that IFD; an Exif IFD that points
    back to the first IFD is read once, and the TIFF shrunk."""
    data = encode(Image.fromarray(photo(64, 48, 3)), "TIFF", tiffinfo=CAMERA_TIFF_TAGS)
    for tail in (b"", VIDEO):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow: "Corrupt EXIF data"
            past = decode_image(tiff_entry_value(data, 34665, len(data) + 100) + tail)
        assert past.kept_reason == (
            "a TIFF structure that cannot be followed to its end (an offset past the end of the "
            "file, or over 1,024 IFDs), so bytes after its data cannot be ruled out, which an "
            "LR cannot hold: kept as it is"
        )
        assert past.pixels.shape == (48, 64, 3)
        # Its Exif IFD cannot be read: not carried, and said so; its GPS IFD travels.
        assert past.conversion == "not carried: TIFF EXIF"
        read = Image.Exif()
        read.load(past.metadata.exif)
        assert read.get_ifd(0x8825) == {1: "N"} and 0x8769 not in read
    loop = tiff_entry_value(data, 34665, struct.unpack_from("<I", data, 4)[0])
    assert image_end(loop, "TIFF") == len(loop)
    assert decode_image(loop).kept_reason is None


def test_a_geotiffs_georeferencing_is_said_before_a_tail():
    decoded = decode_image(tiff_with_tags(photo(64, 48, 3), GEOREFERENCING) + VIDEO)
    assert decoded.kept_reason.startswith("GeoTIFF georeferencing (ModelPixelScale")


def test_a_progressive_jpegs_end_is_found_after_its_last_scan():
    data = encode(Image.fromarray(photo(64, 48, 3)), "JPEG", progressive=True)
    assert data.count(b"\xff\xda") > 1  # SOS: several scans
    assert image_end(data + VIDEO, "JPEG") == len(data)


def test_an_mpos_further_images_are_no_tail():
    """An MPO's previews follow its first image's EOI: archived as its first, as it says."""
    first, second = (Image.fromarray(photo(64, 48, seed)) for seed in (3, 4))
    decoded = decode_image(encode(first, "MPO", save_all=True, append_images=[second]))
    assert decoded.conversion == "MPO: first of 2 images archived, the others not"
    assert decoded.kept_reason is None


def test_a_video_after_an_mpos_last_image_keeps_the_file():
    """A Pixel's Ultra HDR Motion Photo: the photo, its gain map (an MPO's second image), then
    the video."""
    first, second = (Image.fromarray(photo(64, 48, seed)) for seed in (3, 4))
    decoded = decode_image(encode(first, "MPO", save_all=True, append_images=[second]) + VIDEO)
    assert decoded.conversion == "MPO: first of 2 images archived, the others not"
    assert decoded.kept_reason == (
        "1,048 bytes after the MPO's last image, which an LR cannot hold: kept as it is"
    )


@pytest.mark.parametrize(
    ("fmt", "options", "name"),
    [
        ("HEIF", {}, "HEIF"),
        ("AVIF", {}, "AVIF"),
        ("JXL", {"lossless": True, "xmp": b"<x/>"}, "JPEG XL"),
    ],
)
def test_a_box_beside_the_image_keeps_the_file(fmt: str, options: dict, name: str):
    """A Samsung or Google Motion Photo in HEIC keeps its video in a top-level "mpvd" box,
    which no image decoder reads."""
    data = encode(Image.fromarray(photo(64, 48, 3)), fmt, **options)
    video = struct.pack(">I4s", 8 + len(VIDEO), b"mpvd") + VIDEO
    assert decode_image(data + video).kept_reason == (
        f"a 'mpvd' box of 1,056 bytes beside the {name}'s image (a Motion Photo's video, say), "
        "which an LR cannot hold: kept as it is"
    )


def test_an_animated_jpeg_xl_is_an_error_not_its_first_frame():
    """Pillow's JPEG XL plugin decodes an animation as one frame: the header says more."""
    frames = np.stack([photo(64, 48, seed) for seed in range(2)])
    with pytest.raises(ValueError, match="JXL image with an animation .* not archived"):
        decode_image(imagecodecs.jpegxl_encode(frames, photometric="rgb"))
    assert decode_image(imagecodecs.jpegxl_encode(frames[0], photometric="rgb")).conversion is None


def test_an_avif_of_two_images_is_an_error_not_its_primary_one():
    """Pillow's AVIF plugin counts frames of an animation, not the images of a collection."""
    with pytest.raises(ValueError, match="AVIF image with 2 frames .* not archived"):
        decode_image((CONTAINERS / "collection.avif").read_bytes())


@pytest.mark.parametrize(
    ("name", "conversion"),
    [
        ("depth.heic", "not carried: HEIF depth image"),
        ("apple_gainmap.heic", "not carried: HEIF HDR gain map"),
        ("depth.avif", "not carried: AVIF depth image"),
    ],
)
def test_a_heifs_images_beside_the_primary_one_are_named(name: str, conversion: str):
    """An iPhone's portrait photo holds a depth map, its HDR photos a gain map: an LR holds the
    primary image alone."""
    assert decode_image((CONTAINERS / name).read_bytes()).conversion == conversion


def test_an_avif_colour_description_not_srgb_is_named():
    """Pillow's AVIF plugin reads no nclx: libheif reads the colr box for it."""
    avif = encode(Image.fromarray(photo(64, 48)), "AVIF")
    assert decode_image(avif).conversion is None
    at = avif.index(b"colrnclx") + 8
    p3 = avif[:at] + struct.pack(">HHH", 12, 13, 6) + avif[at + 6 :]
    assert decode_image(p3).conversion == (
        "not carried: AVIF colour description (nclx: Display P3 primaries, sRGB transfer; the "
        "LR's colours read as sRGB)"
    )


def tiff_with_tags(pixels: np.ndarray, tags: dict[int, tuple[int, object]]) -> bytes:
    """A TIFF of `pixels` with these tags in its IFD: {tag: (TiffTags type, value)}."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, (kind, value) in tags.items():
        ifd[tag] = value
        ifd.tagtype[tag] = kind
    return encode(Image.fromarray(pixels), "TIFF", tiffinfo=ifd)


GEOREFERENCING = {  # 0.5 units a pixel, its corner at (500000, 4000000) of one projection
    33550: (TiffTags.DOUBLE, (0.5, 0.5, 0.0)),
    33922: (TiffTags.DOUBLE, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)),
    34735: (TiffTags.SHORT, (1, 1, 0, 1, 1024, 0, 1, 1)),
}


@pytest.mark.parametrize(
    ("tags", "names"),
    [
        (GEOREFERENCING, "ModelPixelScale, ModelTiepoint, GeoKeyDirectory"),
        (  # a 4x4 matrix in place of the scale and tie point
            {34264: (TiffTags.DOUBLE, (0.5, 0.0, 0.0, 500000.0) + (0.0,) * 12)},
            "ModelTransformation",
        ),
    ],
)
def test_a_geotiffs_georeferencing_keeps_the_file_as_it_is(tags: dict, names: str):
    """A scanned map or aerial photo restored without its georeferencing is of no use to GIS
    software: such a file is kept as it is, and its tags are named."""
    decoded = decode_image(tiff_with_tags(photo(64, 48, 3), tags))
    assert decoded.kept_reason == (
        f"GeoTIFF georeferencing ({names}), which an LR cannot hold: kept as it is"
    )
    assert decoded.conversion == f"not carried: TIFF tags {names}"


def test_decode_batch_makes_a_file_with_a_tail_a_kept_row_without_pixels():
    jpeg = encode(Image.fromarray(photo(64, 48, 3)), "JPEG")
    files = {"PXL_20240101_MP.jpg": jpeg + VIDEO, "still.jpg": jpeg}
    batch = {
        "path": np.array([f"/src/{k}" for k in files], dtype=object),
        "bytes": np.array(list(files.values()), dtype=object),
    }
    out = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert list(out["status"]) == ["kept", "ok"]
    assert out["kept_reason"][0].startswith("1,048 bytes after the JPEG's end")
    assert out["kept_reason"][1] is None and out["error"][0] is None
    assert out["pixels"][0].size == 0 and out["pixels"][1].shape == (48, 64, 3)
    assert (out["width"][0], out["height"][0]) == (64, 48)
    assert out["source_bytes"][0] == len(jpeg + VIDEO)
    assert out["source_sha256"][0] == hashlib.sha256(jpeg + VIDEO).hexdigest()
