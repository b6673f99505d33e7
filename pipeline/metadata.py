"""What a source image carries beside its pixels (Metadata: EXIF, ICC profile, XMP, Photoshop
resources, comment, pixel density, a PNG's colour chunks; an S3 object's user metadata), how an
LR PNG holds it, and what of it each restored format holds."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import PngImagePlugin

from pipeline.exif import TIFF_ORDERS

EXIF_HEADER = b"Exif\x00\x00"  # before the TIFF structure in JPEG's APP1 and Pillow's info
XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword of XMP in PNG
PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"  # before the image resources in a JPEG's APP13
# The zTXt keyword of Photoshop image resources in PNG (ImageMagick's; ExifTool reads it)
PHOTOSHOP_KEY = "Raw profile type 8bim"
COMMENT_KEY = "Comment"  # PNG's keyword for a comment
# Older ImageMagick's PNG text of EXIF (an APP1 segment's content) and IPTC (IPTC-IIM records),
# from before PNG had eXIf: carried when the PNG has no eXIf, or no PHOTOSHOP_KEY, of its own.
EXIF_RAW_KEY = "Raw profile type exif"
IPTC_RAW_KEY = "Raw profile type iptc"
IPTC_RESOURCE = 0x0404  # the Photoshop image resource that holds IPTC-IIM records
APP13_PAYLOAD = 65533 - len(PHOTOSHOP_HEADER)  # resource bytes one APP13 segment holds
METADATA_FIELDS = (
    "exif",
    "icc",
    "xmp",
    "photoshop",
    "comment",
    "density",
    "png_colour",
    "s3_metadata",
    "s3_tags",
)
# The METADATA_FIELDS of an S3 object, not of its file, by what a user knows them as
S3_NAMES = {"s3_metadata": "S3 user metadata", "s3_tags": "S3 object tags"}
S3_FIELDS = tuple(S3_NAMES)
# The PNG chunks that say how to show the pixels without an ICC profile, and their sizes
PNG_COLOUR_CHUNKS = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1}
DENSITY_KEY = "tadm:density"  # the LR's text chunk of the source's pixel density
DENSITY_UNITS = {"in": 0.0254, "cm": 0.01, "m": 1.0}  # a density's units, in metres
JFIF_UNITS = {"in": 1, "cm": 2}  # the JFIF header's codes of its units
PNG_MAX_NUMBER = 2**31 - 1  # the largest of PNG's four-byte numbers: pHYs's pixels per metre
DENSITY_TEXT = 64  # the longest density text an LR may hold
S3_METADATA_KEY = "tadm:s3-metadata"  # the LR's text chunk of an S3 source's user metadata
S3_METADATA_LIMIT = 2048  # the most bytes of user metadata S3 holds on one object
S3_TAGS_KEY = "tadm:s3-tags"  # the LR's text chunk of an S3 source's object tags
S3_TAGS_LIMIT = 10  # the most tags S3 holds on one object
# The most bytes of a block an LR carries, so that every LR reads back: Pillow reads at most
# 1 MiB of one compressed PNG chunk (PngImagePlugin.MAX_TEXT_CHUNK), and Photoshop resources go
# in hex (2 characters a byte); a comment is what one JPEG COM segment holds.
CARRY_LIMITS = {"icc": 1_000_000, "photoshop": 500_000, "comment": 65533}
RAW_PROFILE = re.compile(r"\s*\S+\s+([0-9]{1,9})\s+([0-9a-fA-F\s]*)")


@dataclass(frozen=True)
class Metadata:
    """What a source image carries beside its pixels, kept in its LR PNG and written back into
    restored files: the eXIf, iCCP and iTXt XML:com.adobe.xmp chunks; Photoshop image
    resources (IPTC among them) in a zTXt PHOTOSHOP_KEY chunk, the comment in an iTXt or zTXt
    COMMENT_KEY chunk, the pixel density in a DENSITY_KEY text chunk (a restored file states it
    as its format does: pHYs, the JFIF header), a PNG's gAMA, cHRM and sRGB chunks as they were.
    None where absent."""

    exif: bytes | None = None  # the TIFF structure ("II*\0..." or "MM\0*..."), orientation 1
    icc: bytes | None = None  # ICC profile of the pixels as stored
    xmp: bytes | None = None  # XMP packet (XML), orientation 1
    photoshop: bytes | None = None  # image resource blocks ("8BIM...") of a JPEG's APP13
    comment: bytes | None = None  # a JPEG's COM, a GIF's or a PNG's comment, byte for byte
    # Pixels per unit, x then y, and the unit (DENSITY_UNITS): b"300 300 in" (density_text)
    density: bytes | None = None
    # A PNG's PNG_COLOUR_CHUNKS, each its type then its data: b"gAMA\x00\x00\xb1\x8f..."
    png_colour: bytes | None = None
    # An S3 source object's user metadata (x-amz-meta-*) as s3_metadata_text writes it; the LR
    # holds it in a S3_METADATA_KEY text chunk, and a restore to S3 puts it on the object.
    s3_metadata: bytes | None = None
    # An S3 source object's tags as s3_tags_text writes them (S3's own x-amz-tagging form); the
    # LR holds them in a S3_TAGS_KEY text chunk, and a restore to S3 puts them on the object.
    s3_tags: bytes | None = None

    @property
    def names(self) -> str | None:
        """ "exif,icc,xmp,photoshop,comment,density,png_colour" for what there is, as the
        manifests' `metadata`; None for nothing."""
        return ",".join(n for n in METADATA_FIELDS if getattr(self, n)) or None

    @classmethod
    def from_info(cls, info: dict) -> Metadata:
        """From a Pillow image's info: "exif" (with or without its "Exif\0\0"),
        "icc_profile", "xmp", and a PNG's PHOTOSHOP_KEY and COMMENT_KEY text and colour chunks
        (png_colour)."""
        exif = info.get("exif") or raw_exif(info.get(EXIF_RAW_KEY)) or None
        if exif is not None and exif.startswith(EXIF_HEADER):
            exif = exif[len(EXIF_HEADER) :] or None
        xmp = info.get("xmp") or None
        photoshop = info.get(PHOTOSHOP_KEY)
        iptc = None if isinstance(photoshop, str) else raw_iptc(info.get(IPTC_RAW_KEY))
        comment = info.get(COMMENT_KEY)
        if isinstance(comment, str):  # iTXt is UTF-8; tEXt and zTXt are Latin-1, a byte each
            comment = comment.encode(
                "utf-8" if isinstance(comment, PngImagePlugin.iTXt) else "latin-1"
            )
        return cls(
            exif,
            info.get("icc_profile") or None,
            xmp.encode() if isinstance(xmp, str) else xmp,
            photoshop=from_raw_profile(photoshop) if isinstance(photoshop, str) else iptc,
            comment=comment or None,
            png_colour=png_colour(info),
        )

    @classmethod
    def from_row(cls, row: dict) -> Metadata:
        """From a batch row's METADATA_FIELDS columns (b"" for none)."""
        return cls(**{name: bytes(row[name]) or None for name in METADATA_FIELDS})

    def row(self) -> dict[str, bytes]:
        """The METADATA_FIELDS columns of a batch row (b"" for none)."""
        return {name: getattr(self, name) or b"" for name in METADATA_FIELDS}

    def png_chunks(self) -> PngImagePlugin.PngInfo:
        """The PNG chunks of the XMP (uncompressed iTXt, where XMP readers look for it), the
        Photoshop resources (zTXt) and the comment (iTXt or zTXt); EXIF and ICC go through
        Pillow's options."""
        info = PngImagePlugin.PngInfo()
        if self.xmp:
            info.add_itxt(XMP_KEY, self.xmp.decode("utf-8", "replace"), zip=False)
        if self.photoshop:
            info.add_text(PHOTOSHOP_KEY, raw_profile("8bim", self.photoshop), zip=True)
        if self.comment:  # UTF-8 as readers expect it (iTXt); other bytes as Latin-1 (zTXt)
            text = utf8_text(self.comment)
            if text is not None:
                info.add_itxt(COMMENT_KEY, text, zip=True)
            else:
                info.add_text(COMMENT_KEY, self.comment.decode("latin-1"), zip=True)
        for kind, data in colour_chunks(self.png_colour or b""):
            info.add(kind, data)
        return info

    def over_limits(self) -> tuple[Metadata, list[str]]:
        """This metadata less its blocks over CARRY_LIMITS, and what they are ("Photoshop
        resources of 612,000 bytes, over the 500,000 an LR carries")."""
        over = {
            name: len(getattr(self, name))
            for name, limit in CARRY_LIMITS.items()
            if getattr(self, name) and len(getattr(self, name)) > limit
        }
        kinds = [
            f"{BLOCK_NAMES[name]} of {size:,} bytes, over the {CARRY_LIMITS[name]:,} an LR carries"
            for name, size in over.items()
        ]
        return dataclasses.replace(self, **dict.fromkeys(over)), kinds


