"""What the containers of HEIF, AVIF, JPEG XL and MPO files hold besides the image Pillow
decodes: where their images end, the boxes that follow, the images beside the primary one, and
whether a JPEG XL codestream is an animation; where the data a TIFF's or a BMP's headers
reference ends, and a BMP's colour space and profile; the EXIF a TIFF's own tags make.

No Pillow here but for the MPO's index, which its JPEG plugin reads: the decode stage
(pipeline/decode.py) turns these into a row's kept_reason, conversion or error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pillow_heif

# The top-level boxes of a HEIF or AVIF file that hold its images and their metadata; any
# other (a Samsung or Google Motion Photo's "mpvd" video, an image sequence's "moov") holds
# what an LR cannot.
HEIF_BOXES = frozenset({"ftyp", "meta", "mdat", "free", "skip"})
JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
JXL_CODESTREAM = b"\xff\x0a"
# The boxes of a JPEG XL container that hold its codestream, or say how to read it, and its
# Exif, which Pillow's plugin reads.
JXL_IMAGE_BOXES = frozenset({"JXL ", "ftyp", "jxlc", "jxlp", "jxll", "jxli", "Exif"})
# The boxes of a JPEG XL container Pillow's plugin gives nothing of, by what they hold.
JXL_METADATA_BOXES = {
    "xml ": "XMP",
    "jumb": "JUMBF (C2PA) box",
    "jbrd": "JPEG reconstruction data",
    "jhgm": "gain map",
}
# A HEIF's auxiliary images, by the URN of their type (ISO/IEC 23008-12, Apple's).
AUXILIARY_IMAGES = {
    "urn:com:apple:photo:2020:aux:hdrgainmap": "HDR gain map",
    "urn:com:apple:photo:2018:aux:portraiteffectsmatte": "portrait matte",
    "urn:com:apple:photo:2019:aux:semanticskinmatte": "skin matte",
    "urn:com:apple:photo:2019:aux:semantichairmatte": "hair matte",
    "urn:com:apple:photo:2019:aux:semanticteethmatte": "teeth matte",
    "urn:com:apple:photo:2023:aux:semanticskymatte": "sky matte",
}
JXL_KNOWN_BOXES = JXL_IMAGE_BOXES | set(JXL_METADATA_BOXES) | {"brob"}
MPF_SEGMENT = b"MPF\x00"
MP_ENTRIES = 0xB002  # the MP index's tag of its images' entries (Pillow's mpinfo key)
# The size of one value of each TIFF field type.
TIFF_TYPE_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,  # TIFF 6.0's
    13: 4, 16: 8, 17: 8, 18: 8,  # IFD; BigTIFF's LONG8, SLONG8, IFD8
}  # fmt: skip
# The TIFF field types of unsigned integers (BYTE, SHORT, LONG, IFD, LONG8, IFD8), by the dtype
# numpy reads them with.
TIFF_INTEGERS = {1: "u1", 3: "u2", 4: "u4", 13: "u4", 16: "u8", 18: "u8"}
# A TIFF's tags of offsets to data, by the tag of their byte counts: strips, tiles, an old-style
# JPEG's stream, free space.
TIFF_DATA_TAGS = {273: 279, 324: 325, 513: 514, 288: 289}
# A TIFF's tags of offsets to further IFDs: SubIFDs, Exif, GPS, Interoperability.
TIFF_IFD_TAGS = (330, 34665, 34853, 40965)
# The IFDs a TIFF's EXIF (tiff_exif) copies beside its first, by the tag of the entry that points
# to each: the Exif and GPS IFDs from the first IFD, the Interoperability IFD from the Exif IFD.
EXIF_SUB_IFDS = {0: (34665, 34853), 34665: (40965,)}
MAKER_NOTE = 0x927C
# The field types whose values a TIFF's EXIF copies as they are: TIFF 6.0's but IFD (13), an
# offset into the source; not BigTIFF's 8-byte ones, which a classic TIFF structure lacks.
EXIF_FIELD_TYPES = frozenset(range(1, 13))
# The most bytes of EXIF tiff_exif makes (as an ICC profile's most, pipeline/metadata.py's
# CARRY_LIMITS): entries that would take it further are left out.
MAX_TIFF_EXIF = 1_000_000
TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}
# The most IFDs, and entries in all, a TIFF's walk reads (a loop, a hostile file): none has
# near so many.
MAX_TIFF_IFDS = 1024
MAX_TIFF_ENTRIES = 65536
# The BMP headers that state a colour space (BITMAPV4HEADER) and can embed an ICC profile
# (BITMAPV5HEADER), by their size; their colour space types (bV4CSType, at byte 70).
BMP_V4_HEADER = 108
BMP_V5_HEADER = 124
BMP_CALIBRATED = 0  # LCS_CALIBRATED_RGB: the endpoints and gammas that follow say the colours
BMP_LINKED = 0x4C494E4B  # PROFILE_LINKED ("LINK"): the file name of a profile
BMP_EMBEDDED = 0x4D424544  # PROFILE_EMBEDDED ("MBED"): an ICC profile in the file
# A BMP's compressions whose pixels are rows of 4-byte multiples: RGB, BITFIELDS,
# ALPHABITFIELDS.
BMP_ROWS = (0, 3, 6)


@dataclass(frozen=True)
class Box:
    kind: str  # its four-character type
    start: int  # where its header starts in the file
    body: int  # where what it holds starts, after its header
    end: int  # where it ends


def boxes(data: bytes) -> Iterator[Box]:
    """The top-level boxes of an ISO base media file (HEIF, AVIF, a JPEG XL container), up to
    the first that does not fit in `data` (a truncated file, padding, or bytes that are no box)
    or a second "ftyp", which starts another file (an MP4 appended)."""
    at, ftyp = 0, False
    while at + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        if kind in (b"\x00" * 4, b"\xff" * 4):  # padding, no box
            return
        if kind == b"ftyp":
            if ftyp:
                return
            ftyp = True
        header = 8
        if size == 1:  # a 64-bit size follows
            if at + 16 > len(data):
                return
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:  # to the end of the file
            size = len(data) - at
        if size < header or at + size > len(data):
            return
        yield Box(kind.decode("latin-1"), at, at + header, at + size)
        at += size


def boxes_end(data: bytes) -> int:
    """Where the last whole top-level box of an ISO base media file ends."""
    return max((box.end for box in boxes(data)), default=0)


def foreign_boxes(fmt: str, data: bytes) -> list[Box]:
    """The top-level boxes of a HEIF, an AVIF or a JPEG XL container (Pillow's format `fmt`)
    that hold neither its image nor metadata the decode names: a Motion Photo's "mpvd" video,
    an image sequence's "moov"; none for a bare JPEG XL codestream."""
    if fmt == "JXL" and not data.startswith(JXL_CONTAINER):
        return []
    known = JXL_KNOWN_BOXES if fmt == "JXL" else HEIF_BOXES
    return [box for box in boxes(data) if box.kind not in known]


def jxl_metadata_boxes(data: bytes) -> list[str]:
    """What the metadata boxes of a JPEG XL container hold (JXL_METADATA_BOXES), in file
    order, once each; a Brotli-compressed box ("brob") by the type of what it holds."""
    if not data.startswith(JXL_CONTAINER):
        return []
    kinds = []
    for box in boxes(data):
        kind = box.kind
        if kind == "brob":
            kind = data[box.body : box.body + 4].decode("latin-1")
        if kind in JXL_METADATA_BOXES:
            kinds.append(JXL_METADATA_BOXES[kind])
    return list(dict.fromkeys(kinds))


def jxl_codestream(data: bytes) -> bytes:
    """The start of a JPEG XL file's codestream: the file itself, or its container's first
    "jxlc" box, or first "jxlp" part (after its 4-byte index); b"" when there is none."""
    if not data.startswith(JXL_CONTAINER):
        return data
    for box in boxes(data):
        if box.kind == "jxlc":
            return data[box.body : box.end]
        if box.kind == "jxlp":
            return data[box.body + 4 : box.end]
    return b""


class Bits:
    """The bits of a JPEG XL codestream, least significant first, as its headers pack them."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data = data
        self.bit = 8 * at

    def read(self, n: int) -> int:
        value = 0
        for i in range(n):
            byte = self.data[self.bit >> 3]  # IndexError past the end
            value |= ((byte >> (self.bit & 7)) & 1) << i
            self.bit += 1
        return value

    def u32(self, widths: tuple[int, int, int, int]) -> None:
        """Skip a U32 field whose four distributions read `widths` bits (their offsets do not
        matter here)."""
        self.read(widths[self.read(2)])


SIZE_WIDTHS = (9, 13, 18, 30)  # SizeHeader's U32(BitsOffset(9, 1), ... BitsOffset(30, 1))
PREVIEW_DIV8_WIDTHS = (0, 0, 5, 9)  # PreviewHeader's U32(Val(16), Val(32), BitsOffset(5, 1)...)
PREVIEW_WIDTHS = (6, 8, 10, 12)  # U32(BitsOffset(6, 1), BitsOffset(8, 65), ...)


def skip_size_header(bits: Bits) -> None:
    """Skip a SizeHeader: a flag for sizes in multiples of 8 (5 bits each, else a U32), the
    height, a ratio code, and the width unless the ratio gives it."""
    small = bits.read(1)

    def side() -> None:
        if small:
            bits.read(5)
        else:
            bits.u32(SIZE_WIDTHS)

    side()
    if bits.read(3) == 0:
        side()


def skip_preview_header(bits: Bits) -> None:
    """Skip a PreviewHeader: as a SizeHeader, with U32s of other widths."""
    widths = PREVIEW_DIV8_WIDTHS if bits.read(1) else PREVIEW_WIDTHS
    bits.u32(widths)
    if bits.read(3) == 0:
        bits.u32(widths)


def jxl_animated(data: bytes) -> bool:
    """Whether a JPEG XL file's codestream header says it is an animation (ImageMetadata's
    have_animation, ISO/IEC 18181-1), which Pillow's plugin decodes as one frame."""
    stream = jxl_codestream(data)
    if not stream.startswith(JXL_CODESTREAM):
        return False
    bits = Bits(stream, len(JXL_CODESTREAM))
    try:
        skip_size_header(bits)
        if bits.read(1):  # all_default
            return False
        if not bits.read(1):  # extra_fields: orientation, sizes, preview, animation
            return False
        bits.read(3)  # orientation
        if bits.read(1):  # have_intrinsic_size
            skip_size_header(bits)
        if bits.read(1):  # have_preview
            skip_preview_header(bits)
        return bool(bits.read(1))  # have_animation
    except IndexError:  # a header cut short: the decoder has said what it could read
        return False


