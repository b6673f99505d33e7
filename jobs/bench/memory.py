"""Peak memory of restoring one image, against its size (tiled inference, paper Sec. 4.4.1),
and of the job stages around the model on real photos.

Each measurement runs in a fresh process (`python -m jobs.bench.memory KIND W H MODEL THREADS`),
so one peak does not hide another. KIND:

- `model`: the model alone. Load it, take a random LR of the right size, note the RSS, then
  `model.upscale` it and convert to the uint8 image restore writes; the peak RSS during that,
  less the RSS before it, is the restore's own memory. Tiling bounds the model's working set, so
  what grows with the image is its buffers alone: the fit increase = fixed + slope * pixels shows
  both (slope in bytes per HR pixel; a float32 RGB HR image is 12 bytes per pixel).
- `restore`: restore's stages as one actor runs them, on a W x H photo (the sample photos tiled
  2 x 2 and resized) whose source is readable, so psnr and ssim are computed: read (LR and
  source decoded), model (upscale, uint8, psnr, ssim), write (the PNG encoded), and psnr + ssim
  alone.
- `archive`: archive --verify's stages: decode, then the model stage (downscale, the LR PNG
  decoded back, upscale, psnr, ssim).

For the stages, each step's increase is its peak RSS less the RSS with the model loaded and the
source file read; `bytes_per_pixel` is the largest increase over the HR pixels.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from jobs.bench.images import SAMPLES, load_images
from jobs.bench.rss import peak_rss, reset_peak, rss, run_probe
from pipeline.archive.downscale import Downscale
from pipeline.decode import MAX_PIXELS, decode_batch
from pipeline.format import LrHeader, encode_lr_png, encode_output, lr_key
from pipeline.restore.read import read_lr_batch
from pipeline.restore.upscale import Upscale
from pipeline.rows import to_rows
from pipeline.stage import load_model, restored_images
from pipeline.storage import Location
from tadm.metrics import psnr, ssim
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
        restored_images(model.upscale(lr, size=(height, width)))  # what restore writes
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


def synthetic_photo(width: int, height: int, images: str) -> np.ndarray:
    """A width x height photo: the first four images under `images` tiled 2 x 2, each resized
    to its quarter (Lanczos)."""
    photos = load_images(images)[:4]
    half = (max(1, width // 2), max(1, height // 2))
    canvas = Image.new("RGB", (width, height))
    for i in range(4):
        tile = Image.fromarray(photos[i % len(photos)].pixels).resize(half, Image.LANCZOS)
        canvas.paste(tile, ((i % 2) * (width - half[0]), (i // 2) * (height - half[1])))
    return np.asarray(canvas)


class Steps:
    """Peak RSS of each step in turn, above a baseline taken when it is made."""

    def __init__(self) -> None:
        gc.collect()
        self.baseline = rss()
        self.exact = True
        self.increase: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self, name: str, step: Callable[[], Any]) -> Any:
        gc.collect()
        self.exact = reset_peak() and self.exact
        start = time.perf_counter()
        out = step()
        self.seconds[name] = time.perf_counter() - start
        self.increase[name] = peak_rss() - self.baseline
        return out

    def point(self, kind: str, width: int, height: int) -> dict[str, Any]:
        peak = max(self.increase.values())
        return {
            "kind": kind,
            "width": width,
            "height": height,
            "megapixels": width * height / 1e6,
            "seconds": sum(self.seconds.values()),
            "baseline_rss": self.baseline,
            "increase": peak,
            "bytes_per_pixel": peak / (width * height),
            "steps": {
                name: {"increase": self.increase[name], "seconds": self.seconds[name]}
                for name in self.increase
            },
            "peak_since_start": not self.exact,
        }


def probe_restore(
    width: int, height: int, model_ref: str, threads: int, images: str
) -> dict[str, Any]:
    """Restore's read, model and write stages on one photo, its source readable."""
    stage = Upscale(model_ref, {}, region=None, torch_threads=threads)
    model = stage.model
    with tempfile.TemporaryDirectory(prefix="tadm-bench-memory-") as tmp:
        source = Path(tmp) / "source.jpg"
        pixels = synthetic_photo(width, height, images)
        Image.fromarray(pixels).save(source, quality=95)
        lr = Image.fromarray(pixels).resize(
            (math.ceil(width / model.scale), math.ceil(height / model.scale)), Image.BICUBIC
        )
        header = LrHeader(width, height, model.scale, stage.model_id)
        lr_file = Path(tmp) / lr_key("source.jpg")
        lr_file.parent.mkdir()
        lr_file.write_bytes(encode_lr_png(np.asarray(lr), header))
        del pixels, lr
        batch = {
            "rel_path": np.array(["source.jpg"], dtype=object),
            "lr_uri": np.array([str(lr_file)], dtype=object),
            "source_uri": np.array([str(source)], dtype=object),
            "source_sha256": np.array([hashlib.sha256(source.read_bytes()).hexdigest()]),
            "source_bytes": np.array([source.stat().st_size]),
        }
        steps = Steps()
        read = steps.run(
            "read",
            lambda: read_lr_batch(
                batch, archive=Location.parse(tmp), model_id=stage.model_id, region=None, options={}
            ),
        )
        (source_pixels,) = read["source_pixels"]
        out = steps.run("model", lambda: stage(read))

        (row,) = to_rows(out)
        if row["status"] != "ok":
            raise RuntimeError(f"restore failed: {row['error']}")
        restored = row["restored"]
        steps.run(
            "psnr_ssim", lambda: (psnr(restored, source_pixels), ssim(restored, source_pixels))
        )
        steps.run("write", lambda: len(encode_output(restored, "png")))
        return steps.point("restore", width, height)


