"""Inference benchmark for a GPU machine without Ray or network (scripts/gpu_bench.sh runs it).

1. cost: the sd21 configuration with random weights of the real shapes, one square image per
   run through downscale then upscale (jobs/bench/cost.py, the cost section of `tadm bench`,
   each run in a fresh process), for every size x scale x precision x tiling: seconds per
   image, peak memory, FLOPs and the fraction of the compute floor.
2. throughput: model-stage megapixels per second of the shipped tiny checkpoints, downscale
   (archive) and upscale (restore) on a batch of images, per precision, tiling and memory
   format (channels-last or not); with --compile also the UNet under torch.compile (its
   warm-up reported apart).
3. lr: how many LR pixels of the shipped checkpoints change between fp32 and each half
   precision, on the photos under samples/.

Each result is one JSON line appended to OUT/<part>.jsonl as soon as it is measured; a rerun
skips the lines already there, so a run cut short by a time limit resumes. OUT/README.md is
rewritten with the tables after each part. OUT defaults to
benchmarks/results/<date>-gpu-<device>/.

Usage: python scripts/gpu_bench.py [--out DIR] [--parts cost throughput lr] [--sizes 1024 2048]
       [--scales 16 32] [--precisions fp32 fp16 bf16] [--tilings all unet] [--compile]
CPU smoke run: --device cpu --preset tiny --sizes 128 --precisions fp32 bf16 --tiny-size 128
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from jobs.bench.cost import run_cost, sample_image
from tadm import TADM
from tadm.hub import shipped_names
from tadm.precision import PRECISIONS

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("throughput", "lr", "cost")  # the short parts first
SHIPPED = ("tiny-x16", "tiny-x32")


def done_keys(path: Path, fields: tuple[str, ...]) -> set[tuple]:
    if not path.exists():
        return set()
    return {tuple(row[f] for f in fields) for row in map(json.loads, path.read_text().splitlines())}


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cost(args: argparse.Namespace, out: Path) -> None:
    fields = ("size", "scale", "precision", "tiling")
    done = done_keys(out / "cost.jsonl", fields)
    for size in args.sizes:
        for scale in args.scales:
            for precision in args.precisions:
                for tiling in args.tilings:
                    if (size, scale, precision, tiling) in done:
                        continue
                    try:
                        r = run_cost(
                            size, args.device, precision, args.threads, args.preset, scale, tiling
                        )
                    except Exception as e:  # one failed run (e.g. out of memory) is a row
                        r = dict(zip(fields, (size, scale, precision, tiling), strict=True))
                        r["error"] = f"{type(e).__name__}: {e}"[-500:]
                    append(out / "cost.jsonl", r)


def load(name: str, device: torch.device, precision: str, tiling: str, channels_last: bool):
    model = TADM.from_pretrained(name).to(device).to_precision(precision)
    model.tiling = tiling
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def timed(device: torch.device, fn, repeats: int) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def throughput(args: argparse.Namespace, out: Path) -> None:
    device = torch.device(args.device)
    fields = ("model", "precision", "tiling", "channels_last", "compiled")
    done = done_keys(out / "throughput.jsonl", fields)
    size = args.tiny_size
    hr = sample_image(size).to(device).expand(args.batch, -1, -1, -1).contiguous()
    megapixels = args.batch * size * size / 1e6
    variants = [(cl, False) for cl in (False, True)] + ([(False, True)] if args.compile else [])
    for name in SHIPPED:
        for precision in args.precisions:
            for tiling in args.tilings:
                for channels_last, compiled in variants:
                    key = (name, precision, tiling, channels_last, compiled)
                    if key in done:
                        continue
                    model = load(name, device, precision, tiling, channels_last)
                    with torch.inference_mode():
                        start = time.perf_counter()
                        if compiled:
                            model.unet = torch.compile(model.unet)
                        lr = model.downscale(hr)  # warm-up (and compilation)
                        model.upscale(lr, (size, size))
                        sync(device)
                        warm_up = time.perf_counter() - start
                        down = timed(device, lambda m=model: m.downscale(hr), args.repeats)
                        up = timed(device, lambda m=model, y=lr: m.upscale(y, (size, size)),
                                   args.repeats)  # fmt: skip
                    row = dict(zip(fields, key, strict=True))
                    row.update(
                        size=size,
                        batch=args.batch,
                        device=args.device,
                        warm_up_seconds=warm_up,
                        archive_mp_per_s=megapixels / down,
                        restore_mp_per_s=megapixels / up,
                    )
                    append(out / "throughput.jsonl", row)


def lr_changes(args: argparse.Namespace, out: Path) -> None:
    """Fraction of LR pixels (any channel) that differ from fp32's, and the largest step."""
    device = torch.device(args.device)
    done = done_keys(out / "lr.jsonl", ("model", "precision", "image"))
    images = sorted(p for p in (ROOT / "samples").rglob("*") if p.suffix in (".png", ".jpg"))
    for name in SHIPPED:
        reference = load(name, device, "fp32", "all", False)
        for precision in [p for p in args.precisions if p != "fp32"]:
            model = load(name, device, precision, "all", False)
            for path in images:
                rel = str(path.relative_to(ROOT / "samples"))
                if (name, precision, rel) in done:
                    continue
                pixels = np.asarray(Image.open(path).convert("RGB"))
                hr = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().to(device) / 255
                a, b = reference.downscale(hr), model.downscale(hr)
                step = (a.int() - b.int()).abs()
                append(
                    out / "lr.jsonl",
                    {
                        "model": name,
                        "precision": precision,
                        "image": rel,
                        "lr_pixels": a.shape[-1] * a.shape[-2],
                        "changed_fraction": float(step.amax(1).gt(0).float().mean()),
                        "max_step": int(step.max()),
                        "model_id_kept": model.model_id == reference.model_id,
                    },
                )


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in body] + [""]


