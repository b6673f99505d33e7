"""Peak memory of restoring one image, against its size (tiled inference, paper Sec. 4.4.1).

Each size runs in a fresh process (`python -m jobs.bench.memory W H MODEL THREADS`): load
the model, take an LR of the right size, note the RSS, then `model.upscale` it and quantize to
the uint8 image restore writes; the peak RSS during that restore, less the RSS before it, is the
restore's own memory. Tiling bounds the model's working set, so what grows with the image is its
buffers alone: the fit increase = fixed + slope * pixels shows both (slope in bytes per HR pixel;
a float32 RGB HR image is 12 bytes per pixel).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from jobs.bench.rss import peak_rss, reset_peak, rss, run_probe
from pipeline.stage import load_model
from tadm.images import to_images, to_pixels
from tadm.tiling import tile_grid

logger = logging.getLogger("tadm")

FLOAT_RGB_BYTES = 12  # one float32 RGB HR pixel


def probe(width: int, height: int, model_ref: str, threads: int) -> dict[str, Any]:
    """Restore one random LR of a width x height image in this process; its memory figures."""
    torch.set_num_threads(threads)
    model = load_model(model_ref, {})
    s, f = model.scale, model.config.vae_factor
    rng = np.random.default_rng(0)
    lr = torch.from_numpy(
        rng.integers(0, 256, (1, 3, math.ceil(height / s), math.ceil(width / s)), dtype=np.uint8)
    )
    m = model.size_multiple
    tiles = tile_grid(
        math.ceil(height / m) * m // f,
        math.ceil(width / m) * m // f,
        model.config.tile,
        model.config.tile_stride,
    )
    gc.collect()
    baseline = rss()
    exact = reset_peak()
    start = time.perf_counter()
    with torch.inference_mode():
        to_images(to_pixels(model.upscale(lr, size=(height, width))))  # what restore writes
    seconds = time.perf_counter() - start
    peak = peak_rss()
    return {
        "width": width,
        "height": height,
        "megapixels": width * height / 1e6,
        "tiles": len(tiles),
        "seconds": seconds,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "increase": peak - baseline,
        "hr_float_buffer": FLOAT_RGB_BYTES * width * height,
        "peak_since_start": not exact,  # True: the kernel refused to reset the peak
    }


def run_memory(
    model_ref: str,
    sizes: list[tuple[int, int]],
    threads: int,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One fresh process per size; the points, and the linear fit of increase on pixels.
    `progress` gets the result so far after each size (a long run cut short keeps them)."""
    result: dict[str, Any] = {"model": model_ref, "torch_threads": threads, "points": []}
    for width, height in sizes:
        logger.info("bench memory: restoring %dx%d in a fresh process", width, height)
        args = [str(width), str(height), model_ref, str(threads)]
        result["points"].append(run_probe("jobs.bench.memory", args))
        fit(result)
        if progress is not None:
            progress(result)
    return result


def fit(result: dict[str, Any]) -> None:
    """Fit increase = fixed + slope * pixels over the points (two at least)."""
    points = result["points"]
    if len(points) < 2:
        return
    pixels = np.array([p["width"] * p["height"] for p in points], dtype=np.float64)
    increase = np.array([p["increase"] for p in points], dtype=np.float64)
    slope, fixed = np.polyfit(pixels, increase, 1)
    for p, px in zip(points, pixels, strict=True):
        p["beyond_buffers"] = p["increase"] - slope * px
    result["fit"] = {
        "fixed_bytes": float(fixed),
        "bytes_per_pixel": float(slope),
        "hr_float_images": float(slope / FLOAT_RGB_BYTES),
    }


def main() -> None:
    p = argparse.ArgumentParser(description="restore one image of W x H; print memory as JSON")
    p.add_argument("width", type=int)
    p.add_argument("height", type=int)
    p.add_argument("model")
    p.add_argument("threads", type=int)
    args = p.parse_args()
    print(json.dumps(probe(args.width, args.height, args.model, args.threads)))


if __name__ == "__main__":
    main()