def probe_archive(
    width: int, height: int, model_ref: str, threads: int, images: str
) -> dict[str, Any]:
    """archive --verify's decode and model stages on one photo."""
    stage = Downscale(model_ref, {}, verify=True, torch_threads=threads)
    out = io.BytesIO()
    Image.fromarray(synthetic_photo(width, height, images)).save(out, format="JPEG", quality=95)
    batch = {
        "path": np.array(["/bench/source.jpg"], dtype=object),
        "bytes": np.array([out.getvalue()], dtype=object),
    }
    del out
    steps = Steps()
    decoded = steps.run(
        "decode",
        lambda: decode_batch(
            batch, prefix="/bench/", uri_prefix="", scale=stage.model.scale, max_pixels=MAX_PIXELS
        ),
    )
    result = steps.run("model", lambda: stage(decoded))
    (row,) = to_rows(result)
    if row["status"] != "ok":
        raise RuntimeError(f"archive failed: {row['error']}")
    return steps.point("archive", width, height)


PROBES = {"restore": probe_restore, "archive": probe_archive}
KINDS = ("model", *PROBES)


def run_memory(
    model_ref: str,
    sizes: list[tuple[int, int]],
    threads: int,
    images: str = str(SAMPLES),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One fresh process per size and kind; the model's points with the linear fit of increase
    on pixels, and the stages' points. `progress` gets the result so far after each process (a
    long run cut short keeps them)."""
    result: dict[str, Any] = {
        "model": model_ref,
        "torch_threads": threads,
        "points": [],
        "stages": [],
    }
    for width, height in sizes:
        for kind in KINDS:
            logger.info("bench memory: %s %dx%d in a fresh process", kind, width, height)
            args = [kind, str(width), str(height), model_ref, str(threads), images]
            point = run_probe("jobs.bench.memory", args)
            result["points" if kind == "model" else "stages"].append(point)
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
    p = argparse.ArgumentParser(description="measure one W x H image; print memory as JSON")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("width", type=int)
    p.add_argument("height", type=int)
    p.add_argument("model")
    p.add_argument("threads", type=int)
    p.add_argument("images", help="folder of the photos the stages' image is made from")
    args = p.parse_args()
    if args.kind == "model":
        point = probe(args.width, args.height, args.model, args.threads)
    else:
        point = PROBES[args.kind](args.width, args.height, args.model, args.threads, args.images)
    print(json.dumps(point))


if __name__ == "__main__":
    main()