def report(out: Path, command: str) -> None:
    lines = [f"# GPU inference benchmark ({out.name})", "", f"`{command}`", ""]
    costs = rows(out / "cost.jsonl")
    if costs:
        lines += ["## Cost, one image (jobs/bench/cost.py)", ""]
        body = []
        for r in costs:
            key = [str(r["size"]), f"x{r['scale']}", r["precision"], r["tiling"]]
            if "error" in r:
                body.append(key + ["failed: " + r["error"][-80:], "", "", "", ""])
                continue
            body.append(
                key
                + [
                    f"{r['total_seconds']:.3f}",
                    f"{r['downscale_seconds']:.3f} / {r['upscale_seconds']:.3f}",
                    f"{r['peak_memory'] / 2**30:.2f}",
                    f"{r['flops'] / 1e12:.2f}",
                    f"{100 * r['floor_fraction']:.1f}%",
                ]
            )
        head = ["size", "scale", "precision", "tiling", "s/image", "down / up s", "peak GiB"]
        lines += table(head + ["TFLOP", "of floor"], body)
        first = next((r for r in costs if "error" not in r), None)
        if first:
            lines += [f"Device: {first['device_name']}, preset {first['preset']}.", ""]
    speeds = rows(out / "throughput.jsonl")
    if speeds:
        lines += ["## Model-stage throughput of the shipped checkpoints (MP/s)", ""]
        body = [
            [r["model"], r["precision"], r["tiling"], str(r["channels_last"]), str(r["compiled"]),
             f"{r['archive_mp_per_s']:.2f}", f"{r['restore_mp_per_s']:.2f}",
             f"{r['warm_up_seconds']:.1f}"]
            for r in speeds
        ]  # fmt: skip
        head = ["model", "precision", "tiling", "channels-last", "compiled", "archive", "restore"]
        lines += table(head + ["warm-up s"], body)
        r = speeds[0]
        lines += [f"Batch of {r['batch']} images of {r['size']}x{r['size']}.", ""]
    changes = rows(out / "lr.jsonl")
    if changes:
        lines += ["## LR pixels changed against fp32 (samples/)", ""]
        body = [
            [r["model"], r["precision"], r["image"], f"{100 * r['changed_fraction']:.3f}%",
             str(r["max_step"]), str(r["model_id_kept"])]
            for r in changes
        ]  # fmt: skip
        lines += table(["model", "precision", "image", "changed", "max step", "same id"], body)
    (out / "README.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="results folder (default benchmarks/results/<date>-gpu-<dev>)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="sd21", help="of the cost part")
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--scales", nargs="+", type=int, default=[16, 32])
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--tilings", nargs="+", choices=("all", "unet"), default=["all", "unet"])
    p.add_argument("--tiny-size", type=int, default=1024, help="image side of throughput")
    p.add_argument("--batch", type=int, default=4, help="images per call in throughput")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per throughput figure")
    p.add_argument("--compile", action="store_true", help="throughput with a compiled UNet too")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    missing = [n for n in SHIPPED if n not in shipped_names()]
    if missing and {"throughput", "lr"} & set(args.parts):
        raise SystemExit(f"shipped checkpoints missing from this tree: {missing}")
    if args.out:
        out = Path(args.out)
    else:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        out = ROOT / "benchmarks/results" / f"{datetime.date.today()}-gpu-{slug}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/gpu_bench.py " + " ".join(
        f"--{k.replace('_', '-')}"
        + ("" if v is True else f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
        for k, v in vars(args).items()
        if v not in (None, False)
    )
    torch.set_num_threads(args.threads)
    for part in args.parts:
        {"cost": cost, "throughput": throughput, "lr": lr_changes}[part](args, out)
        report(out, command)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
