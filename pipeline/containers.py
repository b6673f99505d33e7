"""What the containers of HEIF, AVIF, JPEG XL and MPO files hold besides the image Pillow
decodes: where their images end, the boxes that follow, the images beside the primary one, and
whether a JPEG XL codestream is an animation.

No Pillow here but for the MPO's index, which its JPEG plugin reads: the decode stage
(pipeline/decode.py) turns these into a row's kept_reason, conversion or error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