BLOCK_NAMES = {"icc": "ICC profile", "photoshop": "Photoshop resources", "comment": "comment"}


# The most bytes of a block a JPEG holds where it must go in one segment (65533 bytes after the
# length), less the segment's header: EXIF's APP1 starts with EXIF_HEADER, XMP's with
# XMP_NAMESPACE (Pillow refuses more: "EXIF data is too long"). The ICC profile goes over
# several APP2 segments (Pillow's) and Photoshop resources over several APP13 (with_app13);
# PNG and WebP hold blocks of any size.
JPEG_SEGMENT = 65533
XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"  # before the XMP packet in a JPEG's APP1
JPEG_LIMITS = {
    "exif": JPEG_SEGMENT - len(EXIF_HEADER),  # 65527
    "xmp": JPEG_SEGMENT - len(XMP_NAMESPACE),  # 65504
    "comment": JPEG_SEGMENT,  # one COM segment
}


def not_held(metadata: Metadata, image_format: str) -> dict[str, str]:
    """The blocks of `metadata` a file of `image_format` cannot hold, in METADATA_FIELDS
    order, each with why: "" where the format has no place for it (WebP: Photoshop resources,
    the comment, the density; neither JPEG nor WebP PNG's colour chunks), "over 65,527 bytes
    (70,000 here)" for one over JPEG_LIMITS, and a density out of the format's range."""
    present = [n for n in METADATA_FIELDS if getattr(metadata, n)]
    if image_format == "png":
        if metadata.density and png_density(metadata.density) is None:
            why = f"(pHYs's are 1 to {PNG_MAX_NUMBER:,} a metre)"
            return {"density": f"of {metadata.density.decode()} {why}"}
        return {}
    if image_format == "webp":
        return {n: "" for n in present if n in ("photoshop", "comment", "density", "png_colour")}
    if image_format == "jpeg":
        sizes = {n: len(getattr(metadata, n)) for n in present if n in JPEG_LIMITS}
        left = {
            n: f"over {JPEG_LIMITS[n]:,} bytes ({size:,} here)"
            for n, size in sizes.items()
            if size > JPEG_LIMITS[n]
        }
        if metadata.density and jfif_density(metadata.density) is None:
            left["density"] = f"of {metadata.density.decode()} (JFIF's are 1 to 65535)"
        return left | ({"png_colour": ""} if metadata.png_colour else {})
    return {}


