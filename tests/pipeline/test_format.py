"""The archive format: the LR PNG (lossless pixels, the tadm:* text chunks), keys, regions."""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pytest
from conftest import bomb_png, display_p3_icc, encode, photo, png_chunk, xmp_packet
from PIL import Image

from pipeline.decode import decode_image
from pipeline.format import (
    ARCHIVE_SCHEMA,
    MAX_PIXELS,
    MAX_SIDES,
    OUTPUT_FORMATS,
    LrHeader,
    Region,
    TooLargeForFormat,
    TooManyPixels,
    check_rel_path,
    decode_lr_png,
    encode_lr_png,
    encode_output,
    is_rel_path,
    kept_key,
    lr_key,
    output_key,
)
from pipeline.metadata import (
    JPEG_LIMITS,
    Metadata,
    held_by,
    not_held,
    parse_s3_metadata,
    parse_s3_tags,
    s3_metadata_text,
    s3_put_metadata,
    s3_put_tags,
    s3_tags_text,
)
from pipeline.rows import error_kind
from tadm.png import png_bytes


def test_round_trip_is_lossless_and_carries_the_chunks():
    lr = photo(13, 9)
    header = LrHeader(width=200, height=141, scale=16, model_id="0123abcd")
    data = encode_lr_png(lr, header)
    text = Image.open(io.BytesIO(data)).text
    assert text == {
        "tadm:width": "200",
        "tadm:height": "141",
        "tadm:scale": "16",
        "tadm:model_id": "0123abcd",
    }
    pixels, decoded = decode_lr_png(data)
    np.testing.assert_array_equal(pixels, lr)
    assert decoded == header


def test_a_png_without_chunks_is_not_an_lr_file():
    with pytest.raises(ValueError, match="not a TADM LR PNG"):
        decode_lr_png(encode(Image.fromarray(photo(8, 8)), "PNG"))


def test_garbage_is_a_corrupt_lr_file():
    with pytest.raises(ValueError, match="^corrupt LR PNG: not a PNG file$"):
        decode_lr_png(b"\x89PNG garbage")
    truncated = encode(Image.fromarray(photo(64, 64)), "PNG")[:200]
    with pytest.raises(ValueError, match="^corrupt LR PNG: .*truncated"):
        decode_lr_png(truncated)


def test_keys_under_the_archive_and_dst():
    assert lr_key("a/b.jpg") == "lr/a/b.jpg.png"
    assert output_key("a/b.jpg", "webp") == "a/b.jpg.webp"


def test_region_parses_checks_and_prints_one_way():
    region = Region.parse("16,8,60,40")
    assert region == Region(16, 8, 60, 40) and region.text == "16,8,60,40"
    assert tuple(region) == (16, 8, 60, 40)  # unpacks as TADM.upscale's (x, y, w, h)
    region.check_inside(76, 48)
    with pytest.raises(ValueError, match=r"^region 16,8,60,40 is not inside the 75x48 image$"):
        region.check_inside(75, 48)
    for text in ("1,2,3", "1,2,3,4,5", "a,b,c,d", "1.5,0,2,2", ""):
        with pytest.raises(ValueError, match="must be X,Y,W,H"):
            Region.parse(text)
    for text in ("0,0,0,5", "0,0,5,0", "-1,0,5,5", "0,-1,5,5"):
        with pytest.raises(ValueError, match=r"needs X, Y >= 0 and W, H >= 1"):
            Region.parse(text)


