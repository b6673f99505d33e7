"""PNG bytes of an image (tadm/png.py): pixels and text chunks survive."""

import io

import numpy as np
from conftest import photo
from PIL import Image

from tadm.png import png_bytes


def test_png_bytes_keep_pixels_and_text():
    img = photo(12, 8)
    with Image.open(io.BytesIO(png_bytes(img, {"tadm:scale": "16"}))) as png:
        assert png.text == {"tadm:scale": "16"}
        assert np.array_equal(np.asarray(png.convert("RGB")), img)