def mpo_end(data: bytes, entries: list[dict[str, Any]]) -> int | None:
    """Where the last image of an MPO ends: its MP index's `entries` (Pillow's mpinfo[0xB002])
    give each image's offset from the MPF header of the first image's APP2 segment, and its
    size. None when the index and the file disagree."""
    header = mpf_header(data)
    if header is None:
        return None
    ends = [header + e["DataOffset"] + e["Size"] for e in entries if e.get("DataOffset")]
    end = max(ends, default=None)
    return end if end is not None and end <= len(data) else None


def mpf_header(data: bytes) -> int | None:
    """Where the MP header (after "MPF\\0") of a JPEG's APP2 segment starts; None if none comes
    before its first scan."""
    at = 2  # after SOI
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:  # SOS: the segments are over
            return None
        if marker == 0xE2 and data[at + 4 : at + 8] == MPF_SEGMENT:
            return at + 8
        at += 2 + length
    return None


@dataclass(frozen=True)
class HeifItems:
    """What a HEIF or AVIF file holds beside its primary image, as libheif reads it."""

    images: int = 1  # top-level images, the primary one among them
    info: dict[str, Any] = field(default_factory=dict)  # the primary image's (pillow_heif's)


def heif_items(data: bytes) -> HeifItems:
    """The top-level images of a HEIF or AVIF file and the primary one's info (nclx colour,
    depth images, auxiliary images, thumbnails), read by libheif without decoding pixels; for
    an AVIF too, whose Pillow plugin says none of this. A file libheif cannot read gives the
    defaults: Pillow has decoded its image already."""
    try:
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=False)
        return HeifItems(images=len(heif), info=dict(heif[heif.primary_index].info))
    except Exception:  # libheif raises its own errors for what it cannot parse
        return HeifItems()


