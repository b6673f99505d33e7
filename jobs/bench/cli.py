"""tadm bench --out DIR: rate-distortion against JPEG, WebP, AVIF and JPEG XL, throughput,
restore memory, the cost of the paper's configuration and the cost of planning 1M-10M images
(plan); results.json, results.md and plots.

--quick (CI's smoke run, minutes on a CPU): centre crops of at most 256 px, half the codec
sweep, small memory sizes, the cost at 256x256. Without it: whole images, 1, 4 and 16 MP and
5120x2880 for memory, and 1024x1024 for the cost.
"""

from __future__ import annotations

import argparse
import sys

from jobs.bench.images import SAMPLES
from jobs.common import Parser, add_precision_option, require_extra, run_job
from tadm.config import TILINGS

PROG = "tadm bench"
SECTIONS = ("rd", "throughput", "memory", "cost", "plan")


def sizes(text: str) -> list[tuple[int, int]]:
    """--memory-sizes: WxH[,WxH...]."""
    out = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be WxH[,WxH...], got {text!r}") from None
        if w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"sizes must be positive, got {part!r}")
        out.append((w, h))
    return out


def counts(text: str) -> list[int]:
    """--plan-sizes: N[,N...], each at least 1000."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N[,N...], got {text!r}") from None
    if any(v < 1000 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be at least 1000, got {text!r}")
    return values


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for results.json, results.md and plots")
    p.add_argument("--quick", action="store_true", help="the smoke run: small images and sizes")
    p.add_argument(
        "--images", default=str(SAMPLES), help="folder or URI of test images (default: samples/)"
    )
    p.add_argument(
        "--model",
        nargs="+",
        help="TADM models (shipped name, folder or URI), one R-D point each "
        "(default: the shipped tiny-x16 and tiny-x32)",
    )
    p.add_argument("--lpips", metavar="PATH", help="VGG16 LPIPS weights, to report LPIPS")
    p.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run"
    )
    p.add_argument("--memory-sizes", type=sizes, help="restore sizes WxH,... (default by mode)")
    p.add_argument(
        "--cost-size", type=int, help="image side for the cost (default 1024, quick 256)"
    )
    p.add_argument(
        "--plan-sizes",
        type=counts,
        help="inventory rows of the plan section, N[,N...] (default 1000000,10000000; quick "
        "100000)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the cost")
    add_precision_option(p, "the cost's model")
    p.add_argument("--tiling", choices=TILINGS, default="all", help="of the cost (TADM.tiling)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads of the in-process parts (default: torch's, one per core)",
    )
    return p


def job(args: argparse.Namespace, command: str) -> int:
    require_extra("bench")
    from jobs.bench.run import run

    return run(args, command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join([PROG, *argv])
    return run_job(PROG, parser(), argv, lambda args: job(args, command))
