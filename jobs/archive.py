"""tadm archive SRC DST: shrink every image under SRC into DST (LR PNGs + Parquet manifest)."""

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
from pipeline.archive.config import ArchiveConfig

if TYPE_CHECKING:
    from pipeline.job import Plan
from tadm.config import SCALES

PROG = "tadm archive"


def parser() -> Parser:
    """The arguments: --json, and ArchiveConfig's fields."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("src", metavar="SRC", help="folder of images: path, file://... or s3://...")
    p.add_argument("dst", metavar="DST", help="archive root: path, file://... or s3://...")
    p.add_argument("--scale", type=int, choices=SCALES, help="16 or 32 (default: the model's)")
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="restore each image from its LR: its psnr, ssim and timestep_mean in the manifest",
    )
    add_json_option(p)
    p.add_argument(
        "--min-psnr",
        type=float,
        metavar="DB",
        help="quality floor: an image whose round trip is below DB is kept as it is, not shrunk",
    )
    p.add_argument(
        "--min-ssim", type=float, metavar="S", help="quality floor on SSIM (0-1), as --min-psnr"
    )
    p.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep every file that cannot be archived (any file under SRC, hidden ones too) as "
        "it is",
    )
    p.add_argument(
        "--drop-thumbnails",
        action="store_true",
        help="leave the source's embedded thumbnails (EXIF's, Photoshop's, XMP's) out of its LR, "
        "which is a thumbnail itself; the rest of the metadata is carried as it is",
    )
    p.add_argument(
        "--inventory",
        metavar="URI",
        help="take SRC's files from an S3 Inventory report (its manifest.json) or a Parquet/CSV "
        "listing (key, size[, etag, last_modified]) instead of listing SRC",
    )
    add_job_options(p, batch_size=ArchiveConfig.batch_size)
    return p


def job(args: argparse.Namespace) -> int:
    options = vars(args)
    as_json = options.pop("json")
    config = ArchiveConfig(**options)

    def prepare() -> Plan:
        # torch and Ray load here: seconds, in which a signal may come (run_plan handles it)
        from pipeline.archive.plan import prepare_archive

        return prepare_archive(config)

    return run_plan(prepare, as_json, "archive", config.dst, config.storage_options)


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job, interrupted=RESUMABLE)
