"""tadm restore ARCHIVE DST: restore archived images (or one region of each) at full size."""

from __future__ import annotations

import argparse

from jobs.common import Parser, add_job_options, job_options, ray_session, run_job
from pipeline.format import OUTPUT_FORMATS, Region
from pipeline.job import run
from pipeline.restore.plan import RestoreConfig, prepare_restore

PROG = "tadm restore"


def region(text: str) -> Region:
    """--region X,Y,W,H: argparse's message for a bad one is Region's."""
    try:
        return Region.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    add_job_options(p, batch_size=RestoreConfig.batch_size)
    return p


def job(args: argparse.Namespace) -> int:
    config = RestoreConfig(
        archive=args.archive,
        dst=args.dst,
        region=args.region,
        only=args.only,
        model=args.model,
        image_format=args.format,
        **job_options(args),
    )
    prepared = prepare_restore(config)
    with ray_session():
        return run(prepared).exit_code


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
