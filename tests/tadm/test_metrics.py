"""PSNR and SSIM against scikit-image's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import photo
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tadm.metrics import psnr, ssim, strip_rows


@pytest.mark.parametrize("noise", [2, 20, 60])
def test_matches_skimage(noise: int):
    source = photo(57, 41)
    rng = np.random.default_rng(noise)
    restored = np.clip(source + rng.normal(0, noise, source.shape), 0, 255).astype(np.uint8)
    assert psnr(restored, source) == pytest.approx(
        peak_signal_noise_ratio(source, restored, data_range=255), rel=1e-9
    )
    assert psnr(restored, source, 15.0) == pytest.approx(
        peak_signal_noise_ratio(source, restored, data_range=15), rel=1e-9
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


def whole_image_ssim(restored: np.ndarray, source: np.ndarray) -> float:
    """SSIM of the whole image at once (all of its float64 maps in memory): the reference the
    strips must match."""
    from tadm.metrics import planes, ssim_terms

    luminance, contrast_structure = ssim_terms(planes(restored), planes(source), 255.0)
    return float((luminance * contrast_structure).mean())


@pytest.mark.parametrize(("width", "height"), [(700, 620), (2600, 111), (100, 2800)])
def test_strips_match_the_whole_image(width: int, height: int):
    """Several strips (the last one short) give the whole image's values."""
    assert height - 10 > 2 * strip_rows(width)  # at least three strips
    source = photo(width, height, 3)
    rng = np.random.default_rng(4)
    restored = np.clip(source + rng.normal(0, 25, source.shape), 0, 255).astype(np.uint8)
    assert ssim(restored, source) == pytest.approx(whole_image_ssim(restored, source), abs=1e-9)
    assert psnr(restored, source) == pytest.approx(
        peak_signal_noise_ratio(source, restored, data_range=255), rel=1e-12
    )
