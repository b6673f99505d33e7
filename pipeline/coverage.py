"""The source check of `tadm inspect --source SRC`: whether every file under SRC is in the
archive as it is now, what a team checks before it deletes SRC. Each file listed (as archive
lists SRC, with --keep-failed's every file, hidden ones too) needs a row of the archive's
manifest that archived or kept it from the same file: the same size, and the same ETag (S3) or
else modification time, as the archive's skip rule compares. A file no row covers, a failed
one and one changed since are named. The archive's own files are read back by the fixity
check (inspect --check)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.buckets import Buckets
from pipeline.fixity import CHECK_THREADS, Recorded, check_file
from pipeline.format import DONE, KEPT
from pipeline.manifest import Merged
from pipeline.sources import HIDDEN, IMAGE_NAME, LISTING_SCHEMA, scan, unchanged
from pipeline.storage import Location
from pipeline.summary import plural

logger = logging.getLogger("tadm")

# What check_file's finding means for a source the manifest says is unchanged
HASH_PROBLEMS = {
    "not the bytes recorded (the same size, another SHA-256)": (
        "changed since it was archived (the same size and time, another SHA-256): touch it "
        "and archive SRC again"
    ),
    "missing": "gone while it was compared",
}
# The manifest columns the check compares, beside rel_path
COVERAGE_COLUMNS = ["status", "error", "source_bytes", "source_mtime", "source_etag"]
PROGRESS_SECONDS = 10.0  # between two progress lines of a long listing


@dataclass
class Coverage:
    """What the check found under SRC (`source`): how many files it listed, how many the
    archive holds as they are now, and each other file (rel_path, problem)."""

    source: str
    files: int = 0
    archived: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    hashed: int | None = None  # with --sha256: the files whose bytes were compared

    def lines(self) -> list[str]:
        found = "all archived as they are now"
        if self.problems:
            found = f"{self.archived:,} archived as they are now, {len(self.problems):,} not"
        if self.hashed is not None:
            found += f" ({self.hashed:,} compared by SHA-256)"
        lines = [f"source: {self.source}: {plural(self.files, 'file')}: {found}"]
        return lines + [f"  {p['rel_path']}: {p['problem']}" for p in self.problems]


def check_source(
    src: Location, archive: Location, manifest: Merged, sha256: bool = False
) -> Coverage:
    """List SRC (every file, hidden ones too; the archive left out where it lies inside) and
    compare each file with the merged manifest's row of its rel_path (COVERAGE_COLUMNS), a
    bucket of both at a time; with `sha256` (and the manifest's source_sha256), also read
    each file the archive holds and compare its SHA-256, CHECK_THREADS at once."""
    try:
        pages, prefix = scan(src, exclude=archive, every_file=True)
        listing = Buckets(LISTING_SCHEMA).extend(logged(pages, src))
    except OSError as e:
        raise ValueError(f"--source {src.uri!r} cannot be listed: {e}") from None
    if not listing.rows:
        raise ValueError(
            f"--source {src.uri!r} holds no files: give the folder ARCHIVE was made from"
        )
    coverage = Coverage(src.uri, hashed=0 if sha256 else None)
    folder = Location(src.protocol, prefix.rstrip("/"), src.options)  # of the rel_paths
    with listing, ThreadPoolExecutor(CHECK_THREADS) as pool:
        n = max(listing.n, manifest.n)
        for k in range(n):
            files, part = listing.bucket(k, n), manifest.bucket(k, n)
            rows = part.take(pc.index_in(files["rel_path"], value_set=part["rel_path"]))
            problems = why_not(files, rows.select(COVERAGE_COLUMNS))
            if sha256:
                problems, hashed = hash_problems(pool, folder, files, rows, problems)
                coverage.hashed += hashed
            coverage.files += len(files)
            coverage.archived += pc.sum(pc.is_null(problems)).as_py() or 0
            flagged = files["rel_path"].filter(pc.is_valid(problems))
            for rel_path, problem in zip(
                flagged.to_pylist(), problems.drop_null().to_pylist(), strict=True
            ):
                coverage.problems.append({"rel_path": rel_path, "problem": problem})
    coverage.problems.sort(key=lambda p: p["rel_path"])
    return coverage


def hash_problems(
    pool: ThreadPoolExecutor, folder: Location, files: pa.Table, rows: pa.Table, problems: pa.Array
) -> tuple[pa.Array, int]:
    """`problems` (why_not's) with each file held as it is read from `folder` and compared
    with its row's source_sha256 (a file rewritten in place at the same size and time, as
    `exiftool -P` leaves it, is changed); and how many files were compared."""
    held = pc.and_(pc.is_null(problems), pc.is_valid(rows["source_sha256"]))
    fs = folder.filesystem()
    recorded = [
        Recorded(rel_path, rel_path, None, sha256)
        for rel_path, sha256 in zip(
            files["rel_path"].filter(held).to_pylist(),
            rows["source_sha256"].filter(held).to_pylist(),
            strict=True,
        )
    ]
    found = iter(pool.map(lambda file: check_file(fs, folder, file)[1], recorded))
    out = problems.to_pylist()
    for i in pc.indices_nonzero(held).to_pylist():
        problem = next(found)
        if problem is not None:
            out[i] = HASH_PROBLEMS.get(problem, f"cannot be compared: {problem}")
    return pa.array(out, pa.string()), len(recorded)


def why_not(files: pa.Table, rows: pa.Table) -> pa.Array:
    """For each listed file (LISTING_SCHEMA) and the manifest row of its rel_path (null where
    none), why the archive does not hold it as it is now; null where it does."""
    image = pc.match_substring_regex(files["rel_path"], IMAGE_NAME, ignore_case=True)
    no_row = pc.if_else(
        pc.match_substring_regex(files["rel_path"], HIDDEN),
        "not archived: hidden file (archive with --keep-failed keeps it)",
        pc.if_else(
            image,
            "not archived: no manifest row (archive SRC again)",
            "not archived: not an image (archive with --keep-failed keeps it)",
        ),
    )
    failed = pc.binary_join_element_wise("failed: ", pc.fill_null(rows["error"], "no reason"), "")
    held = pc.is_in(rows["status"], pa.array([*DONE, KEPT]))
    changed = pc.invert(unchanged(files, rows))  # as the archive's skip rule has it
    listing_error = pc.binary_join_element_wise("not archived: ", files["error"], "")
    return pc.case_when(
        pc.make_struct(
            pc.is_valid(files["error"]),
            pc.is_null(rows["status"]),
            pc.invert(pc.fill_null(held, False)),
            pc.fill_null(changed, True),
            field_names=["listing", "no_row", "failed", "changed"],
        ),
        listing_error,
        no_row,
        failed,
        pa.scalar("changed since it was archived: archive SRC again"),
    )


def logged(pages: Iterator[pa.Table], src: Location) -> Iterator[pa.Table]:
    """`pages` of a listing, logging how many files it has listed every PROGRESS_SECONDS."""
    listed, last = 0, time.monotonic()
    for page in pages:
        listed += len(page)
        if time.monotonic() - last > PROGRESS_SECONDS:
            last = time.monotonic()
            logger.info("inspect: listed %s under %s", plural(listed, "file"), src.uri)
        yield page
