"""Throughput on CPU: archive and restore megapixels per second, and the archive job's Ray
pipeline against a bare loop doing the same work.

The same PNG files go through
- the bare archive loop (jobs/bench/bare.py: decode -> model.downscale -> LR PNG write) with
  every core as torch threads, run as a program of its own and timed whole (interpreter start,
  imports, model load, images: what each Ray model actor pays too), once before and once after
  the Ray runs; the ratios use the mean of the two, and their relative change is reported as drift;
- the archive job (prepare_archive + run_archive) on the running Ray with --workers 1 and 2, and
  with the default plan's worker count when that is another;
- the bare restore loop (decode the LR PNG -> model.upscale -> PNG write) on the bare loop's LR
  files, with the same threads.
Reported beside the megapixels per second: bare seconds / Ray seconds for the default plan and
for --workers 1, --workers 2 against 1, and the default plan against the bare loop's time from
its model load on (without its interpreter start and imports).
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

from jobs.bench.bare import files_of
from jobs.bench.rss import run_probe
from pipeline.archive.config import ArchiveConfig
from pipeline.archive.plan import prepare_archive
from pipeline.job import run as run_archive
from pipeline.resources import plan_resources

logger = logging.getLogger("tadm")


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    images: int
    megapixels: float
    first_output_s: float | None = None  # Ray runs: when the first LR file appeared
    loop_s: float | None = None  # bare loops: from the model load on (no interpreter, imports)

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
            "loop_s": self.loop_s,
        }


def bare_loop(loop: str, src: Path, dst: Path, model_ref: str, threads: int) -> Run:
    """`jobs.bench.bare` as its own program, timed from its start to its end."""
    start = time.perf_counter()
    out = run_probe("jobs.bench.bare", [loop, str(src), str(dst), model_ref, str(threads)])
    seconds = time.perf_counter() - start
    name = "bare loop" if loop == "archive" else "bare restore loop"
    return Run(name, seconds, out["images"], out["megapixels"], loop_s=out["loop_s"])


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
    if result.counts.get("ok", 0) != job.images.rows:
        raise RuntimeError(f"archive with --workers {workers} did not finish: {result.counts}")
    return Run(
        f"Ray, --workers {workers}",
        seconds,
        job.images.rows,
        megapixels,
        first_output_s=first[0] if first else seconds,
    )


def run_throughput(src: Path, work: Path, model_ref: str) -> dict[str, Any]:
    """Every throughput figure on the PNGs under `src`; outputs go under `work`."""
    threads = plan_resources(1, None).torch_threads or torch.get_num_threads()
    logger.info("bench throughput: %d images, torch threads %d", len(files_of(src)), threads)
    default = plan_resources(None, None).workers  # the plan a job gets without --workers
    before = bare_loop("archive", src, work / "bare-before", model_ref, threads)
    ray = {w: ray_archive(src, work / f"ray-w{w}", model_ref, w, before.megapixels)
           for w in sorted({1, 2, default})}  # fmt: skip
    after = bare_loop("archive", src, work / "bare-after", model_ref, threads)
    restore = bare_loop("restore", work / "bare-after", work / "restored", model_ref, threads)
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
        "ray_vs_bare_loop_only": float(np.mean([before.loop_s, after.loop_s]))
        / ray[default].seconds,
    }
