"""What the containers of HEIF, AVIF, JPEG XL and MPO files hold (pipeline/containers.py), on
files Pillow, pillow-heif and libjxl write and on the edited ones in tests/data/containers."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from conftest import encode, photo
from PIL import Image

import pipeline.decode  # noqa: F401  (registers Pillow's HEIF and JPEG XL plugins)
from pipeline.containers import (
    HeifItems,
    boxes,
    boxes_end,
    foreign_boxes,
    heif_images_not_carried,
    heif_items,
    jxl_animated,
    jxl_codestream,
    mpo_end,
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
