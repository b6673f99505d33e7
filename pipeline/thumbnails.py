"""Embedded thumbnails in a source's metadata: EXIF's (its second IFD, a small JPEG),
Photoshop's image resources 0x0409 and 0x040C, and the XMP's xmp:Thumbnails (base64 JPEGs).
They are previews of the original that an LR, itself a thumbnail, does not need;
`tadm archive --drop-thumbnails` leaves them out, and every other byte of the EXIF, the
Photoshop block and the XMP as it was (maker notes keep their offsets). Plain bytes in, bytes
out: no Pillow, no torch."""

from __future__ import annotations

import re
import struct
from xml.etree import ElementTree

from pipeline.exif import TIFF_ORDERS, read_ifd

# Tags whose value is the offset of another IFD: ExifIFD, GPSIFD, InteroperabilityIFD.
SUB_IFDS = (0x8769, 0x8825, 0xA005)
THUMBNAIL_OFFSET, THUMBNAIL_LENGTH = 0x0201, 0x0202  # JPEGInterchangeFormat(Length), in IFD1
PHOTOSHOP_THUMBNAILS = (0x0409, 0x040C)  # Photoshop 4.0 and 5.0+ thumbnail resources
RESOURCE = b"8BIM"
XMP_THUMBNAILS = "{http://ns.adobe.com/xap/1.0/}Thumbnails"  # as ElementTree names it
# The prefixes an XMP packet binds to the XMP basic namespace (xmp:, or xap: in older files).
XMP_BASIC = re.compile(
    rb"""xmlns:([A-Za-z_][\w.-]*)\s*=\s*["']http://ns\.adobe\.com/xap/1\.0/["']"""
)


def drop_exif_thumbnail(exif: bytes) -> bytes:
    """`exif` (a TIFF structure) without its thumbnail: IFD0's link to IFD1 cleared and the
    bytes cut from where the thumbnail begins (from IFD1, when IFD1 and its values come right
    before it). `exif` as it is unless the JPEG thumbnail is the last thing in it (up to 3 zero
    bytes of padding) and everything the other IFDs use lies before the cut: maker notes may
    point at bytes no IFD names (a camera's preview image), so no byte between two things
    stays unaccounted for."""
    order = TIFF_ORDERS.get(exif[:4])
    if order is None:
        return exif
    try:
        found = thumbnail_ifd(exif, order)
        if found is None:
            return exif
        ifd0, entries, link, ifd1, thumbnail_entries, thumbnail_link = found
        thumbnail = {tag: value for tag, value, _, _ in thumbnail_entries}
        start, length = thumbnail.get(THUMBNAIL_OFFSET), thumbnail.get(THUMBNAIL_LENGTH)
        if start is None or not length or start + length > len(exif):
            return exif
        tail = exif[start + length :]
        if len(tail) > 3 or tail.strip(b"\x00"):
            return exif
        used = link + 4  # the end of what IFD0 and the IFDs it links to use
        tables, seen = [entries], {ifd0}
        while tables:
            for tag, value, kind, end in tables.pop():
                used = max(used, end)
                if tag in SUB_IFDS and kind in (4, 13) and value not in seen:
                    seen.add(value)
                    sub, sub_link = read_ifd(exif, order, value)
                    used = max(used, sub_link + 4)
                    tables.append(sub)
    except struct.error:
        return exif
    ifd1_end = max(end for _, _, _, end in [*thumbnail_entries, (0, 0, 0, thumbnail_link + 4)])
    cut = ifd1 if used <= ifd1 and ifd1_end <= start <= ifd1_end + 3 else start
    if cut < used:
        return exif
    return exif[:link] + b"\x00\x00\x00\x00" + exif[link + 4 : cut]


def has_exif_thumbnail(exif: bytes) -> bool:
    """Whether `exif` (a TIFF structure) links to a JPEG thumbnail in its IFD1."""
    order = TIFF_ORDERS.get(exif[:4])
    try:
        found = order and thumbnail_ifd(exif, order)
    except struct.error:
        return False
    if not found:
        return False
    thumbnail = {tag: value for tag, value, _, _ in found[4]}
    return THUMBNAIL_OFFSET in thumbnail and bool(thumbnail.get(THUMBNAIL_LENGTH))


