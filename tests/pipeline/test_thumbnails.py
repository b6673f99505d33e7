"""Embedded thumbnails left out of the metadata an LR carries (pipeline/thumbnails.py), every
other byte kept: EXIF built here tag by tag, read back with Pillow."""

from __future__ import annotations

import base64
import io
import struct

import pytest
from conftest import (
    MAKER_NOTE,
    THUMBNAIL,
    photo,
    photoshop_resource,
    thumbnail_exif,
    xmp_packet,
)
from PIL import ExifTags, Image

from pipeline.decode import decode_image
from pipeline.exif import reset_exif_orientation
from pipeline.thumbnails import (
    drop_exif_thumbnail,
    drop_photoshop_thumbnails,
    drop_xmp_thumbnails,
    has_exif_thumbnail,
)


def read(exif: bytes) -> tuple[dict, dict, dict]:
    """IFD0, the Exif IFD and IFD1 as Pillow reads them."""
    tags = Image.Exif()
    tags.load(b"Exif\x00\x00" + exif)
    return dict(tags), tags.get_ifd(ExifTags.IFD.Exif), tags.get_ifd(ExifTags.IFD.IFD1)


@pytest.mark.parametrize("order", ["<", ">"])
def test_the_exif_thumbnail_goes_and_every_other_byte_stays(order):
    exif = thumbnail_exif(order)
    ifd0, exif_ifd, ifd1 = read(exif)
    assert ifd1[0x0202] == len(THUMBNAIL) and exif_ifd[0x927C] == MAKER_NOTE
    dropped = drop_exif_thumbnail(exif)
    assert len(dropped) == len(exif) - len(THUMBNAIL) - (2 + 2 * 12 + 4)  # IFD1 went too
    assert read(dropped) == (ifd0, exif_ifd, {})
    link = 8 + 2 + 3 * 12  # IFD0's link to IFD1, now 0: the only byte changed before the cut
    assert dropped[:link] == exif[:link] and dropped[link + 4 :] == exif[link + 4 : len(dropped)]
    assert drop_exif_thumbnail(dropped) == dropped


def test_an_exif_whose_data_lies_after_the_thumbnail_stays_as_it_is():
    exif = thumbnail_exif(maker_note_last=True)
    assert read(exif)[1][0x927C] == MAKER_NOTE
    assert drop_exif_thumbnail(exif) == exif  # cutting at the thumbnail would lose the note
    # Bytes no IFD names, such as a preview image only a maker note points at: kept too.
    preview = thumbnail_exif() + THUMBNAIL
    assert drop_exif_thumbnail(preview) == preview
    padded = thumbnail_exif() + b"\x00\x00"  # padding to an even length: cut with it
    assert drop_exif_thumbnail(padded) == drop_exif_thumbnail(thumbnail_exif())


@pytest.mark.parametrize(
    "exif",
    [
        thumbnail_exif(thumbnail=False),  # no IFD1
        thumbnail_exif()[:-10],  # the thumbnail reaches past the end
        thumbnail_exif()[:30],  # IFD0 cut short
        b"Exif\x00\x00II*\x00",  # not a bare TIFF structure
        b"",
    ],
)
def test_exif_without_a_thumbnail_to_drop_stays_as_it_is(exif):
    assert drop_exif_thumbnail(exif) == exif


def test_photoshop_thumbnail_resources_go_and_the_others_stay():
    iptc = photoshop_resource(0x0404, b"\x1c\x02\x78\x00\x05hello")  # IPTC caption, odd length
    resolution = photoshop_resource(0x03ED, bytes(16), name=b"res")
    resources = (
        iptc
        + photoshop_resource(0x040C, THUMBNAIL)
        + resolution
        + photoshop_resource(0x0409, THUMBNAIL)
    )
    assert drop_photoshop_thumbnails(resources) == iptc + resolution
    assert drop_photoshop_thumbnails(iptc + resolution) == iptc + resolution
    assert drop_photoshop_thumbnails(photoshop_resource(0x040C, THUMBNAIL)) == b""


