"""The fixity check of `tadm inspect --check`: every file an archive's manifest records (the LR
of each archived image, the copy of each kept source, and what an error row records of an
earlier run), read back whole and compared with the size and SHA-256 the manifest holds. What
a team runs before it deletes its originals, and now and then after, against bit rot."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.buckets import Buckets
from pipeline.format import DONE, KEPT_DIR, LR_DIR, kept_key, lr_key
from pipeline.manifest import Merged
from pipeline.rows import error_text, io_failure
from pipeline.sources import walk
from pipeline.storage import COPY_CHUNK, TEMP_PATH, Location, NotAsRecorded, open_file
from pipeline.summary import plural

logger = logging.getLogger("tadm")

CHECK_THREADS = 16  # files read at once: object storage answers each read after a round trip
SLICE_ROWS = 10_000  # manifest rows whose files are checked, then forgotten, at a time
PROGRESS_SECONDS = 10.0  # between two progress lines


@dataclass(frozen=True)
class Recorded:
    """A file the manifest records: its key under the archive root, size and SHA-256 (None
    where the manifest has none)."""

    rel_path: str
    key: str
    size: int | None
    sha256: str | None
    failed: bool = False  # an error row's file, of an earlier run


@dataclass
class Fixity:
    """What a check found: how many files and bytes it read, and each file not as recorded
    (rel_path, key, what is wrong)."""

    files: int = 0
    bytes: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    size_only: int = 0  # files compared by size alone: their rows record no SHA-256
    unrecorded: int = 0  # of the problems, files under lr/ and kept/ that no row records

    def lines(self) -> list[str]:
        found = "all as recorded" if not self.problems else plural(len(self.problems), "problem")
        if self.size_only:
            found += f" ({self.size_only:,} by size alone: their rows record no SHA-256)"
        if self.unrecorded:
            found += f" ({self.unrecorded:,} of them files no row records)"
        lines = [f"check: {plural(self.files, 'file')}, {self.bytes:,} bytes read: {found}"]
        return lines + [f"  {p['file']}: {p['problem']}" for p in self.problems]


def check_archive(archive: Location, manifest: Merged, unfinished: bool = False) -> Fixity:
    """Read back every file the merged manifest records under `archive` (recorded_files), a
    bucket of its rows at a time, CHECK_THREADS files at once, logging progress on long
    checks; and name the files under lr/ and kept/ no row records, as those of a job that has
    not finished when its lease is still there (`unfinished`), else as a manifest part's lost.
    The manifest is read twice: for the names it records, then for the files to read back.
    Problems are in rel_path order, the files no row records last."""
    fs = archive.filesystem()
    fixity = Fixity()
    total = 0
    with Buckets(NAMES) as lr_names, Buckets(NAMES) as kept_names:
        for table in manifest:
            lr, kept = recorded(table)
            total += pc.sum(pc.or_(lr, kept)).as_py() or 0
            lr_names.add(names(table, lr, ".png"))
            kept_names.add(names(table, kept, ""))
        lost = [*unrecorded(archive, LR_DIR, ".png", lr_names)]
        lost += unrecorded(archive, KEPT_DIR, "", kept_names)
    last = time.monotonic()
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for table in manifest:
            for start in range(0, len(table), SLICE_ROWS):
                files = list(recorded_files(table.slice(start, SLICE_ROWS)))
                for file, (size, problem) in zip(
                    files, pool.map(lambda f: check_file(fs, archive, f), files), strict=True
                ):
                    fixity.files += 1
                    fixity.bytes += size
                    fixity.size_only += file.sha256 is None
                    if problem and not problem.startswith("not read"):
                        problem = f"{problem}: {remedy(file, problem)}"
                    if problem:
                        fixity.problems.append(
                            {"rel_path": file.rel_path, "file": file.key, "problem": problem}
                        )
                if time.monotonic() - last > PROGRESS_SECONDS:
                    last = time.monotonic()
                    logger.info(
                        "inspect: checked %d of %d files (%s bytes), %s",
                        fixity.files,
                        total,
                        f"{fixity.bytes:,}",
                        plural(len(fixity.problems), "problem"),
                    )
    fixity.problems.sort(key=lambda p: (p["rel_path"], p["file"]))
    problem = UNRECORDED_BY_A_JOB if unfinished else UNRECORDED
    for rel_path, key in sorted(lost):
        fixity.problems.append({"rel_path": rel_path, "file": key, "problem": problem})
        fixity.unrecorded += 1
    return fixity


NAMES = pa.schema([("rel_path", pa.string())])  # files' keys under lr/ or kept/
UNRECORDED = (
    "no manifest row records it (a manifest part lost?), so a restore does not give it back: "
    "archive its source again while SRC holds it"
)
UNRECORDED_BY_A_JOB = (
    "no manifest row records it yet: the job the lease names wrote it after its last rows; "
    "run that job again (or let it finish)"
)


# What to do about a recorded file not as recorded, by folder and whether it is missing. The
# archive's skip rule redoes an image whose LR or kept copy is missing or of another size, not
# one of the same size with other bytes: that file is removed first.
AGAIN = "`tadm archive SRC ARCHIVE` (its options as before) {} while SRC holds the source"
LR_AGAIN, KEPT_AGAIN = AGAIN.format("writes it again"), AGAIN.format("copies it again")
FROM_ARCHIVE, FROM_SOURCE = (
    "put it back from a copy of the archive",
    "put it back from a copy of the source",
)
REMEDIES = {
    (LR_DIR, True): f"{LR_AGAIN}; or {FROM_ARCHIVE}",
    (LR_DIR, False): f"remove it, and {LR_AGAIN}; or {FROM_ARCHIVE}",
    (KEPT_DIR, True): f"{FROM_SOURCE}; or {KEPT_AGAIN}",
    (KEPT_DIR, False): f"{FROM_SOURCE}; or remove it, and {KEPT_AGAIN}",
}


def remedy(file: Recorded, problem: str) -> str:
    """What to do about `file`, which check_file found not as recorded (`problem`)."""
    if problem.startswith("cannot be read"):
        return "run the check again once the storage reads it"
    if file.failed:  # an earlier run's file, which a failed image's re-run leaves as it is
        return FROM_ARCHIVE
    return REMEDIES[file.key.split("/", 1)[0], problem == "missing"]


def names(table: pa.Table, rows: pa.Array, suffix: str) -> pa.Table:
    """The names under lr/ (`suffix` ".png") or kept/ of the files `rows` of `table` record."""
    return pa.table(
        {"rel_path": pc.binary_join_element_wise(table["rel_path"].filter(rows), suffix, "")}
    )


def unrecorded(
    archive: Location, tree: str, suffix: str, recorded_names: Buckets
) -> Iterator[tuple[str, str]]:
    """(rel_path, key) of each file under the archive's `tree` (lr/ or kept/) whose name is
    not one of `recorded_names`, but the temporary files of writes. The listing and the names
    are compared bucket by bucket (pipeline/buckets.py): each name is hashed once, however
    many pages the listing has."""
    with Buckets(NAMES) as listed:
        for listing in walk(archive.child(tree)):
            found = listing["rel_path"]
            written = pc.invert(pc.match_substring_regex(found, TEMP_PATH))
            listed.add(pa.table({"rel_path": found.filter(written)}))
        n = max(recorded_names.n, listed.n)
        for k in range(n):
            found = listed.bucket(k, n)["rel_path"]
            known = recorded_names.bucket(k, n)["rel_path"].combine_chunks()
            for name in found.filter(pc.invert(pc.is_in(found, value_set=known))).to_pylist():
                yield name.removesuffix(suffix) if suffix else name, f"{tree}/{name}"


def recorded(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Which rows of a merged archive manifest record an LR file (an archived image, or an
    error row's LR of an earlier version) and which a kept copy (a kept source, or an error
    row's kept copy of an earlier run). An archived image's row written before manifests held
    lr_sha256 records its LR by size."""
    kept = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    done = pc.is_in(table["status"], pa.array(DONE))
    archived = pc.and_(done, pc.is_valid(table["lr_bytes"]))
    lr = pc.and_(pc.invert(kept), pc.or_(pc.is_valid(table["lr_sha256"]), archived))
    return lr, kept


