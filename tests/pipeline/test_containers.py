"""What the containers of HEIF, AVIF, JPEG XL and MPO files hold and where a TIFF's and a BMP's
data end and the EXIF a TIFF's tags make (pipeline/containers.py), on files Pillow,
pillow-heif, libjxl and tifffile write and on the edited ones in tests/data/containers."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import (
    UNNAMED_TAG,
    camera_tiff,
    encode,
    exif_entry,
    exif_ifd,
    photo,
    rationals,
    tiff_ifd_bytes,
)
from PIL import Image, TiffImagePlugin, TiffTags

import pipeline.decode  # noqa: F401  (registers Pillow's HEIF and JPEG XL plugins)
from pipeline.containers import (
    MAX_TIFF_EXIF,
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
    tiff_exif,
    tiff_header,
)
from pipeline.decode import TIFF_NOT_EXIF

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


@pytest.mark.parametrize(("order", "big"), [("<", False), (">", False), ("<", True), (">", True)])
def test_a_tiffs_exif_copies_its_tags_and_its_exif_and_gps_ifds_byte_for_byte(order, big):
    """The EXIF a camera's TIFF (a BigTIFF too) makes: its first IFD's Make, Model, Artist and
    orientation, not its layout nor resolution; its Exif and GPS IFDs, each value as it was
    (the GPS position's rationals), in its byte order; not its MakerNote nor an entry of an
    unknown field type, which it names."""
    made = tiff_exif(camera_tiff(order, big, orientation=6), TIFF_NOT_EXIF)
    assert tiff_header(made.exif) == (order, False, 8)
    assert made.tags == {271, 272, 274, 315, 34665, 34853}
    assert made.left_out == {34665: (37500, UNNAMED_TAG)}
    read = Image.Exif()
    read.load(made.exif)
    assert dict(read) == {
        271: "TADM Camera Co.",
        272: "Model 1",
        274: 6,
        315: "Ada Photographer",
        34665: read[34665],
        34853: read[34853],
    }
    assert read.get_ifd(34665) == {
        33434: 0.004,
        36864: b"0232",
        36867: "2024:05:17 10:30:00",
    }
    gps = read.get_ifd(34853)
    assert (gps[1], gps[2], gps[3], gps[4]) == ("N", (48, 51, 29.5), "E", (2, 17, 40))
    assert rationals(order, (48, 1), (51, 1), (2950, 100)) in made.exif


def test_a_tiffs_exif_copies_its_interoperability_ifd_and_leaves_out_offsets_into_it():
    """The Exif IFD's Interoperability IFD is copied as the Exif and GPS IFDs are; entries of
    offsets into the source (FreeOffsets; a field of type IFD) are left out, and named."""
    order = "<"
    ifd0 = [
        (271, 2, 6, b"Maker\x00"),
        (288, 4, 1, struct.pack("<I", 8)),  # FreeOffsets
        (400, 13, 1, struct.pack("<I", 8)),  # GlobalParametersIFD, of type IFD
        (34665, 4, 1, b""),  # the Exif IFD's offset, once known
    ]
    exif_at = 8 + len(tiff_ifd_bytes(order, False, 8, ifd0))
    ifd0[3] = (34665, 4, 1, struct.pack("<I", exif_at))
    exif_entries = [(33434, 5, 1, rationals(order, (1, 60))), (40965, 4, 1, b"")]
    interop_at = exif_at + len(tiff_ifd_bytes(order, False, 0, exif_entries))
    exif_entries[1] = (40965, 4, 1, struct.pack("<I", interop_at))
    interop = tiff_ifd_bytes(order, False, interop_at, [(1, 2, 4, b"R98\x00")])  # InteropIndex
    data = b"II*\x00" + struct.pack("<I", 8) + tiff_ifd_bytes(order, False, 8, ifd0)
    data += tiff_ifd_bytes(order, False, exif_at, exif_entries) + interop
    made = tiff_exif(data, frozenset())
    assert made.tags == {271, 34665} and made.left_out == {0: (288, 400)}
    read = Image.Exif()
    read.load(made.exif)
    assert read[271] == "Maker" and read.get_ifd(34665)[33434] == 1 / 60
    assert read.get_ifd(0xA005) == {1: "R98"}


def test_a_tiffs_exif_names_a_tag_a_broken_ifd_repeats():
    """The first of its entries travels; the others, which a reader might have shown instead
    (exiftool shows the last), are left out, and named."""
    ifd0 = [(271, 2, 6, b"Maker\x00"), (271, 2, 6, b"Other\x00"), (272, 2, 3, b"M1\x00")]
    data = b"II*\x00" + struct.pack("<I", 8) + tiff_ifd_bytes("<", False, 8, ifd0)
    made = tiff_exif(data, frozenset())
    assert made.tags == {271, 272} and made.left_out == {0: (271,)}
    read = Image.Exif()
    read.load(made.exif)
    assert (read[271], read[272]) == ("Maker", "M1")


def test_a_tiffs_exif_is_at_most_max_tiff_exif_bytes():
    """Values that would take the EXIF over MAX_TIFF_EXIF bytes (200 entries that each claim
    the same 10,000 bytes, in a hostile file) are left out, and named."""
    values_at = 8 + len(tiff_ifd_bytes("<", False, 0, [(0, 7, 1, b"")] * 200))
    entries = [(1000 + i, 7, 10_000, struct.pack("<I", values_at)) for i in range(200)]
    data = b"II*\x00" + struct.pack("<I", 8) + tiff_ifd_bytes("<", False, 8, entries)
    made = tiff_exif(data + bytes(10_000), frozenset())
    assert len(made.exif) <= MAX_TIFF_EXIF
    assert len(made.tags) == 99 and len(made.left_out[0]) == 101
    assert made.tags | set(made.left_out[0]) == {1000 + i for i in range(200)}


def test_a_broken_or_hostile_tiffs_exif_holds_what_reads():
    """An Exif IFD past the end of the file or whose values are, an IFD that points back to
    the first, a first IFD past the end: what does not read is left out (the first IFD: no
    EXIF at all), what does is copied once; no byte of its header or IFDs breaks the copy."""
    data = camera_tiff()
    exif = tiff_entry(data, 34665) + 8
    first = struct.unpack_from("<I", data, 4)[0]
    for hostile in (len(data) + 100, 0):
        made = tiff_exif(tiff_edited(data, exif, hostile), TIFF_NOT_EXIF)
        assert 34665 not in made.tags and 34665 in made.left_out[0] and 34853 in made.tags
    exif_at = struct.unpack_from("<I", data, exif)[0]
    huge = tiff_edited(data, exif_at + 2 + 4, 1 << 30)  # ExposureTime's count
    assert 34665 in tiff_exif(huge, TIFF_NOT_EXIF).left_out[0]
    loop = tiff_exif(tiff_edited(data, exif, first), TIFF_NOT_EXIF)  # copied, as an Exif IFD
    assert 34665 in loop.tags and 34665 in loop.left_out[34665]
    assert tiff_exif(tiff_edited(data, 4, len(data)), TIFF_NOT_EXIF) is None
    assert tiff_exif(b"not a TIFF", TIFF_NOT_EXIF) is None
    pixels = struct.unpack_from("<I", data, tiff_entry(data, 273) + 8)[0]
    structure = [*range(pixels), *range(pixels + 64 * 48 * 3, len(data))]
    for at in structure:  # every byte of its header, IFDs and values, at its worst
        for byte in (0x00, 0x7F, 0xFF):
            made = tiff_exif(data[:at] + bytes([byte]) + data[at + 1 :], TIFF_NOT_EXIF)
            assert made is None or (tiff_header(made.exif) and len(made.exif) <= MAX_TIFF_EXIF)


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
