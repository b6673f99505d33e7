"""Bench codecs: every available codec round-trips and says why when missing; lossless formats
keep every pixel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import photo

from jobs.bench.codecs import jxl_distance, lossless_formats, lossy_codecs

CODECS, _ = lossy_codecs()
IMG = photo(160, 120, seed=5)


def test_jpeg_is_always_there_and_missing_codecs_say_why():
    codecs, missing = lossy_codecs()
    assert "jpeg" in [c.name for c in codecs]
    assert {c.name for c in codecs} | set(missing) == {"jpeg", "webp", "avif", "jxl"}
    assert all(reason for reason in missing.values())


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_codec_round_trip_and_quality_raises_size(codec):
    low, high = codec.encode(IMG, codec.low), codec.encode(IMG, 90)
    assert codec.decode(low).shape == IMG.shape
    assert len(low) < len(high)
    restored = codec.decode(high).astype(float)
    assert np.abs(restored - IMG).mean() < 10


def test_lossless_formats_keep_every_pixel():
    formats, _ = lossless_formats()
    for fmt in formats:
        assert np.array_equal(fmt.decode(fmt.encode(IMG)), IMG), fmt.name


def test_jxl_distance_follows_libjxl():
    assert jxl_distance(0) == pytest.approx(25.0)
    assert jxl_distance(30) == pytest.approx(6.4)
    assert jxl_distance(90) == pytest.approx(1.0)
