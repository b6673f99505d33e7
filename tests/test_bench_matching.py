"""Bench codecs and bpp matching: every available codec round-trips, bisection lands on the
target or says why not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import photo

from jobs.bench.codecs import jxl_distance, lossless_formats, lossy_codecs
from jobs.bench.matching import TOLERANCE, bpp_of, match_bpp

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


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_match_lands_on_a_reachable_target(codec):
    low = bpp_of(codec.encode(IMG, codec.low), IMG)
    high = bpp_of(codec.encode(IMG, codec.high), IMG)
    target = (low * high) ** 0.5
    match = match_bpp(codec, IMG, target)
    assert match.bpp == pytest.approx(bpp_of(match.data, IMG))
    if match.status == "nearest":  # integer quality steps too coarse: the bracket shows it
        lo, hi = match.bracket
        assert lo <= target < hi
    else:
        assert match.status == "matched"
        assert abs(match.deviation(target)) <= TOLERANCE


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_match_below_the_codec_floor_reports_the_floor(codec):
    match = match_bpp(codec, IMG, 1e-4)
    assert match.status == "floor"
    assert match.quality == codec.low
    assert match.bpp > 1e-4


def test_match_above_the_top_quality_reports_the_ceiling():
    jpeg = next(c for c in CODECS if c.name == "jpeg")
    assert match_bpp(jpeg, IMG, 200.0).status == "ceiling"


def test_match_refuses_a_non_positive_target():
    with pytest.raises(ValueError, match="target bpp"):
        match_bpp(CODECS[0], IMG, 0.0)