def held_by(metadata: Metadata, image_format: str) -> Metadata:
    """What a file of `image_format` holds of `metadata`: PNG all but a density out of pHYs's
    range; JPEG all but an EXIF, XMP or comment over JPEG_LIMITS, a density out of its header's
    range and PNG's colour chunks; WebP no Photoshop resources, comment, density or PNG colour
    chunks (it has no place for them). not_held says what is left out. None holds the S3 user
    metadata or object tags, which are the object's, not the file's."""
    left = dict.fromkeys(not_held(metadata, image_format))
    return dataclasses.replace(metadata, **dict.fromkeys(S3_FIELDS), **left)


def s3_metadata_text(user: dict[str, str]) -> bytes | None:
    """Metadata's s3_metadata of an S3 object's user metadata ({"mtime": "1700000000"}, the
    names without x-amz-meta-): JSON in ASCII, keys sorted; None for none."""
    return json.dumps(user, sort_keys=True).encode("ascii") if user else None


def parse_s3_metadata(text: bytes) -> dict[str, str]:
    """The user metadata of an s3_metadata_text; ValueError naming text that is not one (not
    an object of strings). It may be larger than S3 holds (s3_put_metadata): S3-compatible
    stores hold more, and a local restore does not put it anywhere."""
    try:
        user = json.loads(text)
    except ValueError:
        raise ValueError("bad S3 user metadata: not JSON") from None
    if not isinstance(user, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in user.items()
    ):
        raise ValueError("bad S3 user metadata: not names and texts")
    return user


def s3_tags_text(tags: list[tuple[str, str]]) -> bytes | None:
    """Metadata's s3_tags of an S3 object's tags ([("project", "apollo")], in S3's order):
    the form S3's x-amz-tagging header takes, "project=apollo&class=raw%20scan", in ASCII;
    None for none."""
    return urllib.parse.urlencode(tags, quote_via=urllib.parse.quote).encode() if tags else None