@pytest.mark.parametrize(
    ("rel_path", "problem"),
    [("", "is empty"), ("/etc/passwd", "is absolute"), ("/tmp/x/z.png", "is absolute"),
     ("../up.jpg", "segment"), ("a/../../up.jpg", "segment"), ("a/./b.jpg", "segment"),
     ("a//b.jpg", "segment"), ("a/", "segment"), (".", "segment"), ("..", "segment"),
     ("a\\..\\b.jpg", "backslash"), ("C:\\x.jpg", "backslash"),
     ("a\x00b.jpg", "control character"), ("new\nline.jpg", "control character"),
     ("del\x7f.jpg", "control character")],
)  # fmt: skip
def test_unsafe_rel_paths_are_refused_naming_them(rel_path: str, problem: str):
    with pytest.raises(ValueError, match=problem) as e:
        check_rel_path(rel_path)
    assert repr(rel_path) in str(e.value) and "refused" in str(e.value)
    assert not is_rel_path(rel_path)


@pytest.mark.parametrize("rel_path", ["a.jpg", "a/b/c.jpg", "..a.jpg", "a..b/c d#?%.jpg", "é.png"])
def test_plain_rel_paths_are_accepted(rel_path: str):
    assert check_rel_path(rel_path) == rel_path and is_rel_path(rel_path)


def test_the_archive_manifest_records_the_lr_files_sha256():
    assert ARCHIVE_SCHEMA.field("lr_sha256").type == pa.string()


def test_an_lr_declaring_more_pixels_than_the_limit_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 1
    data = encode_lr_png(photo(13, 9), LrHeader(side, side, 16, "0123abcd"))
    with pytest.raises(TooManyPixels, match=rf"it declares {side}x{side} = .* over the limit"):
        decode_lr_png(data)


@pytest.mark.parametrize("side", [20000, 40000])  # Pillow warns at the first, raises at the second
def test_an_lr_png_over_the_limit_is_refused(side: int):
    with pytest.raises(
        TooManyPixels, match=rf"the LR PNG is {side}x{side} = .* limit of {MAX_PIXELS}$"
    ):
        decode_lr_png(bomb_png(side, side))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (LrHeader(200, 141, 8, "id"), "tadm:scale is 8"),
        (LrHeader(0, 141, 16, "id"), "declares a 0x141 image"),
        (LrHeader(400, 141, 16, "id"), "LR PNG is 13x9, but a 400x141 image at x16 gives 25x9"),
    ],
)
def test_a_header_that_does_not_fit_its_lr_is_refused(header: LrHeader, message: str):
    with pytest.raises(ValueError, match=message):
        decode_lr_png(encode_lr_png(photo(13, 9), header))


def test_lr_png_carries_the_metadata_in_standard_chunks():
    lr = photo(13, 9)
    metadata = Metadata(
        exif=b"MM\x00*\x00\x00\x00\x08\x00\x00", icc=display_p3_icc(), xmp=xmp_packet()
    )
    header = LrHeader(width=200, height=141, scale=16, model_id="0123abcd", metadata=metadata)
    data = encode_lr_png(lr, header)
    for chunk in (b"eXIf", b"iCCP", b"iTXtXML:com.adobe.xmp\x00\x00\x00"):
        assert chunk in data
    pixels, decoded = decode_lr_png(data)
    np.testing.assert_array_equal(pixels, lr)
    assert decoded == header and decoded.metadata.names == "exif,icc,xmp"


def test_without_metadata_the_lr_png_is_the_pixels_and_text_alone():
    lr = photo(13, 9)
    header = LrHeader(width=200, height=141, scale=16, model_id="0123abcd")
    text = {
        "tadm:width": "200",
        "tadm:height": "141",
        "tadm:scale": "16",
        "tadm:model_id": "0123abcd",
    }
    assert encode_lr_png(lr, header) == png_bytes(lr, text)


@pytest.mark.parametrize("image_format", OUTPUT_FORMATS)
def test_restored_files_carry_the_metadata(image_format: str):
    exif = Image.Exif()
    exif[0x010F] = "TADM Camera Co."
    metadata = Metadata(exif=exif.tobytes()[6:], icc=display_p3_icc(), xmp=xmp_packet())
    data = encode_output(photo(40, 30), image_format, metadata)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == image_format.upper()
        assert Metadata.from_info(img.info) == metadata
        assert img.getexif()[0x010F] == "TADM Camera Co."
    assert Metadata.from_info({}) == Metadata() and Metadata().names is None