def thumbnail_ifd(exif: bytes, order: str) -> tuple | None:
    """IFD0's offset, entries and link position, and IFD1's offset, entries and link
    position (read_ifd's); None when IFD0 links to no IFD1. struct.error when they do not
    fit in `exif`."""
    (ifd0,) = struct.unpack_from(order + "I", exif, 4)
    entries, link = read_ifd(exif, order, ifd0)
    (ifd1,) = struct.unpack_from(order + "I", exif, link)
    if ifd1 == 0:
        return None
    return ifd0, entries, link, ifd1, *read_ifd(exif, order, ifd1)


def drop_photoshop_thumbnails(resources: bytes) -> bytes:
    """Photoshop image resources (a JPEG's APP13 block after "Photoshop 3.0\\0") without the
    thumbnail resources; the others byte for byte. `resources` as it is when it does not parse
    as a sequence of 8BIM resources."""
    kept, at = [], 0
    while at < len(resources):
        if resources[at : at + 4] != RESOURCE:
            return resources
        try:
            (resource_id, name_length) = struct.unpack_from(">HB", resources, at + 4)
            name_end = at + 6 + 1 + name_length
            name_end += (name_end - at) % 2  # the name is padded to an even length
            (size,) = struct.unpack_from(">I", resources, name_end)
        except struct.error:
            return resources
        end = name_end + 4 + size + size % 2  # data padded to an even length
        if end > len(resources) + size % 2:
            return resources
        if resource_id not in PHOTOSHOP_THUMBNAILS:
            kept.append(resources[at:end])
        at = end
    return b"".join(kept)


def drop_xmp_thumbnails(xmp: bytes) -> bytes:
    """An XMP packet without its Thumbnails properties (of the XMP basic namespace, whatever
    prefix binds it), every other byte as it was: each element is cut from the bytes, and the
    cut is kept only when the packet parses as XML before and after it with exactly those
    elements gone (a nested one, one in a CDATA section or a comment, or a prefix bound to
    another namespace in some scope leaves the packet as it is). Linear in the packet's size."""
    before = parse_xml(xmp)
    if before is None:
        return xmp
    found = list(before.iter(XMP_THUMBNAILS))
    if not found:
        return xmp
    gone = sum(len(list(element.iter())) for element in found)
    cut = xmp
    for prefix in set(XMP_BASIC.findall(xmp)):
        cut = cut_elements(cut, prefix + b":Thumbnails")
    after = parse_xml(cut)
    if after is None or next(after.iter(XMP_THUMBNAILS), None) is not None:
        return xmp
    if len(list(after.iter())) != len(list(before.iter())) - gone:
        return xmp
    return cut


def parse_xml(data: bytes) -> ElementTree.Element | None:
    """The root element of `data`, or None when it is not well-formed XML."""
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError:
        return None


def cut_elements(data: bytes, name: bytes) -> bytes:
    """`data` without each element `name` (from its start tag to the first end tag of that
    name after it), and with it the blanks before it on its line and the line end after it.
    Each byte is looked at a bounded number of times."""
    opening, closing = b"<" + name, b"</" + name
    kept, at = [], 0
    while (start := data.find(opening, at)) >= 0:
        follows = data[start + len(opening) : start + len(opening) + 1]
        if follows not in (b" ", b"\t", b"\r", b"\n", b">", b"/"):  # a longer name
            kept.append(data[at : start + len(opening)])
            at = start + len(opening)
            continue
        tag_end = data.find(b">", start)
        if tag_end < 0:
            break
        end = tag_end + 1
        if data[tag_end - 1 : tag_end] != b"/":  # not an empty-element tag: to its end tag
            close = data.find(closing, tag_end)
            end = data.find(b">", close) + 1 if close >= 0 else 0
            if end <= 0:
                break
        while start > at and data[start - 1 : start] in (b" ", b"\t"):
            start -= 1
        while data[end : end + 1] in (b" ", b"\t"):
            end += 1
        end += 2 if data[end : end + 2] == b"\r\n" else data[end : end + 1] == b"\n"
        kept.append(data[at:start])
        at = end
    kept.append(data[at:])
    return b"".join(kept)