def parse_s3_tags(text: bytes) -> list[tuple[str, str]]:
    """The tags of an s3_tags_text; ValueError naming text that is not one. There may be more
    than S3 holds (s3_put_tags): S3-compatible stores hold more, and a local restore does not
    put them anywhere."""
    try:
        return urllib.parse.parse_qsl(
            text.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise ValueError("bad S3 object tags: not key=value pairs joined by '&'") from None


def s3_put_tags(tags: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The x-amz-tagging header a restored image's S3 PUT takes of `tags` (s3_tags_text's
    form), and a note of what it does not take: none of them when they are more than
    S3_TAGS_LIMIT (a store other than AWS's may have held more)."""
    if len(tags) > S3_TAGS_LIMIT:
        return None, f"S3 object tags: {len(tags)}, over S3's {S3_TAGS_LIMIT}"
    return (s3_tags_text(tags) or b"").decode() or None, None


def s3_header_values(user: dict[str, str]) -> dict[str, str]:
    """`user` with each value that is not ASCII in RFC 2047's encoding (=?UTF-8?B?...?=), as
    S3 itself gives such a value: boto refuses to send any other."""
    return {
        name: value
        if value.isascii()
        else "=?UTF-8?B?" + base64.b64encode(value.encode()).decode() + "?="
        for name, value in user.items()
    }


def s3_put_metadata(user: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """What of the user metadata `user` a restored image's S3 PUT takes (s3_header_values), and
    a note of what it does not take: none of it when it is then over S3_METADATA_LIMIT bytes
    (a store other than AWS's may have held more) or a name is not ASCII (no HTTP header holds
    it)."""
    if not all(name.isascii() for name in user):
        return {}, "S3 user metadata: a name that is not ASCII, which S3 does not hold"
    put = s3_header_values(user)
    size = sum(len(name) + len(value) for name, value in put.items())
    if size > S3_METADATA_LIMIT:
        return {}, f"S3 user metadata: {size:,} bytes, over S3's {S3_METADATA_LIMIT:,}"
    return put, None


def png_colour(info: dict) -> bytes | None:
    """Metadata's png_colour of a Pillow image's info: a PNG's gAMA and cHRM chunks, and its
    sRGB chunk unless it has an ICC profile too (which PNG says overrides it, and Pillow writes
    instead), from the values Pillow read (hundred-thousandths: exact)."""
    chunks = b""
    if isinstance(info.get("gamma"), float):
        chunks += b"gAMA" + struct.pack(">I", round(info["gamma"] * 100000))
    chromaticity = info.get("chromaticity")
    if isinstance(chromaticity, tuple) and len(chromaticity) == 8:
        chunks += b"cHRM" + struct.pack(">8I", *(round(v * 100000) for v in chromaticity))
    if isinstance(info.get("srgb"), int) and not info.get("icc_profile"):
        chunks += b"sRGB" + bytes([info["srgb"]])
    return chunks or None


def colour_chunks(png_colour: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (type, data) of each chunk of a png_colour."""
    at = 0
    while at < len(png_colour):
        kind = png_colour[at : at + 4]
        size = PNG_COLOUR_CHUNKS[kind]
        yield kind, png_colour[at + 4 : at + 4 + size]
        at += 4 + size


def density_text(x: float, y: float, unit: str) -> bytes | None:
    """Metadata's density: pixels per `unit` (DENSITY_UNITS) across and down, b"300 300 in";
    None unless both are positive numbers (a density of 0 states none)."""
    if not all(math.isfinite(v) and v > 0 for v in (x, y)):
        return None
    return f"{x:.10g} {y:.10g} {unit}".encode()


def parse_density(density: bytes) -> tuple[float, float, str]:
    """(x, y, unit) of a density_text; ValueError naming one that is not (or is over
    DENSITY_TEXT bytes)."""
    if len(density) > DENSITY_TEXT:
        raise ValueError(f"bad pixel density: {len(density):,} bytes of text")
    try:
        x, y, unit = density.decode("ascii").split(" ")
        values = float(x), float(y)
    except ValueError:  # UnicodeDecodeError among them
        raise ValueError(f"bad pixel density {density!r}") from None
    if unit not in DENSITY_UNITS or density_text(*values, unit) is None:
        raise ValueError(f"bad pixel density {density!r}")
    return *values, unit


def png_density(density: bytes) -> tuple[int, int] | None:
    """A density as PNG's pHYs states it: whole pixels per metre; None when it rounds out of
    1 to PNG_MAX_NUMBER."""
    x, y, unit = parse_density(density)
    values = round(x / DENSITY_UNITS[unit]), round(y / DENSITY_UNITS[unit])
    return values if all(1 <= v <= PNG_MAX_NUMBER for v in values) else None


def jfif_density(density: bytes) -> tuple[int, int, int] | None:
    """A density as a JPEG's JFIF header states it: whole pixels per inch or centimetre (one in
    metres goes in inches), and the unit's code (JFIF_UNITS); None when it rounds out of the
    header's 1 to 65535."""
    x, y, unit = parse_density(density)
    if unit not in JFIF_UNITS:  # metres: in inches
        x, y, unit = x * DENSITY_UNITS["in"], y * DENSITY_UNITS["in"], "in"
    values = round(x), round(y)
    if not all(1 <= v <= 65535 for v in values):
        return None
    return *values, JFIF_UNITS[unit]


def with_jfif_unit(jpeg: bytes, code: int) -> bytes:
    """JPEG bytes whose JFIF header (the APP0 segment Pillow writes first) states its density in
    the unit of JFIF code `code` (Pillow writes 1, inches)."""
    if jpeg[2:4] != b"\xff\xe0" or jpeg[6:11] != b"JFIF\x00":
        raise ValueError("the JPEG has no JFIF header first")
    return jpeg[:13] + bytes([code]) + jpeg[14:]


def utf8_text(data: bytes) -> str | None:
    """`data` as UTF-8 text, or None when it is not that (or holds a NUL, which PNG text may
    not)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def raw_profile(name: str, data: bytes) -> str:
    """ImageMagick's "Raw profile type" text: a line with the name, one with the length, then
    the bytes in hex, 72 digits a line."""
    digits = data.hex()
    lines = "\n".join(digits[i : i + 72] for i in range(0, len(digits), 72))
    return f"\n{name}\n{len(data):8d}\n{lines}\n"


def from_raw_profile(text: str) -> bytes | None:
    """The bytes of a "Raw profile type" text (name, byte count, hex digits); None when it is
    not one, or its count is not its length."""
    match = RAW_PROFILE.fullmatch(text)
    if match is None:
        return None
    digits = "".join(match[2].split())
    if len(digits) % 2:
        return None
    data = bytes.fromhex(digits)
    return data if len(data) == int(match[1]) else None


def raw_exif(text: object) -> bytes | None:
    """The EXIF (a TIFF structure) of an EXIF_RAW_KEY text; None when it holds none."""
    data = from_raw_profile(text) if isinstance(text, str) else None
    if data is not None and data.startswith(EXIF_HEADER):
        data = data[len(EXIF_HEADER) :]
    return data if data is not None and data[:4] in TIFF_ORDERS else None


def raw_iptc(text: object) -> bytes | None:
    """An IPTC_RAW_KEY text's IPTC-IIM records as Photoshop image resources (how JPEG's APP13
    and PHOTOSHOP_KEY hold IPTC); None when it holds none."""
    data = from_raw_profile(text) if isinstance(text, str) else None
    if not data or data[0] != 0x1C:  # an IIM record starts with its tag marker
        return None
    resource = b"8BIM" + struct.pack(">HHI", IPTC_RESOURCE, 0, len(data)) + data
    return resource + b"\x00" * (len(data) % 2)  # resources are padded to an even size


def with_app13(jpeg: bytes, photoshop: bytes) -> bytes:
    """JPEG bytes with Photoshop image resources in APP13 segments after its other APPn
    segments (several when they are over one segment's size; readers join them)."""
    at = 2  # after SOI
    while jpeg[at] == 0xFF and 0xE0 <= jpeg[at + 1] <= 0xEF:  # APP0 .. APP15
        (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
        at += 2 + length
    segments = b"".join(
        b"\xff\xed"
        + struct.pack(">H", 2 + len(PHOTOSHOP_HEADER) + len(part))
        + PHOTOSHOP_HEADER
        + part
        for part in (
            photoshop[i : i + APP13_PAYLOAD] for i in range(0, len(photoshop), APP13_PAYLOAD)
        )
    )
    return jpeg[:at] + segments + jpeg[at:]