def heif_images_not_carried(info: dict[str, Any]) -> list[str]:
    """The images of a HEIF or AVIF file besides the primary one that an LR does not carry, by
    kind, from the primary image's `info` (pillow-heif's): depth images, auxiliary images (an
    iPhone's HDR gain map, its portrait mattes) and thumbnails."""
    kinds = []
    if info.get("depth_images"):
        kinds.append("depth image")
    for urn in info.get("aux") or {}:
        kinds.append(AUXILIARY_IMAGES.get(urn, f"auxiliary image {urn!r}"))
    if info.get("thumbnails"):
        kinds.append("thumbnail")
    return kinds


@dataclass(frozen=True)
class TiffEntry:
    tag: int
    kind: int  # its field type (TIFF_TYPE_SIZES)
    count: int  # how many values it holds
    at: int  # where its values lie: in the entry itself, or apart at the offset it holds
    end: int  # where they end


@dataclass(frozen=True)
class TiffIfd:
    entries: list[TiffEntry]
    next: int  # the offset of the next IFD in its chain; 0 for none
    end: int  # where the IFD ends
    unknown: tuple[int, ...] = ()  # the tags of its entries of a field type not in TIFF_TYPE_SIZES


def tiff_header(data: bytes) -> tuple[str, bool, int] | None:
    """A TIFF's byte order (struct's "<" or ">"), whether it is a BigTIFF (8-byte offsets and
    counts) and the offset of its first IFD; None when `data` starts with no TIFF header."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    magic = struct.unpack_from(order + "H", data, 2)[0]
    if magic == 42:
        return order, False, struct.unpack_from(order + "I", data, 4)[0]
    if magic == 43 and len(data) >= 16 and struct.unpack_from(order + "HH", data, 4) == (8, 0):
        return order, True, struct.unpack_from(order + "Q", data, 8)[0]
    return None


def tiff_ifd(data: bytes, at: int, order: str, big: bool) -> TiffIfd | None:
    """The IFD at offset `at` of a TIFF (a BigTIFF's when `big`): its entries, of a field type
    TIFF_TYPE_SIZES knows (others, which readers skip, left out: their tags are its `unknown`);
    None when it, or the values of an entry stored apart, do not lie in `data`, or it has more
    than MAX_TIFF_ENTRIES entries."""
    width, number = (8, "Q") if big else (4, "I")  # of an offset, a count, a value field
    head = 8 if big else 2  # the IFD's number of entries
    if at + head > len(data):
        return None
    count = struct.unpack_from(order + ("Q" if big else "H"), data, at)[0]
    entry_size = 4 + 2 * width  # tag, field type, count, value or offset
    entries_end = at + head + count * entry_size
    if count > MAX_TIFF_ENTRIES or entries_end + width > len(data):
        return None
    entries, unknown = [], []
    for entry in range(at + head, entries_end, entry_size):
        tag, kind, n = struct.unpack_from(f"{order}HH{number}", data, entry)
        if kind not in TIFF_TYPE_SIZES:
            unknown.append(tag)
            continue
        size = n * TIFF_TYPE_SIZES[kind]
        values = entry + 4 + width
        if size > width:  # stored apart
            values = struct.unpack_from(order + number, data, values)[0]
            if values + size > len(data):
                return None
        entries.append(TiffEntry(tag, kind, n, values, values + size))
    next_ifd = struct.unpack_from(order + number, data, entries_end)[0]
    return TiffIfd(entries, next_ifd, entries_end + width, tuple(unknown))


def tiff_numbers(data: bytes, entry: TiffEntry, order: str) -> np.ndarray | None:
    """The values of a TIFF entry of unsigned integers (TIFF_INTEGERS), as uint64; None for an
    entry of another field type."""
    dtype = TIFF_INTEGERS.get(entry.kind)
    if dtype is None:
        return None
    values = np.frombuffer(data, np.dtype(order + dtype), entry.count, entry.at)
    return values.astype(np.uint64)


def tiff_samples(data: bytes) -> str | None:
    """What the pixels of a TIFF's first image are made of, as its first IFD says
    (SamplesPerPixel, BitsPerSample, SampleFormat): "3 64-bit floating-point samples a pixel";
    None when `data` is no TIFF or that IFD does not read."""
    header = tiff_header(data)
    ifd = header and tiff_ifd(data, header[2], header[0], header[1])
    if not ifd:
        return None
    tags = {entry.tag: entry for entry in ifd.entries}

    def first(tag: int, default: int) -> int:  # the standard's default where the tag is absent
        numbers = tiff_numbers(data, tags[tag], header[0]) if tag in tags else None
        return int(numbers[0]) if numbers is not None and len(numbers) else default

    samples, bits, kind = first(277, 1), first(258, 1), first(339, 1)
    what = TIFF_SAMPLE_FORMATS.get(kind, f"sample format {kind}")
    return f"{samples} {bits}-bit {what} sample{'s' * (samples > 1)} a pixel"


def tiff_data_end(data: bytes, tags: dict[int, TiffEntry], order: str) -> int | None:
    """Where the last of the strips, tiles, old-style JPEG stream and free space an IFD's
    entries (`tags`, by tag) give the offsets and byte counts of ends; 0 for none; None when
    their offsets and counts are not unsigned integers in pairs, or one ends past `data`."""
    end = 0
    for offsets_tag, counts_tag in TIFF_DATA_TAGS.items():
        if offsets_tag not in tags:
            continue
        if counts_tag not in tags:
            return None
        offsets = tiff_numbers(data, tags[offsets_tag], order)
        counts = tiff_numbers(data, tags[counts_tag], order)
        if offsets is None or counts is None or len(offsets) != len(counts):
            return None
        held = counts > 0  # an empty strip or tile's offset says nothing
        offsets, counts = offsets[held], counts[held]
        if len(counts) and max(offsets.max(), counts.max()) > len(data):
            return None
        end = max(end, int((offsets + counts).max(initial=0)))
    return end if end <= len(data) else None


def tiff_end(data: bytes) -> int | None:
    """Where the last of what a TIFF's structure references ends: its header; its IFDs (the
    chain from its header, and the SubIFDs, Exif, GPS and Interoperability IFDs they point to,
    with their own chains); their entries' values stored apart (a MakerNote, an ICC profile,
    XMP, Photoshop's layers); the strips, tiles, old-style JPEG stream and free space they give
    the offsets and byte counts of. None when `data` is no TIFF, when one of these does not lie
    in `data` or cannot be read (offsets without byte counts), or when it has more than
    MAX_TIFF_IFDS IFDs or MAX_TIFF_ENTRIES entries: a broken or hostile file, of which no end
    is claimed."""
    header = tiff_header(data)
    if header is None:
        return None
    order, big, first = header
    end = 16 if big else 8
    pending, seen, entries = [first], set(), 0
    while pending:
        at = pending.pop()
        if not at or at in seen:
            continue
        seen.add(at)
        ifd = tiff_ifd(data, at, order, big) if len(seen) <= MAX_TIFF_IFDS else None
        if ifd is None:
            return None
        entries += len(ifd.entries)
        if entries > MAX_TIFF_ENTRIES:
            return None
        tags = {entry.tag: entry for entry in ifd.entries}
        data_end = tiff_data_end(data, tags, order)
        if data_end is None:
            return None
        end = max(end, ifd.end, data_end, *(entry.end for entry in ifd.entries))
        pending.append(ifd.next)
        for tag in TIFF_IFD_TAGS:
            if tag in tags:
                offsets = tiff_numbers(data, tags[tag], order)
                if offsets is None:
                    return None
                pending.extend(int(offset) for offset in offsets)
    return end


@dataclass(frozen=True)
class TiffExif:
    """The EXIF a TIFF's own tags make (tiff_exif)."""

    exif: bytes  # a TIFF structure, as a JPEG's APP1 holds after "Exif\0\0"
    tags: frozenset[int]  # the first IFD's tags it holds; 34665 and 34853 where it holds their IFD
    # The tags of the entries it leaves out, by the tag that points to their IFD
    # (EXIF_SUB_IFDS; 0 for the first IFD); of the first IFD, not those the caller left out.
    left_out: dict[int, tuple[int, ...]]


