"""Throughput on CPU: archive and restore megapixels per second, and what Ray costs.

The same PNG files go through
- a bare Python loop (decode -> model.downscale -> LR PNG write) with every core as torch
  threads, timed before and after the Ray runs, so a change in the machine's load shows and the
  ratio uses their mean;
- the archive job's Ray pipeline (prepare_archive + run_archive) with --workers 1 and 2, and the
  default plan if that is another count (pipeline.resources: one actor per core up to 4).
The ratio bare seconds / Ray seconds of the default plan (>= 0.9 is the target) is what a user's
job gets against the simplest program that does the same; --workers 1 is reported beside it.
Both include loading the model. Restore: a bare loop (decode the LR PNG -> model.upscale -> PNG
write) on the bare loop's LR files, with the same threads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.archive import ArchiveConfig, prepare_archive, run_archive
from pipeline.decode import decode_image
from pipeline.lr_png import LrHeader, decode_lr_png, encode_lr_png
from pipeline.model_loading import load_model
from pipeline.resources import plan_resources
from pipeline.storage import Location, write_atomic
from pipeline.tensors import quantize, to_images, to_tensor
from pipeline.write_restored import encode

logger = logging.getLogger("tadm")


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    images: int
    megapixels: float
    first_output_s: float | None = None  # Ray runs: when the first LR file appeared

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "images": self.images,
            "megapixels": self.megapixels,
            "mp_per_s": self.mp_per_s,
            "first_output_s": self.first_output_s,
        }


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png") if p.is_file())


def bare_archive(src: Path, dst: Path, model_ref: str, threads: int) -> Run:
    """decode -> downscale -> LR PNG write, one image at a time, model load included."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = load_model(model_ref, {})
    model_id = model.model_id
    fs, megapixels = Location.parse(str(dst)).filesystem(), 0.0
    files = files_of(src)
    with torch.inference_mode():
        for path in files:
            pixels = decode_image(path.read_bytes()).pixels
            h, w = pixels.shape[:2]
            lr = model.downscale(to_tensor([pixels]).float() / 255)
            png = encode_lr_png(to_images(lr)[0], LrHeader(w, h, model.scale, model_id))
            write_atomic(fs, str(dst / f"{path.name}.png"), png)
            megapixels += h * w / 1e6
    return Run("bare loop", time.perf_counter() - start, len(files), megapixels)


def bare_restore(src: Path, dst: Path, model_ref: str, threads: int) -> Run:
    """LR PNG decode -> upscale -> PNG write, one image at a time, model load included."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = load_model(model_ref, {})
    fs, megapixels = Location.parse(str(dst)).filesystem(), 0.0
    files = files_of(src)
    with torch.inference_mode():
        for path in files:
            pixels, header = decode_lr_png(path.read_bytes())
            x_hat = model.upscale(to_tensor([pixels]), size=(header.height, header.width))
            write_atomic(fs, str(dst / path.name), encode(to_images(quantize(x_hat))[0], "png"))
            megapixels += header.height * header.width / 1e6
    return Run("bare restore loop", time.perf_counter() - start, len(files), megapixels)


def ray_archive(src: Path, dst: Path, model_ref: str, workers: int, megapixels: float) -> Run:
    """The archive job end to end (plan, Ray graph, manifest) on the running Ray; also when its
    first LR file appeared (the job's start-up: actor start, imports, model load, first batch)."""
    start = time.perf_counter()
    first: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if any((dst / "lr").rglob("*.png")):
                first.append(time.perf_counter() - start)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        job = prepare_archive(
            ArchiveConfig(
                src=str(src), dst=str(dst), model=model_ref, workers=workers, overwrite=True
            )
        )
        result = run_archive(job)
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    if result.counts.get("ok", 0) != len(job.sources):
        raise RuntimeError(f"archive with --workers {workers} did not finish: {result.counts}")
    return Run(
        f"Ray, --workers {workers}",
        seconds,
        len(job.sources),
        megapixels,
        first_output_s=first[0] if first else seconds,
    )


def run_throughput(src: Path, work: Path, model_ref: str) -> dict[str, Any]:
    """Every throughput figure on the PNGs under `src`; outputs go under `work`."""
    threads = plan_resources(1, None).torch_threads or torch.get_num_threads()
    logger.info("bench throughput: %d images, torch threads %d", len(files_of(src)), threads)
    default = plan_resources(None, None).workers  # the plan a job gets without --workers
    before = bare_archive(src, work / "bare-before", model_ref, threads)
    ray = {w: ray_archive(src, work / f"ray-w{w}", model_ref, w, before.megapixels)
           for w in sorted({1, 2, default})}  # fmt: skip
    after = bare_archive(src, work / "bare-after", model_ref, threads)
    restore = bare_restore(work / "bare-after", work / "restored", model_ref, threads)
    bare_seconds = float(np.mean([before.seconds, after.seconds]))
    return {
        "model": model_ref,
        "torch_threads": threads,
        "images": before.images,
        "megapixels": before.megapixels,
        "runs": [r.to_dict() for r in (before, *ray.values(), after, restore)],
        "archive_mp_per_s": before.megapixels / bare_seconds,
        "restore_mp_per_s": restore.mp_per_s,
        "default_workers": default,
        "ray_vs_bare": bare_seconds / ray[default].seconds,
        "ray_w1_vs_bare": bare_seconds / ray[1].seconds,
        "workers_2_vs_1": ray[1].seconds / ray[2].seconds,
        "bare_drift": after.seconds / before.seconds - 1,
    }