def recorded_files(table: pa.Table) -> Iterator[Recorded]:
    """The files rows of a merged archive manifest record: an LR under lr/ (its lr_bytes and
    lr_sha256), a kept copy under kept/ (the source's size and SHA-256; an error row's copy,
    maybe of an earlier version, its SHA-256 alone)."""
    lr, kept = recorded(table)
    columns = ["rel_path", "status", "lr_bytes", "lr_sha256", "source_bytes", "source_sha256"]
    rows = table.select(columns)
    for row, is_lr, is_kept in zip(rows.to_pylist(), lr.to_pylist(), kept.to_pylist(), strict=True):
        rel_path = row["rel_path"] or ""
        failed = row["status"] == "error"
        if is_lr:
            key = lr_key(rel_path)
            yield Recorded(rel_path, key, row["lr_bytes"], row["lr_sha256"], failed)
        elif is_kept:
            size = None if failed else row["source_bytes"]
            yield Recorded(rel_path, kept_key(rel_path), size, row["source_sha256"], failed)


def check_file(
    fs: fsspec.AbstractFileSystem, archive: Location, file: Recorded
) -> tuple[int, str | None]:
    """Read `file` whole: the bytes read, and what is wrong with it, None when it has the
    recorded size and SHA-256."""
    try:
        path = archive.join(file.key)  # a rel_path is data: never read outside the archive
    except ValueError as e:
        return 0, f"not read: {e}"
    digest, size = hashlib.sha256(), 0
    try:
        with open_file(fs, path) as f:
            while chunk := f.read(COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return 0, "missing"
    except NotAsRecorded as e:  # a folder, a FIFO...
        return 0, str(e)
    except Exception as e:
        if not io_failure(e):
            raise
        return size, f"cannot be read: {error_text(e)}"
    if file.size is not None and size != file.size:
        return size, f"{size:,} bytes, not the {file.size:,} recorded"
    if file.sha256 is not None and digest.hexdigest() != file.sha256:
        return size, "not the bytes recorded (the same size, another SHA-256)"
    return size, None
