"""tadm inspect ARCHIVE: counts by status, bytes, bpp, compression ratio and psnr, and how many
images were archived with something not carried (alpha, 16-bit, metadata...); or, with
--errors, the images that failed and why, with --kept, the sources kept as they are and why,
with --conversions, those archived with such a loss and what their conversion says. With
--check, every file the manifest records is read back and compared with its recorded size and
SHA-256 (exit 1 if one differs); with --source SRC, every file under SRC with the manifest
(exit 1 if one is not archived as it is now). Both are what to run before deleting SRC. A
restore's DST, whose manifest is a restore's, gives its counts by status, or --errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter

import pyarrow.compute as pc

from jobs.common import Parser, add_json_option, add_storage_options, run_job
from pipeline.coverage import COVERAGE_COLUMNS, check_source
from pipeline.fixity import check_archive
from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR, RESTORE_SCHEMA
from pipeline.lease import unfinished
from pipeline.manifest import OtherJob, merged, no_manifest
from pipeline.storage import Location
from pipeline.summary import SUMMARY_COLUMNS, Totals, conversions, errors, kept

PROG = "tadm inspect"


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    listing = p.add_mutually_exclusive_group()
    listing.add_argument(
        "--errors", action="store_true", help="list the images that failed: rel_path: error"
    )
    listing.add_argument(
        "--kept",
        action="store_true",
        help="list the sources kept as they are (below a quality floor, holding what an LR "
        "cannot, failed with --keep-failed): rel_path: kept_reason",
    )
    listing.add_argument(
        "--conversions",
        action="store_true",
        help="list the images archived with something not carried (alpha dropped, 16-bit to "
        "8-bit, metadata not carried...): rel_path: conversion",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="read back every LR and kept file the manifest records and compare its size and "
        "SHA-256 with the manifest's (a fixity check: run it before deleting the originals); "
        "exit 1 if one is missing or differs",
    )
    p.add_argument(
        "--source",
        metavar="SRC",
        help="list SRC, the folder the archive was made from, and check that the manifest "
        "holds every file under it, hidden ones too, as it is now (archived or kept from a "
        "file of the same size, and ETag or modification time); exit 1 naming each file it "
        "does not (not archived, hidden, failed, changed since): run it with --check before "
        "deleting SRC",
    )
    p.add_argument(
        "--sha256",
        action="store_true",
        help="with --source, also read every file under SRC the archive holds and compare its "
        "SHA-256 with the manifest's: a file rewritten in place at the same size and "
        "modification time (exiftool -P) is found changed",
    )
    add_json_option(p)
    add_storage_options(p)
    return p


# The lists --errors, --kept and --conversions print: the rows of each bucket, the field
# printed after each rel_path, and what is printed for none
LISTINGS = {
    "errors": (errors, "error", "no errors"),
    "kept": (kept, "kept_reason", "no source kept as it is"),
    "conversions": (conversions, "conversion", "no image archived with something not carried"),
}


def job(args: argparse.Namespace) -> int:
    archive = Location.parse(args.archive, args.storage_options)
    try:  # no right to read it (wrong credentials), or I/O
        if args.sha256 and not args.source:
            raise ValueError("--sha256 compares the files under --source SRC: give --source")
        coverage_columns = COVERAGE_COLUMNS + ["source_sha256"] * args.sha256
        columns = SUMMARY_COLUMNS + (coverage_columns if args.source else [])
        columns += ["kept_reason", "error"] if args.kept else []
        columns = list(dict.fromkeys(columns))
        manifest = merged(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA, columns)
        missing = manifest is None and not archive.filesystem().exists(archive.root)
    except OtherJob:  # a restore's DST
        return inspect_restore(args, archive)
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if missing:
        raise ValueError(f"ARCHIVE {archive.uri!r} does not exist")
    if manifest is None:
        raise ValueError(no_manifest(archive))
    lease = unfinished(archive)
    with manifest:  # a bucket of its rows at a time: archives of millions of images
        totals, listed = Totals(), []
        listing = next((name for name in LISTINGS if getattr(args, name)), None)
        for table in manifest:
            totals.add(table)
            listed += LISTINGS[listing][0](table) if listing else []
        listed.sort(key=lambda row: (not row["rel_path"], row["rel_path"]))  # a null's last
        fixity = check_archive(archive, manifest, lease is not None) if args.check else None
        coverage = None
        if args.source:
            src = Location.parse(args.source, args.storage_options)
            coverage = check_source(src, archive, manifest, sha256=args.sha256)
    summary = totals.summary()
    found = [c for c in (fixity, coverage) if c is not None]
    status = 1 if any(c.problems for c in found) else 0
    if args.json:
        out = {"archive": archive.uri} | dataclasses.asdict(summary) | {"lease": lease}
        if listing:
            out[listing] = listed
        if fixity is not None:
            out["check"] = dataclasses.asdict(fixity)
        if coverage is not None:
            out["source"] = dataclasses.asdict(coverage)
        print(json.dumps(out))
        return status
    if listing:
        _, column, none = LISTINGS[listing]
        lines = (f"{printable(row['rel_path'])}: {printable(row[column])}" for row in listed)
        print("\n".join(lines) or none)
    else:  # a manifest is data: its model ids and statuses may hold control characters
        print(printable(f"archive: {archive.uri}"))
        print("\n".join(printable(line) for line in summary.lines()))
    for check in found:
        print("\n".join(printable(line) for line in check.lines()))
    if lease:
        print(printable(lease))
    return status


def inspect_restore(args: argparse.Namespace, dst: Location) -> int:
    """A restore's DST: its counts by status, or with --errors the images that failed and
    why, from its manifest. The archive's figures and checks are the archive's to give."""
    archive_only = [f"--{name}" for name in ("kept", "conversions", "check") if getattr(args, name)]
    if args.source:
        archive_only.append("--source")
    if archive_only:
        raise ValueError(
            f"{dst.uri} is a restore's output (`tadm restore` wrote its manifest), not an "
            f"archive: for {', '.join(archive_only)}, give the archive's folder (a restore's "
            "output gives its counts and --errors)"
        )
    try:
        # output_uri: what makes the columns read a restore's (check_job)
        columns = ["status", "error", "output_uri"]
        manifest = merged(dst.child(MANIFEST_DIR), RESTORE_SCHEMA, columns)
    except OSError as e:
        raise ValueError(f"DST {dst.uri!r} cannot be read: {e}") from None
    if manifest is None:  # its parts went between the two reads
        raise ValueError(no_manifest(dst))
    with manifest:
        by_status: Counter[str] = Counter()
        listed = []
        for table in manifest:
            for status in pc.value_counts(table["status"]).to_pylist():
                by_status[str(status["values"])] += status["counts"]
            listed += errors(table) if args.errors else []
    listed.sort(key=lambda row: (not row["rel_path"], row["rel_path"]))
    counts = dict(sorted(by_status.items()))
    if args.json:
        out = {"restore": dst.uri, "counts": counts}
        print(json.dumps(out | ({"errors": listed} if args.errors else {})))
    elif args.errors:
        lines = (f"{printable(row['rel_path'])}: {printable(row['error'])}" for row in listed)
        print("\n".join(lines) or "no errors")
    else:
        described = ", ".join(f"{status} {n}" for status, n in counts.items())
        print(printable(f"restore: {dst.uri}"))
        print(printable(f"images: {sum(counts.values())} ({described})"))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)


def printable(text: str) -> str:
    """`text` with control characters escaped (a name with a newline stays one line)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
