"""tadm restore ARCHIVE DST: restore archived images (or one region of each) at full size."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from jobs.common import (
    RESUMABLE,
    Parser,
    add_job_options,
    add_json_option,
    run_job,
    run_plan,
)
from pipeline.format import OUTPUT_FORMATS, Region
from pipeline.restore.config import RestoreConfig

if TYPE_CHECKING:
    from pipeline.job import Plan

PROG = "tadm restore"


def region(text: str) -> Region:
    """--region X,Y,W,H: argparse's message for a bad one is Region's."""
    try:
        return Region.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> Parser:
    """The arguments: --json, and RestoreConfig's fields."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    p.add_argument("dst", metavar="DST", help="where to write: path, file://... or s3://...")
    p.add_argument("--region", type=region, help="X,Y,W,H: restore only this HR window")
    p.add_argument(
        "--only",
        metavar="GLOB",
        help="restore rel_paths matching GLOB ('*' spans '/'; '[1]' is a set of characters: "
        "write '[[]' for a '[')",
    )
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument(
        "--format",
        dest="image_format",
        choices=OUTPUT_FORMATS,
        default="png",
        help="output format (default png)",
    )
    add_json_option(p)
    p.add_argument(
        "--to-srgb",
        action="store_true",
        help="convert images to plain sRGB through their ICC profile, or else a PNG's gAMA "
        "and cHRM (default: keep what describes their colours)",
    )
    add_job_options(p, batch_size=RestoreConfig.batch_size)
    return p


def job(args: argparse.Namespace) -> int:
    options = vars(args)
    as_json = options.pop("json")
    config = RestoreConfig(**options)

    def prepare() -> Plan:
        # torch and Ray load here: seconds, in which a signal may come (run_plan handles it)
        from pipeline.restore.plan import prepare_restore

        return prepare_restore(config)

    return run_plan(prepare, as_json, "restore", config.dst, config.storage_options)


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job, interrupted=RESUMABLE)
