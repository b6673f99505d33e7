"""Match a codec to a target bpp by bisection on its quality setting.

File size grows with quality (almost always monotonically), so bisection keeps a bracket
lo < hi with bpp(lo) <= target < bpp(hi) and returns the closer end. Outcomes:

- matched: within `tolerance` (relative) of the target;
- nearest: the codec's setting steps are too coarse there; `bracket` holds the two bpps around
  the target;
- floor: even the lowest quality spends more than the target (plus tolerance): the codec cannot
  go that low, and its lowest setting is reported;
- ceiling: even the highest quality searched spends less (not expected at TADM's rates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.bench.codecs import Codec

TOLERANCE = 0.05  # relative bpp deviation that counts as matched
FLOAT_STEPS = 20  # bisection steps on a continuous quality setting


@dataclass(frozen=True)
class Match:
    quality: float  # the codec setting chosen
    data: bytes  # the encoded file
    bpp: float  # 8 * len(data) / (H * W)
    status: str  # matched | nearest | floor | ceiling
    bracket: tuple[float, float] | None = None  # bpps around the target when status is nearest

    def deviation(self, target: float) -> float:
        """Relative bpp difference to the target (+0.10: 10% more bits)."""
        return self.bpp / target - 1


def bpp_of(data: bytes, img: np.ndarray) -> float:
    return 8 * len(data) / (img.shape[0] * img.shape[1])


def match_bpp(codec: Codec, img: np.ndarray, target: float, tolerance: float = TOLERANCE) -> Match:
    """The quality setting of `codec` whose file for `img` comes closest to `target` bpp."""
    if target <= 0:
        raise ValueError(f"target bpp must be positive, got {target}")

    def encode(quality: float) -> Match:
        data = codec.encode(img, quality)
        return Match(quality, data, bpp_of(data, img), "")

    lo = encode(codec.low)
    if lo.bpp > target * (1 + tolerance):
        return Match(lo.quality, lo.data, lo.bpp, "floor")
    hi = encode(codec.high)
    if hi.bpp < target * (1 - tolerance):
        return Match(hi.quality, hi.data, hi.bpp, "ceiling")
    if lo.bpp > target:
        return Match(lo.quality, lo.data, lo.bpp, "matched")
    steps = 0
    close = target * (1 - tolerance / 10)  # lo this close: no need to search on
    while hi.bpp > target and lo.bpp < close and not done(codec, lo.quality, hi.quality, steps):
        mid = encode(midpoint(codec, lo.quality, hi.quality))
        lo, hi = (mid, hi) if mid.bpp <= target else (lo, mid)
        steps += 1
    best = min((lo, hi), key=lambda m: abs(m.bpp - target))
    if abs(best.bpp / target - 1) <= tolerance:
        return Match(best.quality, best.data, best.bpp, "matched")
    return Match(best.quality, best.data, best.bpp, "nearest", (lo.bpp, hi.bpp))


def midpoint(codec: Codec, lo: float, hi: float) -> float:
    return (lo + hi) // 2 if codec.integer else (lo + hi) / 2


def done(codec: Codec, lo: float, hi: float, steps: int) -> bool:
    return hi - lo <= 1 if codec.integer else steps >= FLOAT_STEPS
