"""tadm inspect ARCHIVE: counts by status, bytes, bpp, compression ratio and psnr."""

from __future__ import annotations

import argparse

from jobs.common import Parser, add_storage_options, run_job
from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR
from pipeline.manifest import read_manifest
from pipeline.storage import Location
from pipeline.summary import summarize

PROG = "tadm inspect"


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    add_storage_options(p)
    return p


def job(args: argparse.Namespace) -> int:
    archive = Location.parse(args.archive, args.storage_options)
    table = read_manifest(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA)
    if table is None:
        raise ValueError(f"ARCHIVE {archive.uri!r} has no manifest (no {MANIFEST_DIR}/part-*)")
    print(f"archive: {archive.uri}")
    print("\n".join(summarize(table).lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
