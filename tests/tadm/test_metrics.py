"""PSNR and SSIM against scikit-image's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import photo
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tadm.metrics import psnr, ssim


@pytest.mark.parametrize("noise", [2, 20, 60])
def test_matches_skimage(noise: int):
    source = photo(57, 41)
    rng = np.random.default_rng(noise)
    restored = np.clip(source + rng.normal(0, noise, source.shape), 0, 255).astype(np.uint8)
    assert psnr(restored, source) == pytest.approx(
        peak_signal_noise_ratio(source, restored, data_range=255), rel=1e-9
    )
    expected = structural_similarity(
        restored,
        source,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(restored, source) == pytest.approx(expected, abs=1e-9)


def test_identical_images():
    source = photo(20, 20)
    assert psnr(source, source) == math.inf
    assert ssim(source, source) == pytest.approx(1.0)


def test_ssim_needs_the_window():
    assert ssim(photo(10, 30), photo(10, 30)) is None
