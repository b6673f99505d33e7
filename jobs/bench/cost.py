"""Cost of the paper's configuration (Table 3): one image through a preset with random weights
(the same FLOPs as trained ones), seconds and peak memory per stage.

Runs in a fresh process (`python -m jobs.bench.cost ...`) so the figures are the model's
alone. The image goes through the model's own inference path, `downscale` then `upscale`, in the
given precision and tiling (as archive and restore run it); each stage's calls are timed and
their peak memory taken:

- VAE encode (E), DFRM down (G_e and F), DFRM up (F^-1 and G_d),
- UNet + TPM (TPM, one UNet call on a batch of tiles, hybrid scheduler: Sec. 3.3),
  VAE decode (D).

Memory on CPU is the peak RSS of the process during the stage (weights included); on CUDA,
torch's peak allocated memory during the stage (weights included). One untimed pass comes first
(kernel selection, allocator warm-up); it counts the FLOPs of a round trip. The compute floor is
those FLOPs at the rate of a large matrix product in the same dtype on the same device, and
`floor_fraction` the floor over the measured seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from jobs.bench.rss import peak_rss, reset_peak, run_probe
from tadm import TADM
from tadm.precision import PRECISIONS

TIMED_METHODS = {  # stage label -> (object path on the model, the method timed as that stage)
    "VAE encode": ("", "encode_latent"),
    "DFRM down": ("", "dfrm_downscale"),
    "DFRM up": ("", "dfrm_upscale"),
    "UNet + TPM": ("", "enhance"),
    "VAE decode": ("", "decode_latent"),
}
PAPER = {"device": "RTX 3090 (paper, Table 3)", "seconds": 0.711, "memory_gb": 2.598}


class Meter:
    """Seconds and peak memory of the calls of each stage, on `device`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.items: dict[str, int] = {}  # batch elements through the stage (tiles x images)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak()

    def peak_now(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return peak_rss()

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            self.reset()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
            self.peak[label] = max(self.peak.get(label, 0), self.peak_now())
            self.calls[label] = self.calls.get(label, 0) + 1
            self.items[label] = self.items.get(label, 0) + args[0].shape[0]
            return out

        return timed


def sample_image(size: int) -> torch.Tensor:
    """A smooth colour gradient with noise, (1, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, (x + y) / 2]) * 0.85
    img = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    return torch.from_numpy(img).float()[None]


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product in `dtype` on `device` (best of a few)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    meter = Meter(device)
    best = float("inf")
    for _ in range(4):
        meter.sync()
        start = time.perf_counter()
        a @ b
        meter.sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def measure(
    preset: str, size: int, device: str, precision: str, scale: int, tiling: str = "all"
) -> dict[str, Any]:
    """Build the preset, run one size x size image through it, and report each stage."""
    dev = torch.device(device)
    start = time.perf_counter()
    torch.manual_seed(0)
    with dev:  # random weights made where they run
        model = TADM.from_preset(preset, scale=scale).eval()
    model.to_precision(precision)
    model.tiling = tiling
    build_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    hr = sample_image(size).to(dev)
    with FlopCounterMode(display=False) as flop_counter:  # warm-up, untimed
        model.upscale(model.downscale(hr), size=(size, size))
    flops = flop_counter.get_total_flops()
    rate = matmul_rate(dev, PRECISIONS[precision])
    meter = Meter(dev)
    for label, (owner, name) in TIMED_METHODS.items():
        target = model.dfrm if owner == "dfrm" else model
        setattr(target, name, meter.wrap(label, getattr(target, name)))
    timings = {}
    for phase in ("downscale", "upscale"):
        meter.sync()
        t0 = time.perf_counter()
        if phase == "downscale":
            lr = model.downscale(hr)
        else:
            model.upscale(lr, size=(size, size))
        meter.sync()
        timings[phase] = time.perf_counter() - t0
    return {
        "preset": preset,
        "scale": scale,
        "size": size,
        "device": device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "precision": precision,
        "tiling": tiling,
        "max_latent_pixels": model.max_latent_pixels,
        "torch_threads": torch.get_num_threads(),
        "parameters": params,
        "build_seconds": build_seconds,
        "latent_tiles": meter.items.get("UNet + TPM", 0),
        "memory_kind": "torch peak allocated" if dev.type == "cuda" else "process peak RSS",
        "stages": [
            {
                "stage": label,
                "calls": meter.calls.get(label, 0),
                "seconds": meter.seconds.get(label, 0.0),
                "peak_memory": meter.peak.get(label, 0),
            }
            for label in TIMED_METHODS
        ],
        "downscale_seconds": timings["downscale"],
        "upscale_seconds": timings["upscale"],
        "total_seconds": timings["downscale"] + timings["upscale"],
        "peak_memory": max(meter.peak.values()),
        "flops": flops,
        "matmul_flops_per_s": rate,
        "floor_fraction": flops / rate / (timings["downscale"] + timings["upscale"]),
        "paper": PAPER,
    }


def run_cost(
    size: int,
    device: str,
    precision: str,
    threads: int,
    preset: str = "sd21",
    scale: int = 16,
    tiling: str = "all",
) -> dict[str, Any]:
    """`measure` in a fresh process."""
    args = [preset, str(size), device, precision, str(scale), str(threads), tiling]
    return run_probe("jobs.bench.cost", args)


def main() -> None:
    p = argparse.ArgumentParser(description="one image through a preset; stage costs as JSON")
    p.add_argument("preset")
    p.add_argument("size", type=int)
    p.add_argument("device")
    p.add_argument("precision")
    p.add_argument("scale", type=int)
    p.add_argument("threads", type=int)
    p.add_argument("tiling")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        result = measure(
            args.preset, args.size, args.device, args.precision, args.scale, args.tiling
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