def tiff_exif(data: bytes, leave_out: frozenset[int]) -> TiffExif | None:
    """The EXIF a TIFF's tags make: a classic TIFF structure in the source's byte order whose
    first IFD holds the entries of the source's first IFD but its tags in `leave_out`, and points
    to copies of its Exif and GPS IFDs, the Exif IFD to a copy of its Interoperability IFD
    (EXIF_SUB_IFDS). Each entry's values are copied byte for byte (a GPS position's rationals
    as they were): inline when they take 4 bytes or fewer, else after their IFD, at an even
    offset; a BigTIFF's 8-byte offsets and counts become 4-byte ones. Left out (`left_out`):
    MakerNotes, whose offsets may count from the source's start; entries of a field type
    EXIF_FIELD_TYPES lacks (IFD, BigTIFF's 8-byte ones, unknown ones), or of offsets into the
    source (TIFF_DATA_TAGS, TIFF_IFD_TAGS but the pointers it follows); a pointer to an IFD
    that cannot be read (tiff_ifd); entries that would take the EXIF over MAX_TIFF_EXIF bytes.
    Of a tag several entries hold, the first, the others left out. None when `data` is no TIFF
    or its first IFD cannot be read."""
    header = tiff_header(data)
    if header is None:
        return None
    order, big, first = header
    ifd0 = tiff_ifd(data, first, order, big)
    if ifd0 is None:
        return None
    offsets = set(TIFF_DATA_TAGS) | set(TIFF_DATA_TAGS.values()) | set(TIFF_IFD_TAGS)
    heads = 6 * (1 + sum(len(tags) for tags in EXIF_SUB_IFDS.values()))  # count and link each
    room = MAX_TIFF_EXIF - 8 - heads
    tables: dict[int, dict[int, tuple[int, int, bytes]]] = {}
    left_out = {}
    pending = [(0, ifd0)]
    for pointer, ifd in pending:  # the IFDs it points to are appended as they are read
        table, seen, left = {}, set(), list(ifd.unknown)
        for entry in ifd.entries:
            if pointer == 0 and entry.tag in leave_out:
                continue
            if entry.tag in seen:  # a broken IFD's repeated tag: the first one travels
                left.append(entry.tag)
                continue
            seen.add(entry.tag)
            if entry.tag in EXIF_SUB_IFDS.get(pointer, ()):
                sub = exif_sub_ifd(data, entry, order, big)
                if sub is not None and room >= 12:
                    pending.append((entry.tag, sub))
                    room -= 12
                else:
                    left.append(entry.tag)
                continue
            size = entry.end - entry.at
            size = 12 + (size + size % 2 if size > 4 else 0)
            copied = entry.kind in EXIF_FIELD_TYPES and entry.tag not in offsets
            if not copied or entry.tag == MAKER_NOTE or size > room:
                left.append(entry.tag)
                continue
            room -= size
            table[entry.tag] = (entry.kind, entry.count, data[entry.at : entry.end])
        tables[pointer] = table
        if left:
            left_out[pointer] = tuple(sorted(left))
    exif = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    exif += exif_ifd_bytes(order, tables, 0, 8)
    tags = set(tables[0]) | {tag for tag in EXIF_SUB_IFDS[0] if tag in tables}
    return TiffExif(exif, frozenset(tags), left_out)


