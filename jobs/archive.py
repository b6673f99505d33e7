"""tadm archive SRC DST: shrink every image under SRC into DST (LR PNGs + Parquet manifest)."""

from __future__ import annotations

import argparse

from jobs.common import Parser, add_storage_options, ray_session, run_job
from pipeline.archive.plan import ArchiveConfig, prepare_archive, run_archive

PROG = "tadm archive"


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("src", metavar="SRC", help="folder of images: path, file://... or s3://...")
    p.add_argument("dst", metavar="DST", help="archive root: path, file://... or s3://...")
    p.add_argument("--scale", type=int, choices=(16, 32), help="16 or 32 (default: the model's)")
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument("--verify", action="store_true", help="restore each image: psnr, ssim")
    p.add_argument(
        "--workers", type=int, help="model actors (default: 1 per GPU, or 1 per core up to 4)"
    )
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per actor (default: 1, or 0)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch")
    p.add_argument("--overwrite", action="store_true", help="redo images already archived")
    add_storage_options(p)
    return p


def job(args: argparse.Namespace) -> int:
    prepared = prepare_archive(
        ArchiveConfig(
            src=args.src,
            dst=args.dst,
            scale=args.scale,
            model=args.model,
            verify=args.verify,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            storage_options=args.storage_options,
        )
    )
    with ray_session():
        return run_archive(prepared).exit_code


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
