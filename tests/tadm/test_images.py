"""Images between numpy and torch (tadm/images.py): layouts, value ranges, round trips."""

import numpy as np
import torch
from conftest import photo

from tadm.images import to_float_batch, to_images, to_pixels, to_tensor, to_uint8_image


def test_uint8_batch_round_trip():
    images = [photo(7, 5, seed=0), photo(7, 5, seed=1)]
    x = to_tensor(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.uint8
    assert torch.equal(x[1, :, 2, 3], torch.from_numpy(images[1][2, 3]))
    assert all(np.array_equal(a, b) for a, b in zip(to_images(x), images, strict=True))


def test_float_batch_round_trip():
    img = photo(9, 6)
    x = to_float_batch(img)
    assert x.shape == (1, 3, 6, 9) and x.dtype == torch.float32
    assert torch.equal(x[0, :, 4, 2] * 255, torch.from_numpy(img[4, 2]).float())
    out = to_uint8_image(x)
    assert out.dtype == np.uint8 and np.array_equal(out, img)


def test_float_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.4 / 255, 1.4 / 255, 1.6 / 255, 1.0, 1.5])
    expected = [0, 0, 0, 1, 2, 255, 255]
    assert to_pixels(x).tolist() == expected
    assert to_uint8_image(x.view(1, 1, 1, 7).expand(1, 3, 1, 7))[0, :, 0].tolist() == expected
