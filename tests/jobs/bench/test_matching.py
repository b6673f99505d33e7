"""Bench bpp matching: bisection over a codec's quality lands on the target or says why not."""

from __future__ import annotations

import pytest
from conftest import photo

from jobs.bench.codecs import lossy_codecs
from jobs.bench.matching import TOLERANCE, bpp_of, match_bpp

CODECS, _ = lossy_codecs()
IMG = photo(160, 120, seed=5)


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
