"""Rate-distortion: TADM at its scales against bicubic and today's codecs (paper Sec. 4.4.2,
Fig. 17), on the same images, with the same metrics.

Rate is bits per HR pixel, bpp = 8 * file bytes / (H * W). TADM's rate is its archived LR PNG
(with the tadm:* text chunks, as the manifest counts it); the same LR pixels as lossless WebP
or JPEG XL are listed beside it (pixels only, no chunks). Each codec is matched per image to
TADM's bpp by bisection on its quality (matching.py), and swept over its quality for the
curves. Bicubic: bicubic down, 8-bit LR PNG, bicubic up; the VAE bound (Sec. 4.4.4) is D(E(x))
of each model's VAE, the ceiling of any TADM built on it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jobs.bench.codecs import Codec, Lossless
from jobs.bench.images import BenchImage
from jobs.bench.matching import bpp_of, match_bpp
from jobs.bench.metrics import Scorer
from pipeline.format import LrHeader, encode_lr_png
from tadm import TADM
from tadm.evaluation import bicubic_round_trip, vae_round_trip
from tadm.images import to_float_batch, to_uint8_image

logger = logging.getLogger("tadm")

Row = dict[str, Any]


@dataclass(frozen=True)
class Contender:
    """A TADM model under test."""

    label: str  # "tadm-x16": unique per model
    ref: str  # the shipped name or folder it was loaded from
    model: TADM
    model_id: str


def contenders(refs: list[tuple[str, TADM]]) -> list[Contender]:
    """Label models by scale ("tadm-x16"), adding the index where two share a scale."""
    scales = [model.scale for _, model in refs]
    out = []
    for i, (ref, model) in enumerate(refs):
        label = f"tadm-x{model.scale}"
        if scales.count(model.scale) > 1:
            label += f"-{i}"
        out.append(Contender(label, ref, model, model.model_id))
    return out


def lr_pixels(lr: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) uint8 -> (h, w, 3) uint8."""
    return lr[0].permute(1, 2, 0).cpu().numpy()


@torch.inference_mode()
def tadm_rows(
    c: Contender, image: BenchImage, scorer: Scorer, lossless: list[Lossless]
) -> list[Row]:
    """TADM's point (archived PNG), the same LR in each lossless format, and the VAE bound."""
    img = image.pixels
    h, w = img.shape[:2]
    hr = to_float_batch(img)
    lr = c.model.downscale(hr)
    restored = to_uint8_image(c.model.upscale(lr, size=(h, w)))
    pixels = lr_pixels(lr)
    png = encode_lr_png(pixels, LrHeader(w, h, c.model.scale, c.model_id))
    scores = scorer(restored, img)
    rows = [row(image, "tadm", c.label, bpp=bpp_of(png, img), scores=scores, lr_bytes=len(png))]
    for fmt in lossless:
        data = fmt.encode(pixels)
        if not np.array_equal(fmt.decode(data), pixels):
            raise RuntimeError(f"{fmt.name} did not round-trip the LR of {image.name} exactly")
        rows.append(
            row(
                image,
                "tadm-lr",
                f"{c.label} LR as {fmt.name}",
                target=c.label,
                bpp=bpp_of(data, img),
                scores=scores,
                lr_bytes=len(data),
            )
        )
    bound = scorer(vae_round_trip(c.model, hr), img)
    rows.append(row(image, "vae-bound", f"{c.label} VAE bound", target=c.label, scores=bound))
    return rows


def bicubic_row(scale: int, image: BenchImage, scorer: Scorer) -> Row:
    img = image.pixels
    h, w = img.shape[:2]
    lr, restored = bicubic_round_trip(to_float_batch(img), scale)
    png = encode_lr_png(to_uint8_image(lr), LrHeader(w, h, scale, ""))
    return row(
        image,
        "bicubic",
        f"bicubic-x{scale}",
        bpp=bpp_of(png, img),
        scores=scorer(to_uint8_image(restored), img),
    )


def matched_rows(codecs: list[Codec], image: BenchImage, target: Row, scorer: Scorer) -> list[Row]:
    """Each codec at the quality whose file comes closest to the target row's bpp."""
    rows = []
    for codec in codecs:
        match = match_bpp(codec, image.pixels, target["bpp"])
        rows.append(
            row(
                image,
                "matched",
                codec.name,
                target=target["method"],
                quality=match.quality,
                status=match.status,
                bpp=match.bpp,
                deviation=match.deviation(target["bpp"]),
                bracket=list(match.bracket) if match.bracket else None,
                scores=scorer(codec.decode(match.data), image.pixels),
            )
        )
    return rows


def sweep_rows(codecs: list[Codec], image: BenchImage, scorer: Scorer, step: int) -> list[Row]:
    """Each codec over its sweep qualities (every `step`-th one), for the R-D curves."""
    rows = []
    for codec in codecs:
        for quality in codec.sweep[::step]:
            data = codec.encode(image.pixels, quality)
            scores = scorer(codec.decode(data), image.pixels)
            rows.append(
                row(
                    image,
                    "sweep",
                    codec.name,
                    quality=quality,
                    bpp=bpp_of(data, image.pixels),
                    scores=scores,
                )
            )
    return rows


def row(image: BenchImage, kind: str, method: str, scores: dict, **fields: Any) -> Row:
    return {"image": image.name, "kind": kind, "method": method, **fields, **scores}


def run_rd(
    images: list[BenchImage],
    models: list[Contender],
    codecs: list[Codec],
    lossless: list[Lossless],
    scorer: Scorer,
    sweep_step: int = 1,
) -> list[Row]:
    """Every per-image row of the R-D comparison."""
    rows: list[Row] = []
    for image in images:
        h, w = image.pixels.shape[:2]
        logger.info("bench rd: %s (%dx%d)", image.name, w, h)
        for scale in sorted({c.model.scale for c in models}):
            rows.append(bicubic_row(scale, image, scorer))
        for c in models:
            tadm = tadm_rows(c, image, scorer, lossless)
            rows += tadm + matched_rows(codecs, image, tadm[0], scorer)
        rows += sweep_rows(codecs, image, scorer, sweep_step)
    return rows


def summarize(rows: list[Row], metrics: list[str]) -> list[Row]:
    """Means over images per (kind, method, target, quality); statuses counted."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        quality = r.get("quality") if r["kind"] == "sweep" else None  # matched: per image
        groups[(r["kind"], r["method"], r.get("target"), quality)].append(r)
    out = []
    for (kind, method, target, quality), members in groups.items():
        summary: Row = {"kind": kind, "method": method, "target": target, "images": len(members)}
        if kind == "sweep":
            summary["quality"] = quality
        for key in ("bpp", "deviation", *metrics):
            summary[key] = mean([m.get(key) for m in members])
        statuses = [m["status"] for m in members if m.get("status")]
        if statuses:
            summary["status"] = {s: statuses.count(s) for s in sorted(set(statuses))}
        out.append(summary)
    return out


def mean(values: list[float | None]) -> float | None:
    """Mean of the values present; None when there is none (inf when one is inf)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(present)) if present else None
