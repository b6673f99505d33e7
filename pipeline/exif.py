"""A source's EXIF edited in place, as bytes (a TIFF structure): its orientation set to 1 and,
for pixels turned a quarter, its x and y values swapped; every other byte stays where it was,
so maker notes keep their offsets. No Pillow: Pillow rewrites the whole block."""

from __future__ import annotations

import struct

TIFF_ORDERS = {b"II*\x00": "<", b"MM\x00*": ">"}  # a TIFF header's byte order, as struct's
# Bytes of one value of each TIFF type: BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED,
# SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE, IFD
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
INTEGER_TYPES = {3: "H", 4: "I", 8: "h", 9: "i"}  # TIFF SHORT, LONG, SSHORT, SLONG
EXIF_ORIENTATION = 0x0112
EXIF_IFD = 0x8769
# Tag pairs of one axis each, in IFD0 and the Exif IFD: XResolution and YResolution,
# PixelXDimension and PixelYDimension. Turning pixels a quarter swaps each pair's values.
EXIF_AXES = ((282, 283), (0xA002, 0xA003))


def reset_exif_orientation(exif: bytes) -> bytes | None:
    """`exif` with the orientation of its first IFD set to 1, every other byte as it was (maker
    notes keep their offsets): in its own integer type when it is one number (the standard's
    SHORT, or LONG, SSHORT, SLONG), else as one SHORT (a RATIONAL, FLOAT or several numbers,
    which Pillow reads too); None when `exif` is not a TIFF structure."""
    order = TIFF_ORDERS.get(exif[:4])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", exif, entry)
            if tag != EXIF_ORIENTATION:
                continue
            code = INTEGER_TYPES.get(kind)
            if code and n == 1:  # one number, stored inline
                one = struct.pack(order + code, 1)
                return exif[: entry + 8] + one + exif[entry + 8 + len(one) :]
            # Another type or count, which Pillow reads too: one SHORT now (a value stored
            # apart stays where it was, unread).
            one = struct.pack(order + "HIH", 3, 1, 1) + b"\x00\x00"
            return exif[: entry + 2] + one + exif[entry + 12 :]
    except struct.error:
        return None
    return exif


def swap_exif_axes(exif: bytes) -> bytes:
    """`exif` (a TIFF structure) with the values of each EXIF_AXES pair swapped, for pixels
    turned a quarter (orientation 5-8): values of one type and count trade places where they
    are stored, so equal ones leave every byte as it was; others trade entries. `exif` as it
    is where it does not parse, or a value would overlap the header or an IFD it reads."""
    order = TIFF_ORDERS.get(exif[:4])
    if order is None:
        return exif
    out = bytearray(exif)
    try:
        (ifd0,) = struct.unpack_from(order + "I", exif, 4)
        entries, span = ifd_entries(exif, order, ifd0)
        ifds, structure = [entries], [(0, 8), span]  # no value may lie in the header or an IFD
        if EXIF_IFD in entries:
            (exif_ifd,) = struct.unpack_from(order + "I", exif, entries[EXIF_IFD] + 8)
            entries, span = ifd_entries(exif, order, exif_ifd)
            ifds.append(entries)
            structure.append(span)
        for ifd, (x, y) in zip(ifds, EXIF_AXES, strict=False):
            if x in ifd and y in ifd:
                swap_entry_values(out, order, ifd[x], ifd[y], structure)
    except struct.error:
        return exif
    return bytes(out)


def ifd_entries(exif: bytes, order: str, offset: int) -> tuple[dict[int, int], tuple[int, int]]:
    """Tag -> position of its 12-byte entry, of the IFD at `offset` (read_ifd), and
    the IFD's span (start, end): from its count to the end of its link."""
    entries, link = read_ifd(exif, order, offset)
    positions = {tag: offset + 2 + 12 * i for i, (tag, *_) in enumerate(entries)}
    return positions, (offset, link + 4)


def swap_entry_values(
    exif: bytearray, order: str, a: int, b: int, structure: list[tuple[int, int]]
) -> None:
    """Swap the values of the IFD entries at positions `a` and `b` in place; struct.error
    when values stored apart overlap each other or a `structure` span (start, end)."""
    kind_a, n_a = struct.unpack_from(order + "HI", exif, a + 2)
    kind_b, n_b = struct.unpack_from(order + "HI", exif, b + 2)
    if (kind_a, n_a) != (kind_b, n_b):  # each entry's type, count and value go together
        exif[a + 2 : a + 12], exif[b + 2 : b + 12] = exif[b + 2 : b + 12], exif[a + 2 : a + 12]
        return
    size = TYPE_SIZES.get(kind_a, 1) * n_a
    if size <= 4:  # stored in the entries
        exif[a + 8 : a + 12], exif[b + 8 : b + 12] = exif[b + 8 : b + 12], exif[a + 8 : a + 12]
        return
    (at_a,) = struct.unpack_from(order + "I", exif, a + 8)
    (at_b,) = struct.unpack_from(order + "I", exif, b + 8)
    spans = [(at_a, at_a + size), (at_b, at_b + size)]
    if max(at_a, at_b) + size > len(exif) or abs(at_a - at_b) < size:
        raise struct.error("values past the end of the EXIF, or overlapping")
    if any(start < e and s < end for start, end in spans for s, e in structure):
        raise struct.error("values inside the TIFF header or an IFD")
    exif[at_a : at_a + size], exif[at_b : at_b + size] = (
        exif[at_b : at_b + size],
        exif[at_a : at_a + size],
    )


def read_ifd(exif: bytes, order: str, offset: int) -> tuple[list[tuple[int, int, int, int]], int]:
    """The entries of the IFD at `offset`, each (tag, value, type, end of the bytes it uses):
    the value is the first number, or the offset of the values stored apart. And the position
    of the IFD's link to the next one."""
    (count,) = struct.unpack_from(order + "H", exif, offset)
    link = offset + 2 + 12 * count
    if link + 4 > len(exif):
        raise struct.error("IFD past the end of the EXIF")
    entries = []
    for entry in range(offset + 2, link, 12):
        tag, kind, n = struct.unpack_from(order + "HHI", exif, entry)
        size = TYPE_SIZES.get(kind, 1) * n
        if size > 4:
            (where,) = struct.unpack_from(order + "I", exif, entry + 8)
            entries.append((tag, where, kind, where + size))
        else:
            fmt = {1: "B", 3: "H", 6: "b", 7: "B", 8: "h"}.get(kind, "I")
            (value,) = struct.unpack_from(order + fmt, exif, entry + 8)
            entries.append((tag, value, kind, link + 4))
    return entries, link