@pytest.mark.parametrize(
    ("density", "png_dpi", "jpeg"),
    [
        (b"300 150 in", (299.9994, 150.0124), (1, (300, 150))),  # PNG states pixels per metre
        (b"118 118 cm", (299.7196, 299.7196), (2, (118, 118))),
        (b"11811 3780 m", (299.9994, 96.012), (1, (300, 96))),  # JFIF has no metres
    ],
)
def test_the_pixel_density_travels_as_each_format_states_one(density, png_dpi, jpeg):
    """Through the LR PNG (its own text chunk: the LR is 16x smaller, its pixels are not that
    dense), into a restored PNG's pHYs and a JPEG's JFIF header; WebP has none."""
    metadata = Metadata(density=density)
    header = LrHeader(width=32, height=32, scale=16, model_id="m", metadata=metadata)
    data = encode_lr_png(photo(2, 2), header)
    assert b"tEXttadm:density\x00" + density in data and b"pHYs" not in data
    assert decode_lr_png(data)[1] == header and metadata.names == "density"
    with Image.open(io.BytesIO(encode_output(photo(8, 8), "png", metadata))) as img:
        assert img.info["dpi"] == pytest.approx(png_dpi, abs=1e-3)
    with Image.open(io.BytesIO(encode_output(photo(8, 8), "jpeg", metadata))) as img:
        assert (img.info["jfif_unit"], img.info["jfif_density"]) == jpeg
    assert not_held(metadata, "webp") == {"density": ""}
    with Image.open(io.BytesIO(encode_output(photo(8, 8), "webp", metadata))) as img:
        assert "dpi" not in img.info


def test_a_density_no_jfif_header_states_is_left_out_of_a_jpeg():
    metadata = Metadata(density=b"0.2 300 in")  # 0.2 rounds to 0: no density
    assert not_held(metadata, "jpeg") == {"density": "of 0.2 300 in (JFIF's are 1 to 65535)"}
    with Image.open(io.BytesIO(encode_output(photo(8, 8), "jpeg", metadata))) as img:
        assert img.info["jfif_unit"] == 0


@pytest.mark.parametrize(
    ("density", "why"),
    [
        (b"1e9 1e9 in", "of 1e9 1e9 in (pHYs's are 1 to 2,147,483,647 a metre)"),
        (b"0.001 0.001 in", "of 0.001 0.001 in (pHYs's are 1 to 2,147,483,647 a metre)"),
    ],
)
def test_a_density_no_phys_chunk_states_is_left_out_of_a_png(density: bytes, why: str):
    metadata = Metadata(density=density)
    assert not_held(metadata, "png") == {"density": why}
    with Image.open(io.BytesIO(encode_output(photo(8, 8), "png", metadata))) as img:
        assert "dpi" not in img.info


@pytest.mark.parametrize(
    "density", ["300 300", "300 300 ft", "0 300 in", "nan 1 in", "x 1 in", "1" * 62 + " 1 in"]
)
def test_an_lr_with_a_bad_density_is_corrupt(density: str):
    text = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    data = png_bytes(photo(2, 2), text | {"tadm:density": density})
    with pytest.raises(ValueError, match="^corrupt LR PNG: bad pixel density"):
        decode_lr_png(data)