def exif_sub_ifd(data: bytes, entry: TiffEntry, order: str, big: bool) -> TiffIfd | None:
    """The IFD a TIFF's pointer `entry` (one unsigned integer, not 0) points to; None where it
    is no such pointer, or the IFD cannot be read (tiff_ifd)."""
    offsets = tiff_numbers(data, entry, order)
    if offsets is None or len(offsets) != 1 or not offsets[0]:
        return None
    return tiff_ifd(data, int(offsets[0]), order, big)


def exif_ifd_bytes(
    order: str, tables: dict[int, dict[int, tuple[int, int, bytes]]], pointer: int, at: int
) -> bytes:
    """The IFD of the entries `tables[pointer]` ({tag: (field type, count, values)}) at offset
    `at` (even) of an EXIF, its tags in order, with entries that point to the IFDs of `tables`
    it holds (EXIF_SUB_IFDS); then the values it stores apart, each at an even offset; then
    those IFDs, laid out the same way."""
    subs = [tag for tag in EXIF_SUB_IFDS.get(pointer, ()) if tag in tables]
    table = tables[pointer]
    apart = at + 2 + 12 * (len(table) + len(subs)) + 4  # after its count, entries and link
    fields, values = {}, bytearray()
    for tag, (kind, count, value) in table.items():
        if len(value) > 4:
            fields[tag] = (kind, count, struct.pack(order + "I", apart + len(values)))
            values += value + b"\x00" * (len(value) % 2)
        else:
            fields[tag] = (kind, count, value.ljust(4, b"\x00"))
    below = bytearray()
    for tag in subs:
        offset = apart + len(values) + len(below)
        fields[tag] = (4, 1, struct.pack(order + "I", offset))  # a LONG
        below += exif_ifd_bytes(order, tables, tag, offset)
    entries = b"".join(
        struct.pack(order + "HHI", tag, kind, count) + field
        for tag, (kind, count, field) in sorted(fields.items())
    )
    return struct.pack(order + "H", len(fields)) + entries + bytes(4) + values + below


