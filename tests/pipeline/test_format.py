"""The archive format: the LR PNG (lossless pixels, the tadm:* text chunks), keys, regions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import display_p3_icc, encode, photo, xmp_packet
from PIL import Image

from pipeline.format import (
    OUTPUT_FORMATS,
    LrHeader,
    Metadata,
    Region,
    decode_lr_png,
    encode_lr_png,
    encode_output,
    kept_key,
    lr_key,
    output_key,
)
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
    with pytest.raises(ValueError, match="corrupt LR PNG"):
        decode_lr_png(b"\x89PNG garbage")


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


def test_kept_key():
    assert kept_key("a/b.jpg") == "kept/a/b.jpg"
