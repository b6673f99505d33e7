"""PNG plots of a benchmark run: one R-D curve per metric, and the memory curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from jobs.bench.metrics import METRICS  # noqa: E402

MB = 1e6


def rd_plot(summary: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Codec sweeps as lines, TADM (PNG and lossless LR) and bicubic as points, mean over
    images; bpp on a log axis (TADM sits at the far left)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    codecs = sorted({r["method"] for r in summary if r["kind"] == "sweep"})
    for codec in codecs:
        pts = [r for r in summary if r["kind"] == "sweep" and r["method"] == codec]
        pts = [r for r in pts if r.get(metric) is not None]
        pts.sort(key=lambda r: r["bpp"])
        ax.plot([r["bpp"] for r in pts], [r[metric] for r in pts], "-o", ms=3, label=codec)
    for r in summary:
        if r.get(metric) is None or r["bpp"] is None:
            continue
        if r["kind"] == "tadm":
            ax.plot(r["bpp"], r[metric], "*", ms=14, label=f"{r['method']} (PNG)")
        elif r["kind"] == "tadm-lr":
            ax.plot(r["bpp"], r[metric], "x", ms=8, label=r["method"])
        elif r["kind"] == "bicubic":
            ax.plot(r["bpp"], r[metric], "s", ms=7, mfc="none", label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log)")
    higher, name = METRICS[metric]
    ax.set_ylabel(f"{name} ({'higher' if higher else 'lower'} is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_plot(memory: dict[str, Any], path: Path) -> None:
    """Peak RSS increase of restore against megapixels, beside one float32 HR image."""
    points = sorted(memory["points"], key=lambda p: p["megapixels"])
    mp = [p["megapixels"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mp, [p["increase"] / MB for p in points], "-o", label="restore: peak RSS increase")
    ax.plot(mp, [p["hr_float_buffer"] / MB for p in points], "--", label="one float32 HR image")
    if "fit" in memory:
        fit = memory["fit"]
        beyond = [p["beyond_buffers"] / MB for p in points]
        ax.plot(mp, beyond, "-s", ms=4, label=f"increase - {fit['bytes_per_pixel']:.0f} B x pixels")
        fixed = fit["fixed_bytes"] / MB
        ax.axhline(fixed, color="grey", lw=0.8, ls=":", label=f"fit: fixed part {fixed:.0f} MB")
    for p in points:
        ax.annotate(
            f"{p['width']}x{p['height']}", (p["megapixels"], p["increase"] / MB), fontsize=7
        )
    ax.set_xlabel("HR megapixels")
    ax.set_ylabel("MB")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Every plot the results have data for; their file names."""
    written = []
    if "rd" in results:
        for metric in results["metrics"]["reported"]:
            rd_plot(results["rd"]["summary"], metric, out / f"rd_{metric}.png")
            written.append(f"rd_{metric}.png")
    if "memory" in results:
        memory_plot(results["memory"], out / "memory.png")
        written.append("memory.png")
    return written