def test_an_s3_sources_user_metadata_travels_in_the_lr_and_into_no_image_file():
    """The LR holds it in its own text chunk, in ASCII; no restored file holds it: a restore to
    S3 puts it on the object (pipeline/restore/write.py)."""
    user = {"mtime": "1700000000.25", "owner": "équipe-a"}  # names as S3 gives them
    metadata = Metadata(exif=b"MM\x00*\x00\x00\x00\x08\x00\x00", s3_metadata=s3_metadata_text(user))
    header = LrHeader(width=32, height=32, scale=16, model_id="m", metadata=metadata)
    data = encode_lr_png(photo(2, 2), header)
    assert b'tEXttadm:s3-metadata\x00{"mtime": "1700000000.25", "owner": "\\u00e9quipe-a"}' in data
    decoded = decode_lr_png(data)[1]
    assert decoded == header and decoded.metadata.names == "exif,s3_metadata"
    assert parse_s3_metadata(decoded.metadata.s3_metadata) == user
    for image_format in OUTPUT_FORMATS:
        assert held_by(metadata, image_format).s3_metadata is None
        assert not_held(metadata, image_format) == {}
        assert b"s3-metadata" not in encode_output(photo(8, 8), image_format, metadata)


def test_an_s3_sources_object_tags_travel_in_the_lr_and_into_no_image_file():
    """In S3's own x-amz-tagging form, in their order; a restore to S3 puts them on the object
    (pipeline/restore/write.py), which takes at most 10."""
    tags = [("project", "apollo"), ("class", "raw scan & proofs"), ("équipe", "")]
    metadata = Metadata(s3_tags=s3_tags_text(tags))
    assert metadata.s3_tags == b"project=apollo&class=raw%20scan%20%26%20proofs&%C3%A9quipe="
    header = LrHeader(width=32, height=32, scale=16, model_id="m", metadata=metadata)
    data = encode_lr_png(photo(2, 2), header)
    decoded = decode_lr_png(data)[1]
    assert decoded == header and decoded.metadata.names == "s3_tags"
    assert parse_s3_tags(decoded.metadata.s3_tags) == tags
    for image_format in OUTPUT_FORMATS:
        assert held_by(metadata, image_format).s3_tags is None
        assert b"s3-tags" not in encode_output(photo(8, 8), image_format, metadata)
    assert s3_put_tags(tags) == (metadata.s3_tags.decode(), None)
    eleven = [(f"k{i}", "v") for i in range(11)]  # an S3-compatible store may hold more
    assert s3_put_tags(eleven) == (None, "S3 object tags: 11, over S3's 10")


@pytest.mark.parametrize("text", ["a=1&&b", "a", "a=%FF", "é=1"])
def test_an_lr_with_s3_tags_that_are_not_key_value_pairs_is_corrupt(text: str):
    header = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    data = png_bytes(photo(2, 2), header | {"tadm:s3-tags": text})
    why = "bad S3 object tags: not key=value pairs joined by '&'"
    with pytest.raises(ValueError, match=f"^corrupt LR PNG: {re.escape(why)}$"):
        decode_lr_png(data)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[1, 2]", "not names and texts"),
        ('{"a": 1}', "not names and texts"),
        ("{", "not JSON"),
    ],
)
def test_an_lr_with_s3_metadata_that_is_not_names_and_texts_is_corrupt(text: str, why: str):
    """A restore to S3 would put something else on the image."""
    header = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    data = png_bytes(photo(2, 2), header | {"tadm:s3-metadata": text})
    with pytest.raises(
        ValueError, match=f"^corrupt LR PNG: bad S3 user metadata: {re.escape(why)}$"
    ):
        decode_lr_png(data)


def test_an_lr_holds_s3_metadata_larger_than_s3_takes():
    """An S3-compatible store may hold more than AWS's 2 KB: the LR keeps it, restores read it,
    and a restore to S3 leaves it out, saying so (s3_put_metadata)."""
    header = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    text = '{"a": "' + "x" * 13000 + '"}'
    _, read = decode_lr_png(png_bytes(photo(2, 2), header | {"tadm:s3-metadata": text}))
    assert parse_s3_metadata(read.metadata.s3_metadata) == {"a": "x" * 13000}
    assert s3_put_metadata({"a": "x" * 13000}) == (
        {},
        "S3 user metadata: 13,001 bytes, over S3's 2,048",
    )


