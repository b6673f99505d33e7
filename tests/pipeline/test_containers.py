"""What the containers of HEIF, AVIF, JPEG XL and MPO files hold and where a TIFF's and a BMP's
data end (pipeline/containers.py), on files Pillow, pillow-heif, libjxl and tifffile write and
on the edited ones in tests/data/containers."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import encode, exif_entry, exif_ifd, photo
from PIL import Image, TiffImagePlugin, TiffTags

import pipeline.decode  # noqa: F401  (registers Pillow's HEIF and JPEG XL plugins)
from pipeline.containers import (
    HeifItems,
    bmp_end,
    boxes,
    boxes_end,
    foreign_boxes,
    heif_images_not_carried,
    heif_items,
    jxl_animated,
    jxl_codestream,
    mpo_end,
    tiff_end,
)

DATA = Path(__file__).parent.parent / "data" / "containers"


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_boxes_stop_at_what_is_no_box_and_at_a_second_file():
    heic = encode(Image.fromarray(photo(64, 48)), "HEIF")
    kinds = [b.kind for b in boxes(heic)]
    assert kinds[0] == "ftyp" and "meta" in kinds and "mdat" in kinds
    assert boxes_end(heic) == len(heic)
    large = struct.pack(">I4sQ", 1, b"free", 16 + 3) + b"abc"  # a 64-bit size
    assert [(b.kind, b.start, b.body, b.end) for b in boxes(heic + large)][-1] == (
        "free",
        len(heic),
        len(heic) + 16,
        len(heic) + 19,
    )
    mp4 = box(b"ftyp", b"mp42\x00\x00\x00\x00") + box(b"moov", b"x" * 10)
    assert boxes_end(heic + mp4) == len(heic)  # an MP4 appended is a file of its own
    assert boxes_end(heic + b"\x00\x00\x01\x00mdat") == len(heic)  # runs past the end


def test_foreign_boxes_are_what_holds_no_image():
    heic = encode(Image.fromarray(photo(64, 48)), "HEIF")
    assert foreign_boxes("HEIF", heic) == []
    video = box(b"mpvd", b"\x00" * 100)
    assert [(b.kind, b.end - b.start) for b in foreign_boxes("HEIF", heic + video)] == [
        ("mpvd", 108)
    ]
    bare = encode(Image.fromarray(photo(64, 48)), "JXL", lossless=True)
    assert bare.startswith(b"\xff\x0a") and foreign_boxes("JXL", bare + video) == []
    container = encode(Image.fromarray(photo(64, 48)), "JXL", lossless=True, xmp=b"<x/>")
    assert foreign_boxes("JXL", container) == []  # its XMP box is named, not foreign
    assert [b.kind for b in foreign_boxes("JXL", container + video)] == ["mpvd"]


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_a_jpeg_xl_animation_is_read_from_its_codestream_header(frames: int):
    pixels = np.stack([photo(40, 24, seed) for seed in range(frames)])
    data = imagecodecs.jpegxl_encode(pixels if frames > 1 else pixels[0], photometric="rgb")
    assert jxl_animated(data) == (frames > 1)
    assert not jxl_animated(data[:3])  # cut short: no header to read


@pytest.mark.parametrize(("width", "height"), [(1, 1), (64, 48), (513, 257), (1000, 600)])
def test_still_jpeg_xls_are_no_animation(width: int, height: int):
    image = Image.fromarray(photo(width, height))
    for data in (
        encode(image, "JXL", lossless=True),
        encode(image, "JXL", lossless=True, xmp=b"<x/>"),  # a container: its jxlc box
        imagecodecs.jpegxl_encode(np.asarray(image), photometric="rgb"),
    ):
        assert jxl_codestream(data).startswith(b"\xff\x0a")
        assert not jxl_animated(data)


def test_an_mpos_last_image_ends_where_its_index_says():
    first, second = (Image.fromarray(photo(64, 48, seed)) for seed in (3, 4))
    mpo = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(mpo)) as img:
        entries = img.mpinfo[0xB002]
    assert mpo_end(mpo, entries) == len(mpo)
    assert mpo_end(mpo + b"video", entries) == len(mpo)
    assert mpo_end(mpo[:-10], entries) is None  # the index says more than the file holds
    assert mpo_end(encode(first, "JPEG"), entries) is None  # no MPF segment


def test_heif_items_read_what_beside_the_primary_image():
    assert heif_items((DATA / "collection.avif").read_bytes()).images == 2
    depth = heif_items((DATA / "depth.heic").read_bytes())
    assert depth.images == 1 and heif_images_not_carried(depth.info) == ["depth image"]
    assert heif_images_not_carried(heif_items((DATA / "depth.avif").read_bytes()).info) == [
        "depth image"
    ]
    gain_map = heif_items((DATA / "apple_gainmap.heic").read_bytes())
    assert heif_images_not_carried(gain_map.info) == ["HDR gain map"]
    thumbnail = encode(Image.fromarray(photo(256, 192)), "HEIF", thumbnails=[64])
    assert heif_images_not_carried(heif_items(thumbnail).info) == ["thumbnail"]
    other = {"aux": {"urn:example:aux:x": [3]}}
    assert heif_images_not_carried(other) == ["auxiliary image 'urn:example:aux:x'"]
    assert heif_items(b"not a heif") == HeifItems()


def tiff_with_exif_ifds(pixels: np.ndarray) -> bytes:
    """A TIFF of `pixels` whose first IFD points to an Exif IFD (with a MakerNote stored apart)
    and a GPS IFD, as a camera's TIFF does."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[34665] = {36867: "2024:01:01 12:00:00", 37500: b"MakerNote" * 10}
    ifd[34853] = {1: "N"}
    return encode(Image.fromarray(pixels), "TIFF", tiffinfo=ifd)