@pytest.mark.parametrize(
    "resources",
    [
        b"8BIM\x04\x0c\x00\x00\x00\x00\x00\x10abc",  # a thumbnail shorter than its size
        b"8BIM\x04\x0c",  # cut inside the header
        b"junk" + photoshop_resource(0x040C, THUMBNAIL),  # no 8BIM where a resource must start
    ],
)
def test_photoshop_resources_that_do_not_parse_stay_as_they_are(resources):
    assert drop_photoshop_thumbnails(resources) == resources


def xmp_with_thumbnails(prefix: str = "xmp") -> bytes:
    """An XMP packet as Adobe's tools write it: a rating, then Thumbnails holding a base64
    JPEG, under `prefix` bound to the XMP basic namespace."""
    image = base64.b64encode(THUMBNAIL).decode()
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f' <rdf:Description rdf:about="" xmlns:{prefix}="http://ns.adobe.com/xap/1.0/"\n'
        '   xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/">\n'
        f"  <{prefix}:Rating>4</{prefix}:Rating>\n"
        f"  <{prefix}:Thumbnails>\n"
        '   <rdf:Alt><rdf:li rdf:parseType="Resource"><xmpGImg:width>40</xmpGImg:width>'
        f"<xmpGImg:image>{image}</xmpGImg:image></rdf:li></rdf:Alt>\n"
        f"  </{prefix}:Thumbnails>\n"
        f"  <{prefix}:CreatorTool>TADM</{prefix}:CreatorTool>\n"
        " </rdf:Description>\n</rdf:RDF>\n</x:xmpmeta>"
    ).encode()


@pytest.mark.parametrize("prefix", ["xmp", "xap"])
def test_the_xmp_thumbnails_go_and_every_other_byte_stays(prefix):
    xmp = xmp_with_thumbnails(prefix)
    dropped = drop_xmp_thumbnails(xmp)
    start = xmp.index(f"  <{prefix}:Thumbnails>".encode())
    end = xmp.index(f"</{prefix}:Thumbnails>\n".encode()) + len(f"</{prefix}:Thumbnails>\n")
    assert dropped == xmp[:start] + xmp[end:]
    assert drop_xmp_thumbnails(dropped) == dropped
    # Thumbnails of another namespace, or no XMP basic namespace at all: nothing goes.
    other = xmp.replace(b'http://ns.adobe.com/xap/1.0/"', b'http://example.com/ns/"')
    assert drop_xmp_thumbnails(other) == other
    assert drop_xmp_thumbnails(xmp_packet()) == xmp_packet()


def test_decode_drops_thumbnails_only_when_asked():
    """A camera JPEG (EXIF with a thumbnail, a Photoshop block with one, an XMP with one): its
    metadata keeps them by default; with drop_thumbnails, the conversion note says what went."""
    iptc = photoshop_resource(0x0404, b"\x1c\x02\x78\x00\x05hello")
    photoshop = iptc + photoshop_resource(0x040C, THUMBNAIL)
    out = io.BytesIO()
    xmp = xmp_with_thumbnails()
    exif = b"Exif\x00\x00" + thumbnail_exif()
    Image.fromarray(photo(64, 48, 3)).save(out, "JPEG", exif=exif, xmp=xmp)
    data = out.getvalue()
    app13 = b"Photoshop 3.0\x00" + photoshop
    data = data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:]
    kept = decode_image(data)
    assert kept.metadata.photoshop == photoshop and read(kept.metadata.exif)[2]
    assert kept.metadata.xmp == xmp
    assert "thumbnails" not in (kept.conversion or "")
    dropped = decode_image(data, drop_thumbnails=True)
    assert dropped.metadata.photoshop == iptc
    assert dropped.metadata.xmp == drop_xmp_thumbnails(xmp) != xmp
    assert read(dropped.metadata.exif) == read(kept.metadata.exif)[:2] + ({},)
    saved = len(kept.metadata.exif) - len(dropped.metadata.exif)
    assert (
        f"thumbnails dropped: EXIF {saved} bytes, Photoshop {len(photoshop) - len(iptc)} bytes, "
        f"XMP {len(xmp) - len(dropped.metadata.xmp)} bytes" in dropped.conversion
    )
    assert "EXIF orientation 6 applied" in dropped.conversion  # the pixels turned as before
    assert dropped.pixels.shape == kept.pixels.shape == (64, 48, 3)


