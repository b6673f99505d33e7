"""The LR PNG: lossless pixels and the tadm:* text chunks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import encode, photo
from PIL import Image

from pipeline.format import LrHeader, decode_lr_png, encode_lr_png


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