def test_s3_user_metadata_is_put_as_s3_takes_it():
    assert s3_put_metadata({"mtime": "1700000000", "my_key": "v"}) == (
        {"mtime": "1700000000", "my_key": "v"},
        None,
    )
    # Not ASCII: RFC 2047, as S3 itself gives such a value back.
    assert s3_put_metadata({"title": "café"}) == ({"title": "=?UTF-8?B?Y2Fmw6k=?="}, None)
    assert s3_put_metadata({"tïtle": "x"}) == (
        {},
        "S3 user metadata: a name that is not ASCII, which S3 does not hold",
    )
    assert s3_put_metadata({"a": "x" * 2047}) == ({"a": "x" * 2047}, None)
    assert s3_put_metadata({"a": "x" * 2048})[1] == "S3 user metadata: 2,049 bytes, over S3's 2,048"


RESOURCES = b"8BIM\x04\x04\x00\x00" + bytes(range(256)) * 280  # over one APP13 segment
COMMENT = b"scanned 1998 \xe9\x00 end"  # not UTF-8, and a NUL: bytes, not text


def test_photoshop_resources_and_the_comment_travel_byte_for_byte():
    """Through the LR PNG (zTXt chunks ExifTool reads), and into restored PNG and JPEG files
    (APP13 segments, several when one is too small; COM); WebP has no place for them."""
    metadata = Metadata(xmp=xmp_packet(), photoshop=RESOURCES, comment=COMMENT)
    header = LrHeader(width=200, height=141, scale=16, model_id="0123abcd", metadata=metadata)
    _, decoded = decode_lr_png(encode_lr_png(photo(13, 9), header))
    assert decoded.metadata == metadata
    assert decoded.metadata.names == "xmp,photoshop,comment"
    for image_format in ("png", "jpeg"):
        restored = decode_image(encode_output(photo(40, 30), image_format, metadata))
        assert restored.metadata == metadata, image_format
    with Image.open(io.BytesIO(encode_output(photo(40, 30), "jpeg", metadata))) as img:
        assert [m for m, _ in img.applist].count("APP13") == 2
    webp = encode_output(photo(40, 30), "webp", metadata)
    assert decode_image(webp).metadata == Metadata(xmp=xmp_packet())
    assert held_by(metadata, "webp") == Metadata(xmp=xmp_packet())


def exif_of(size: int) -> bytes:
    """EXIF of `size` bytes: a TIFF structure with a Make tag, then padding."""
    exif = Image.Exif()
    exif[0x010F] = "TADM Camera Co."
    data = exif.tobytes()[6:]
    return data + bytes(size - len(data))


def xmp_of(size: int) -> bytes:
    """An XMP packet of `size` bytes, padded with spaces as XMP writers pad theirs."""
    packet = xmp_packet()
    end = b"<?xpacket end"
    return packet.replace(end, b" " * (size - len(packet)) + end)


@pytest.mark.parametrize(("block", "make"), [("exif", exif_of), ("xmp", xmp_of)])
def test_a_jpeg_leaves_out_an_exif_or_xmp_over_one_app1_segment(block: str, make):
    """One APP1 segment holds 65533 bytes with its header ("Exif\0\0", XMP's namespace);
    Pillow refuses more, which failed the image. PNG and WebP hold the block at any size."""
    assert JPEG_LIMITS == {"exif": 65527, "xmp": 65504, "comment": 65533}
    limit = JPEG_LIMITS[block]
    for size in (limit, limit + 1, 70_000):
        metadata = Metadata(icc=display_p3_icc(), comment=b"c", **{block: make(size)})
        assert len(getattr(metadata, block)) == size
        for image_format in OUTPUT_FORMATS:
            data = encode_output(photo(40, 30), image_format, metadata)
            held = held_by(metadata, image_format)
            assert decode_image(data).metadata == held, (size, image_format)
            carried = image_format != "jpeg" or size == limit
            assert (getattr(held, block) is not None) == carried, (size, image_format)
        expected = f"over {limit:,} bytes ({size:,} here)"
        assert not_held(metadata, "jpeg") == ({} if size == limit else {block: expected})
        assert held_by(metadata, "jpeg").icc == display_p3_icc()


