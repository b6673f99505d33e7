"""The body of `tadm bench` (its arguments: jobs/bench/cli.py): each section measured, then
results.json, results.md and the plots written under --out."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from jobs.bench.cli import SECTIONS, counts, sizes
from jobs.bench.codecs import lossless_formats, lossy_codecs
from jobs.bench.cost import run_cost
from jobs.bench.images import QUICK_CROP, load_images, write_pngs
from jobs.bench.machine import machine_info
from jobs.bench.memory import run_memory
from jobs.bench.metrics import Scorer
from jobs.bench.plan import run_plan
from jobs.bench.plots import write_plots
from jobs.bench.rd import contenders, run_rd, summarize
from jobs.bench.report import markdown
from jobs.bench.throughput import run_throughput
from jobs.common import ray_session
from pipeline.stage import load_model
from tadm.hub import default_model, shipped_names
from tadm.precision import resolve_precision

MEMORY_SIZES = {
    "full": "1024x1024,2048x2048,4096x4096,5120x2880",
    "quick": "256x256,512x512,640x360",
}
COST_SIZES = {"full": 1024, "quick": 256}
PLAN_SIZES = {"full": "1000000,10000000", "quick": "100000"}
# Each image this many times in the throughput runs: a job long enough that its start-up is
# amortised as in real archives (the start-up is reported on its own).
THROUGHPUT_COPIES = {"full": 10, "quick": 1}

logger = logging.getLogger("tadm")


def model_refs(args: argparse.Namespace) -> list[str]:
    if args.model:
        return args.model
    shipped = [default_model(s) for s in (16, 32) if default_model(s) in shipped_names()]
    if not shipped:
        raise ValueError(
            "no shipped tiny-x16/tiny-x32 checkpoint in this build: pass --model PATH ..."
        )
    return shipped


def run(args: argparse.Namespace, command: str) -> int:
    """Run the sections of `tadm bench` `args` asks for; the exit status (1: one failed)."""
    mode = "quick" if args.quick else "full"
    threads = args.threads or torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.cost_size is not None and args.cost_size < 64:
        raise ValueError(f"--cost-size must be at least 64 pixels, got {args.cost_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device")
    precision = resolve_precision(args.precision, args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file: give a folder for the results")
    needs_model = {"rd", "throughput", "memory"} & set(args.sections)
    refs = model_refs(args) if needs_model else []
    config = {
        "out": str(out),
        "quick": args.quick,
        "images": args.images,
        "models": refs,
        "lpips": args.lpips,
        "sections": args.sections,
        "memory_sizes": args.memory_sizes or sizes(MEMORY_SIZES[mode]),
        "cost_size": args.cost_size or COST_SIZES[mode],
        "plan_sizes": args.plan_sizes or counts(PLAN_SIZES[mode]),
        "device": args.device,
        "precision": precision,
        "tiling": args.tiling,
        "threads": threads,
    }
    logger.info("bench: %s", " ".join(f"{k}={v}" for k, v in config.items()))
    torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "command": command,
        "config": config,
        "machine": machine_info(),
        "skipped": {s: "not in --sections" for s in SECTIONS if s not in args.sections},
    }
    scorer = Scorer(args.lpips)
    codecs, missing_codecs = lossy_codecs()
    lossless, missing_lossless = lossless_formats()
    results["codecs"] = {
        "lossy": [{"name": c.name, "library": c.library, "settings": c.settings} for c in codecs],
        "lossless": [{"name": f.name, "library": f.library} for f in lossless],
        "unavailable": missing_codecs | missing_lossless,
    }
    results["metrics"] = {"reported": scorer.names, "unavailable": scorer.unavailable}
    images = load_images(args.images, QUICK_CROP if args.quick else None) if needs_model else []
    results["images"] = [
        {"name": i.name, "width": i.pixels.shape[1], "height": i.pixels.shape[0]} for i in images
    ]
    models = contenders([(ref, load_model(ref, {})) for ref in refs])
    results["models"] = [
        {"label": c.label, "ref": c.ref, "model_id": c.model_id, "scale": c.model.scale}
        for c in models
    ]
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        """Write what is measured so far: a long run killed midway keeps its finished parts."""
        results["load_average_end"] = os.getloadavg()[0]
        results["plots"] = write_plots(results, out)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "results.md").write_text(markdown(results) + "\n")

    def keep(section: str) -> Callable[[dict[str, Any]], None]:
        """Save a section's partial result as it grows."""

        def progress(partial: dict[str, Any]) -> None:
            results[section] = partial
            save()

        return progress

    def rd() -> dict[str, Any]:
        rows = run_rd(images, models, codecs, lossless, scorer, sweep_step=2 if args.quick else 1)
        return {"rows": rows, "summary": summarize(rows, scorer.names)}

    def throughput() -> dict[str, Any]:
        work = Path(tempfile.mkdtemp(prefix="tadm-bench-"))
        try:
            src = write_pngs(images, work / "images", THROUGHPUT_COPIES[mode])
            with ray_session():
                return run_throughput(src, work, models[0].ref)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # Throughput and memory use the first model (x16 by default).
    def plan() -> dict[str, Any]:
        work = Path(tempfile.mkdtemp(prefix="tadm-bench-plan-"))
        try:
            return run_plan(config["plan_sizes"], work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    runners = {
        "rd": rd,
        "throughput": throughput,
        "memory": lambda: run_memory(
            models[0].ref,
            config["memory_sizes"],
            threads,
            images=args.images,
            progress=keep("memory"),
        ),
        "cost": lambda: run_cost(
            config["cost_size"], args.device, precision, threads, tiling=args.tiling
        ),
        "plan": plan,
    }
    results["failed"] = {}
    for section in [s for s in SECTIONS if s in args.sections]:
        logger.info("bench %s: start", section)
        try:
            results[section] = runners[section]()
        except Exception as e:  # reported in the results; the other sections still run
            logger.error("bench %s: failed: %s: %s", section, type(e).__name__, e)
            results["failed"][section] = f"{type(e).__name__}: {e}"
        save()
    logger.info("bench: done, results in %s", out)
    return 1 if results["failed"] else 0