def bmp_colour_space(data: bytes) -> int | None:
    """The colour space type a BMP's BITMAPV4HEADER or BITMAPV5HEADER states (bV4CSType:
    BMP_CALIBRATED, BMP_LINKED, BMP_EMBEDDED, or sRGB's and Windows' own); None for an older
    header, which states none."""
    if len(data) < 74 or int.from_bytes(data[14:18], "little") < BMP_V4_HEADER:
        return None
    return int.from_bytes(data[70:74], "little")


def bmp_profile(data: bytes) -> tuple[int, int] | None:
    """Where the profile a BMP's BITMAPV5HEADER embeds (colour space BMP_EMBEDDED: an ICC
    profile) or links (BMP_LINKED: its file name) starts and ends in the file: at the offset
    the header states from its own start (byte 14), of the size it states; None for none."""
    if bmp_colour_space(data) not in (BMP_EMBEDDED, BMP_LINKED):
        return None
    if len(data) < 14 + BMP_V5_HEADER or int.from_bytes(data[14:18], "little") < BMP_V5_HEADER:
        return None
    offset, size = struct.unpack_from("<II", data, 14 + 112)  # bV5ProfileData, bV5ProfileSize
    return (14 + offset, 14 + offset + size) if size else None


def bmp_pixels_end(data: bytes) -> int | None:
    """Where a BMP's pixels end: at the offset its file header states (bfOffBits) plus their
    size, which its sides and bits per pixel give for rows (BMP_ROWS) and its header states for
    compressed pixels (biSizeImage); None when it does not (0), or its header is cut short."""
    if len(data) < 26:
        return None
    offset, header = struct.unpack_from("<II", data, 10)
    if header == 12:  # BITMAPCOREHEADER: 16-bit sizes, no compression
        width, height, bits = struct.unpack_from("<HH2xH", data, 18)
        compression = pixel_bytes = 0
    elif len(data) >= 38:
        width, height, bits, compression, pixel_bytes = struct.unpack_from("<ii2xHII", data, 18)
    else:
        return None
    if compression in BMP_ROWS:
        pixel_bytes = (abs(width) * bits + 31) // 32 * 4 * abs(height)  # negative: top-down
    return offset + pixel_bytes if pixel_bytes else None


def bmp_end(data: bytes) -> int | None:
    """Where a BMP ends: where the last of its pixels and profile does, whatever file size its
    header states (bfSize: some writers state 0 or a wrong size, and one that counts bytes
    after them would hide those). None when its header does not say the size of its pixels
    (bmp_pixels_end), or when they or its profile end past `data`."""
    pixels = bmp_pixels_end(data)
    if pixels is None:
        return None
    end = max(pixels, (bmp_profile(data) or (0, 0))[1])
    return end if end <= len(data) else None