def test_a_big_icc_profile_goes_into_a_jpeg_in_several_app2_segments():
    icc = display_p3_icc() + bytes(300_000)  # over four APP2 segments
    data = encode_output(photo(40, 30), "jpeg", Metadata(icc=icc))
    with Image.open(io.BytesIO(data)) as img:
        assert img.info["icc_profile"] == icc
        assert [m for m, _ in img.applist].count("APP2") == 5
    assert not_held(Metadata(icc=icc), "jpeg") == {}


@pytest.mark.parametrize(
    ("image_format", "width", "height"),
    [("jpeg", 16, 70_000), ("jpeg", 70_000, 16), ("jpeg", 65_501, 8), ("webp", 16, 16_384)],
)
def test_an_image_over_a_formats_sides_is_refused_before_encoding(
    image_format: str, width: int, height: int
):
    """libjpeg failed such an image with "broken data stream" (an OSError: transient, so every
    re-run tried again); now a permanent error names the limit, for any caller."""
    limit = MAX_SIDES[image_format]
    pixels = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(TooLargeForFormat) as raised:
        encode_output(pixels, image_format)
    assert str(raised.value) == (
        f"{image_format.upper()} holds at most {limit} pixels a side, this image is "
        f"{width}x{height}: write it as PNG"
    )
    assert error_kind(raised.value) == "permanent"
    side = np.zeros((min(height, limit), min(width, limit), 3), np.uint8)  # at the limit: fine
    with Image.open(io.BytesIO(encode_output(side, image_format))) as img:
        assert img.size == (min(width, limit), min(height, limit))


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ({"Raw profile type 8bim": "\n8bim\n       4\nzz00zz00\n"}, "chunk is no raw profile"),
        ({"Raw profile type 8bim": "\n8bim\n" + "9" * 5000 + "\n00\n"}, "chunk is no raw profile"),
        ({"Raw profile type 8bim": "\n8bim\n       9\n00\n"}, "chunk is no raw profile"),
        ({"Comment": "c" * 65534}, "comment of 65,534 bytes, over the 65,533 an LR carries"),
    ],
)
def test_an_lr_with_metadata_archive_never_writes_is_corrupt(chunks: dict, message: str):
    """A restore would write it into files that do not read back, or drop it silently."""
    text = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    data = png_bytes(photo(2, 2), text | chunks)
    with pytest.raises(ValueError, match=f"^corrupt LR PNG: .*{re.escape(message)}"):
        decode_lr_png(data)


def test_an_lr_with_a_truncated_colour_chunk_is_corrupt():
    text = {"tadm:width": "32", "tadm:height": "32", "tadm:scale": "16", "tadm:model_id": "m"}
    data = png_bytes(photo(2, 2), text)
    data = data[:33] + png_chunk(b"gAMA", b"\x00\x01") + data[33:]  # after IHDR
    with pytest.raises(ValueError, match="^corrupt LR PNG: Truncated gAMA chunk$"):
        decode_lr_png(data)


def test_a_utf8_comment_is_itxt_for_readers_and_other_bytes_latin1():
    for comment, chunk in ((b"caf\xc3\xa9", b"iTXtComment"), (b"caf\xe9\x00", b"zTXtComment")):
        header = LrHeader(32, 32, 16, "m", Metadata(comment=comment))
        data = encode_lr_png(photo(2, 2), header)
        assert chunk in data and decode_lr_png(data)[1].metadata.comment == comment


def test_kept_key():
    assert kept_key("a/b.jpg") == "kept/a/b.jpg"