def tifffile_tiff(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, photometric="rgb", **options)
    return out.getvalue()


def tiff_entry(data: bytes, tag: int) -> int:
    """Where the entry of `tag` lies in the first IFD of a little-endian TIFF."""
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    entries = range(first + 2, first + 2 + 12 * count, 12)
    return next(at for at in entries if struct.unpack_from("<H", data, at)[0] == tag)


def tiff_edited(data: bytes, at: int, value: int) -> bytes:
    """`data` with the 4-byte little-endian number at `at` set to `value`."""
    return data[:at] + struct.pack("<I", value) + data[at + 4 :]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: encode(Image.fromarray(p), "TIFF"),  # strips
        lambda p: encode(Image.fromarray(p), "TIFF", compression="tiff_lzw"),
        tiff_with_exif_ifds,
        lambda p: tifffile_tiff(p, tile=(16, 16), compression="zlib"),
        lambda p: tifffile_tiff(p, byteorder=">"),
        lambda p: tifffile_tiff(p, tile=(16, 16), bigtiff=True),
        lambda p: tifffile_tiff(p, tile=(16, 16), bigtiff=True, byteorder=">"),
    ],
)
def test_a_tiffs_end_is_the_last_of_what_its_structure_references(make):
    data = make(photo(64, 48))
    assert tiff_end(data) == tiff_end(data + b"a video" * 100) == len(data)


def tiff_with_exif_ifd_last(pixels: np.ndarray) -> bytes:
    """A TIFF of `pixels` whose Exif IFD, and the MakerNote it stores apart, follow its pixels."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[34665] = 0
    ifd.tagtype[34665] = TiffTags.LONG
    data = encode(Image.fromarray(pixels), "TIFF", tiffinfo=ifd)
    exif = len(data)
    maker_note = exif + 2 + 12 + 4  # after the Exif IFD of one entry
    data = tiff_edited(data, tiff_entry(data, 34665) + 8, exif)
    return data + exif_ifd("<", [exif_entry("<", 0x927C, 7, 100, maker_note)], 0) + bytes(100)


def test_a_tiffs_exif_ifd_and_the_values_it_stores_apart_are_part_of_it():
    data = tiff_with_exif_ifd_last(photo(64, 48))
    assert tiff_end(data) == len(data)
    unlinked = tiff_edited(data, tiff_entry(data, 34665) + 8, 0)
    assert tiff_end(unlinked) == len(data) - (2 + 12 + 4) - 100


def test_a_broken_or_hostile_tiff_claims_no_end():
    """Offsets past the end of the file, a strip without its byte count, a loop of IFDs: no
    end is claimed where one cannot be read, and the walk ends."""
    data = tiff_with_exif_ifds(photo(64, 48))
    first = struct.unpack_from("<I", data, 4)[0]
    chain = first + 2 + 12 * struct.unpack_from("<H", data, first)[0]  # the next IFD's offset
    exif = tiff_entry(data, 34665) + 8
    assert tiff_end(tiff_edited(data, 4, len(data))) is None  # the first IFD
    assert tiff_end(tiff_edited(data, chain, len(data) + 8)) is None
    assert tiff_end(tiff_edited(data, exif, len(data) + 100)) is None
    assert tiff_end(tiff_edited(data, tiff_entry(data, 273) + 8, len(data))) is None
    assert tiff_end(tiff_edited(data, tiff_entry(data, 279) + 8, 1 << 31)) is None
    no_counts = data[: tiff_entry(data, 279)] + b"\xff\xff" + data[tiff_entry(data, 279) + 2 :]
    assert tiff_end(no_counts) is None
    assert tiff_end(tiff_edited(data, chain, first)) == len(data)  # a loop
    assert tiff_end(tiff_edited(data, exif, first)) == len(data)
    assert tiff_end(data[:100]) is None
    assert tiff_end(b"II*\x00") is None and tiff_end(b"not a TIFF") is None
    pixels = struct.unpack_from("<I", data, tiff_entry(data, 273) + 8)[0]
    for at in range(pixels):  # every byte of its header, IFDs and values, at its worst
        for byte in (0x00, 0x7F, 0xFF):
            end = tiff_end(data[:at] + bytes([byte]) + data[at + 1 :])
            assert end is None or end <= len(data)


def bmp_header(bmp: bytes, at: int, fmt: str, *values: int) -> bytes:
    """`bmp` with `values` packed in little-endian `fmt` at `at`."""
    return bmp[:at] + struct.pack("<" + fmt, *values) + bmp[at + struct.calcsize("<" + fmt) :]


def test_a_bmps_end_is_where_its_pixels_end_whatever_size_its_header_states():
    """A BMP ends where its pixels do (bfOffBits and rows of 4-byte multiples, or the size of
    its compressed pixels, biSizeImage), whatever file size its header states: 0 (some writers
    do), one too small for its pixels, or one that counts bytes after them."""
    bmp = encode(Image.fromarray(photo(61, 47)), "BMP")
    assert bmp_end(bmp + b"a video") == len(bmp)
    for size in (0, 54, len(bmp) + 100, len(bmp + b"a video")):
        assert bmp_end(bmp_header(bmp, 2, "I", size) + b"a video") == len(bmp)
    rle = bmp_header(bmp, 30, "II", 1, 1000)  # RLE8: 1,000 bytes of pixels
    assert bmp_end(bmp_header(rle, 2, "I", 0)) == 54 + 1000
    assert bmp_end(bmp_header(rle, 30, "II", 1, 0)) is None  # their size not said
    assert bmp_end(bmp[:-1]) is None and bmp_end(bmp[:20]) is None
