"""The bare loops the archive job is measured against, each run as a program of its own.

    python -m jobs.bench.bare archive|restore SRC DST MODEL THREADS

A user's bare script pays its interpreter start, its imports (torch, diffusers) and its model
load once, as each Ray model actor does; so `throughput` times this whole process, and the loop
reports in JSON how long it took from its model load on (`loop_s`: model load and images,
without the start-up before it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pipeline.decode import decode_image
from pipeline.format import LrHeader, decode_lr_png, encode_lr_png
from pipeline.model_loading import load_model
from pipeline.restore.write import encode
from pipeline.storage import Location, write_atomic
from tadm.images import to_float_batch, to_images, to_tensor, to_uint8_image


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png") if p.is_file())


def archive(src: Path, dst: Path, model_ref: str) -> float:
    """decode -> downscale -> LR PNG write, one image at a time; returns megapixels."""
    model = load_model(model_ref, {})
    model_id = model.model_id
    fs, megapixels = Location.parse(str(dst)).filesystem(), 0.0
    with torch.inference_mode():
        for path in files_of(src):
            pixels = decode_image(path.read_bytes()).pixels
            h, w = pixels.shape[:2]
            lr = model.downscale(to_float_batch(pixels))
            png = encode_lr_png(to_images(lr)[0], LrHeader(w, h, model.scale, model_id))
            write_atomic(fs, str(dst / f"{path.name}.png"), png)
            megapixels += h * w / 1e6
    return megapixels


def restore(src: Path, dst: Path, model_ref: str) -> float:
    """LR PNG decode -> upscale -> PNG write, one image at a time; returns megapixels."""
    model = load_model(model_ref, {})
    fs, megapixels = Location.parse(str(dst)).filesystem(), 0.0
    with torch.inference_mode():
        for path in files_of(src):
            pixels, header = decode_lr_png(path.read_bytes())
            x_hat = model.upscale(to_tensor([pixels]), size=(header.height, header.width))
            write_atomic(fs, str(dst / path.name), encode(to_uint8_image(x_hat), "png"))
            megapixels += header.height * header.width / 1e6
    return megapixels


def main() -> None:
    p = argparse.ArgumentParser(description="one bare loop; figures as JSON")
    p.add_argument("loop", choices=("archive", "restore"))
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("model")
    p.add_argument("threads", type=int)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loop_start = time.perf_counter()
    megapixels = (archive if args.loop == "archive" else restore)(args.src, args.dst, args.model)
    end = time.perf_counter()
    images = len(files_of(args.src))
    print(json.dumps({"images": images, "megapixels": megapixels, "loop_s": end - loop_start}))


if __name__ == "__main__":
    main()