def test_an_exif_thumbnail_that_must_stay_is_said_to_stay():
    """With --drop-thumbnails, an EXIF whose thumbnail cannot be cut out (a maker note lies
    after it) keeps it, and the row says so."""
    exif = thumbnail_exif(maker_note_last=True)
    assert has_exif_thumbnail(exif) and has_exif_thumbnail(thumbnail_exif())
    assert not has_exif_thumbnail(thumbnail_exif(thumbnail=False))
    assert not has_exif_thumbnail(drop_exif_thumbnail(thumbnail_exif()))
    assert not has_exif_thumbnail(b"not a TIFF structure")
    assert not has_exif_thumbnail(thumbnail_exif()[:30])
    out = io.BytesIO()
    Image.fromarray(photo(64, 48, 3)).save(out, "JPEG", exif=b"Exif\x00\x00" + exif)
    decoded = decode_image(out.getvalue(), drop_thumbnails=True)
    assert decoded.metadata.exif == reset_exif_orientation(exif)
    assert decoded.conversion == (
        "EXIF thumbnail kept: other EXIF data lies after it; EXIF orientation 6 applied"
    )
    assert "thumbnail" not in (decode_image(out.getvalue()).conversion or "")


XMP_HEAD = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
)
XMP_TAIL = b"</rdf:Description></rdf:RDF></x:xmpmeta>"


@pytest.mark.parametrize(
    "body",
    [  # what only looks like a Thumbnails element of the XMP basic namespace stays
        b"<dc:description><rdf:Alt><rdf:li><![CDATA[how to: <xmp:Thumbnails>...</xmp:Thumbnails>"
        b" in XMP]]></rdf:li></rdf:Alt></dc:description>",
        b"<!-- <xmp:Thumbnails/> -->",
        b'<rdf:Description xmlns:xmp="http://example.com/other/"><xmp:Thumbnails>mine'
        b"</xmp:Thumbnails></rdf:Description>",
        b"<dc:title>&lt;xmp:Thumbnails/&gt;</dc:title>",
        # nested: cutting to the first end tag would break the packet
        b"<xmp:Thumbnails><rdf:Alt><rdf:li><xmp:Thumbnails>x</xmp:Thumbnails></rdf:li></rdf:Alt>"
        b"</xmp:Thumbnails>",
        b"<xmp:Thumbnails><dc:title>not XML: never closed</dc:title>",
        b"<xmp:Thumbnails>" * 4000,  # not XML either
    ],
    ids=["cdata", "comment", "other-namespace", "escaped-text", "nested", "unclosed", "openings"],
)
def test_an_xmp_whose_thumbnails_cannot_be_cut_cleanly_stays_as_it_is(body: bytes):
    xmp = XMP_HEAD + body + XMP_TAIL
    assert drop_xmp_thumbnails(xmp) == xmp


def test_a_thumbnails_element_beside_text_that_names_it_goes_alone():
    body = b'<dc:title>&lt;xmp:Thumbnails/&gt;</dc:title> <xmp:Thumbnails note="a>b"><rdf:Alt/>'
    xmp = XMP_HEAD + body + b"</xmp:Thumbnails>" + XMP_TAIL
    expected = XMP_HEAD + b"<dc:title>&lt;xmp:Thumbnails/&gt;</dc:title>" + XMP_TAIL
    assert drop_xmp_thumbnails(xmp) == expected
