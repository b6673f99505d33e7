"""tadm restore ARCHIVE DST: restore archived images (or one region of each) at full size."""

from __future__ import annotations

import argparse

from jobs.common import Parser, add_storage_options, ray_session, run_job
from pipeline.restore.plan import RestoreConfig, prepare_restore, run_restore
from pipeline.restore.read import Region
from pipeline.restore.write import OUTPUT_FORMATS

PROG = "tadm restore"


def region(text: str) -> Region:
    """--region X,Y,W,H: four integers, W and H positive."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be X,Y,W,H (four integers), got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"needs X, Y >= 0 and W, H >= 1, got {text!r}")
    return x, y, w, h


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    p.add_argument("dst", metavar="DST", help="where to write: path, file://... or s3://...")
    p.add_argument("--region", type=region, help="X,Y,W,H: restore only this HR window")
    p.add_argument("--only", metavar="GLOB", help="restore rel_paths matching GLOB ('*' spans '/')")
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument(
        "--format", choices=OUTPUT_FORMATS, default="png", help="output format (default png)"
    )
    p.add_argument(
        "--workers", type=int, help="model actors (default: 1 per GPU, or 1 per core up to 4)"
    )
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per actor (default: 1, or 0)")
    p.add_argument("--batch-size", type=int, default=4, help="images per batch")
    p.add_argument("--overwrite", action="store_true", help="redo images already restored")
    add_storage_options(p)
    return p


def job(args: argparse.Namespace) -> int:
    prepared = prepare_restore(
        RestoreConfig(
            archive=args.archive,
            dst=args.dst,
            region=args.region,
            only=args.only,
            model=args.model,
            image_format=args.format,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            storage_options=args.storage_options,
        )
    )
    with ray_session():
        return run_restore(prepared).exit_code


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
