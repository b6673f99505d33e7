"""EXIF edited as bytes: the x and y values of pixels turned a quarter, and what is left as it
was (tests/pipeline/test_decode.py: the orientation and axes through decode_image)."""

from __future__ import annotations

import struct

import pytest
from conftest import exif_entry, exif_ifd
from PIL import Image

from pipeline.exif import swap_exif_axes


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_axes_of_other_types_trade_entries_and_equal_ones_keep_every_byte(order: str):
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    rational = struct.pack(order + "II", 300, 1)
    ifd0 = exif_ifd(
        order,
        [
            exif_entry(order, 282, 5, 1, 8 + 2 + 12 * 2 + 4),  # XResolution, stored apart
            exif_entry(order, 283, 5, 1, 8 + 2 + 12 * 2 + 4 + 8),  # YResolution, equal
        ],
        0,
    )
    equal = header + ifd0 + rational + rational
    assert swap_exif_axes(equal) == equal
    # Hostile offsets, into the header and into IFD0's entries: left as they are.
    for x, y in ((0, 8), (10, 22)):
        ifd0 = exif_ifd(
            order, [exif_entry(order, 282, 5, 1, x), exif_entry(order, 283, 5, 1, y)], 0
        )
        hostile = header + ifd0 + rational + struct.pack(order + "II", 72, 1)
        assert swap_exif_axes(hostile) == hostile
    dimensions = [
        exif_entry(order, 0xA002, 3, 1, struct.pack(order + "H", 4000)),  # SHORT
        exif_entry(order, 0xA003, 4, 1, 3000),  # LONG
    ]
    ifd0 = exif_ifd(order, [exif_entry(order, 0x8769, 4, 1, 8 + 2 + 12 + 4)], 0)
    mixed = header + ifd0 + exif_ifd(order, dimensions, 0)
    read = Image.Exif()
    read.load(swap_exif_axes(mixed))
    assert (read.get_ifd(0x8769)[0xA002], read.get_ifd(0x8769)[0xA003]) == (3000, 4000)
    assert swap_exif_axes(mixed[:30]) == mixed[:30]  # cut short: as it was
