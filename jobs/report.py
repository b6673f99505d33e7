"""tadm report ARCHIVE OUT_DIR: a static HTML report of an archive (open OUT_DIR/index.html)."""

from __future__ import annotations

import argparse
import logging

from jobs.common import Parser, add_storage_options, run_job, whole_number
from pipeline.report import CROP, LINK_ABOVE
from pipeline.summary import plural

PROG = "tadm report"
logger = logging.getLogger("tadm")


def parser() -> Parser:
    p = Parser(
        prog=PROG,
        description=__doc__,
        epilog=f"Thumbnails are copied into OUT_DIR/lr/, except for a local archive of more than "
        f"{LINK_ABOVE:,} images: then they link to the archive's own LR files.",
    )
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    p.add_argument("out_dir", metavar="OUT_DIR", help="local folder to write the report into")
    p.add_argument(
        "--worst",
        type=whole_number(0),
        default=50,
        metavar="N",
        help=f"restore a {CROP}x{CROP} crop of the N worst images (lowest PSNR first; default 50)",
    )
    p.add_argument(
        "--page-size",
        type=whole_number(0),
        default=100,
        metavar="N",
        help="images per page (default 100)",
    )
    p.add_argument(
        "--model",
        help="shipped name, checkpoint folder or URI that archived the images "
        "(default: tiny-xSCALE)",
    )
    add_storage_options(p)
    return p


def job(args: argparse.Namespace) -> int:
    from pipeline.report.build import build_report

    written = build_report(
        args.archive,
        args.out_dir,
        worst=args.worst,
        page_size=args.page_size,
        model=args.model,
        storage_options=args.storage_options,
    )
    pages, crops = plural(written.pages, "page"), plural(written.crops, "restored crop")
    logger.info("report: %s, thumbnails %s, %s", pages, written.thumbnails, crops)
    print(written.index)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
