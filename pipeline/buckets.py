"""Tables larger than one process should hold, cut into buckets by a hash of rel_path.

A listing of ten million images, or a manifest of as many rows, does not fit comfortably in
the driver. `Buckets` takes such a table piece by piece (listing pages, manifest parts): while
it is small it stays in memory, as one bucket; past `memory_rows` rows or MEMORY_BYTES every
row is spilled to local Parquet files, one per bucket, by a stable hash of the row's folded
rel_path (lower case, NFC). Rows of one rel_path, and of rel_paths that differ only in case
or Unicode normalisation, are always in the same bucket, so joins, "latest row per rel_path"
and collision checks are done one bucket at a time, in memory bounded by a bucket.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SPILL_BUCKETS = 64  # buckets once spilled: 10M rows -> ~160k rows a bucket
# Rows kept in memory before spilling, and their bytes: the rows of long paths (S3 keys of
# up to 1,024 bytes, in several columns of a manifest) take ten times those of short ones,
# and a plan's joins of a bucket take several times its bytes.
MEMORY_ROWS = 500_000
MEMORY_BYTES = 128 * 2**20
# Rows staged before they are cut into buckets and written, and their bytes.
STAGE_ROWS = 200_000
STAGE_BYTES = 64 * 2**20
HASH_SLICE = 65_536  # strings hashed at a time (bounds their offsets held as Python ints)
SPILL_PREFIX = "tadm-buckets-"  # the folders of spilled buckets, in the local temp folder
SPILL_LOCK = ".lock"  # a spill folder's lock file, held while it is in use
SPILL_GRACE_S = 60.0  # a spill folder this new may not hold its lock yet


def fold(rel_paths: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The key under which a case-insensitive, normalising store files a path: NFC, lower."""
    if pc.all(pc.string_is_ascii(rel_paths)).as_py() is not False:  # NFC changes no ASCII
        return pc.ascii_lower(rel_paths)
    return pc.utf8_lower(pc.utf8_normalize(rel_paths, form="NFC"))


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 values (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def string_hash(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string, the same in every process and run (null hashes as ""):
    the CRC-32 of its UTF-8 bytes beside its length, mixed. zlib reads each string's bytes
    where Arrow holds them: no array of a value per byte, which long paths would make large."""
    array = pa.array(strings) if not isinstance(strings, pa.ChunkedArray) else strings
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    array = pc.fill_null(array.cast(pa.large_string()), "")
    out = np.empty(len(array), dtype=np.uint64)
    data = memoryview(array.buffers()[2] or b"")
    for start in range(0, len(array), HASH_SLICE):
        part = array.slice(start, HASH_SLICE)
        offsets = np.frombuffer(part.buffers()[1], dtype=np.int64)
        offsets = offsets[part.offset : part.offset + len(part) + 1]
        bounds = offsets.tolist()
        crcs = np.fromiter(
            (zlib.crc32(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)),
            dtype=np.uint64,
            count=len(part),
        )
        lengths = np.diff(offsets).astype(np.uint64)
        out[start : start + len(part)] = mix(crcs | (lengths << np.uint64(32)))
    return out


def bucket_of(rel_paths: pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """The bucket (0..n-1) of each rel_path: by the hash of its folded form."""
    if n == 1:
        return np.zeros(len(rel_paths), dtype=np.int64)
    return (string_hash(fold(rel_paths)) % np.uint64(n)).astype(np.int64)


class Buckets:
    """Rows of `schema` (with a `rel_path` column) held by bucket: in memory as one bucket
    while small, else in SPILL_BUCKETS local Parquet files (removed by `close`)."""

    def __init__(self, schema: pa.Schema, memory_rows: int | None = None) -> None:
        self.schema = schema
        self.memory_rows = MEMORY_ROWS if memory_rows is None else memory_rows
        self.rows = 0
        self.tables: list[pa.Table] = []  # in memory, or staged before they are spilled
        self.staged = 0  # rows in `tables`
        self.staged_bytes = 0
        self.cut = 1  # the in-memory tables are the rows of bucket k of `cut` (1: all rows)
        self.folder: str | None = None
        self.lock: int | None = None  # of the folder, held while it is in use
        self.writers: list[pq.ParquetWriter] = []

    def __enter__(self) -> Buckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n(self) -> int:
        """1 in memory, SPILL_BUCKETS once spilled."""
        return 1 if self.folder is None else SPILL_BUCKETS

    def add(self, table: pa.Table) -> None:
        """Append rows (their columns in `schema`'s order and types), before any `bucket`."""
        if not len(table):
            return
        table = table.select(self.schema.names).cast(self.schema)
        self.rows += len(table)
        self.tables.append(table)
        self.staged += len(table)
        self.staged_bytes += table.nbytes
        if self.folder is None and (
            self.rows > self.memory_rows or self.staged_bytes > MEMORY_BYTES
        ):
            self.folder, self.lock = spill_folder()
            self.writers = [
                pq.ParquetWriter(os.path.join(self.folder, f"{k}.parquet"), self.schema)
                for k in range(SPILL_BUCKETS)
            ]
        if self.folder is not None and (
            self.staged >= STAGE_ROWS or self.staged_bytes >= STAGE_BYTES
        ):
            self.spill()

    def extend(self, tables: Iterable[pa.Table]) -> Buckets:
        for table in tables:
            self.add(table)
        return self

    def spill(self) -> None:
        """Cut the staged rows into buckets and append each to its file."""
        if not self.tables:
            return
        table = pa.concat_tables(self.tables)
        self.tables, self.staged, self.staged_bytes = [], 0, 0
        for k, part in enumerate(split(table, SPILL_BUCKETS)):
            if len(part):
                self.writers[k].write_table(part)

    def bucket(self, k: int, n: int) -> pa.Table:
        """Bucket k of n (n is this object's n, or SPILL_BUCKETS when another set of buckets
        that must line up with this one has spilled)."""
        if self.folder is None:
            if n == 1 and self.cut == 1:
                return concat(self.tables, self.schema)
            if self.cut != n:  # cut once, then handed out bucket by bucket
                self.tables, self.cut = list(split(concat(self.tables, self.schema), n)), n
            return self.tables[k]
        self.spill()
        for writer in self.writers:
            writer.close()
        self.writers = []
        return pq.read_table(os.path.join(self.folder, f"{k}.parquet"), schema=self.schema)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers, self.tables = [], []
        if self.folder is not None and self.lock is not None:
            remove_spill(self.folder, self.lock)
        self.lock = None


def spill_folder() -> tuple[str, int]:
    """A new local folder for spilled buckets, and the descriptor of its lock file, which the
    process holds (flock) while it uses the folder; folders whose lock no process holds are
    removed first: a job killed (kill -9) never closes its buckets."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if name.startswith(SPILL_PREFIX):
            remove_abandoned(os.path.join(root, name))
    folder = tempfile.mkdtemp(prefix=SPILL_PREFIX)
    lock = os.open(os.path.join(folder, SPILL_LOCK), os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return folder, lock


def remove_spill(folder: str, lock: int) -> None:
    """Remove a spill folder of this process's (spill_folder), then let go of its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    os.close(lock)


def remove_abandoned(folder: str) -> None:
    """Remove a spill folder no process uses: its lock is free (the process that held it is
    gone, whatever its host or process namespace), and it is over SPILL_GRACE_S old (one
    that new may not be locked yet). One without a lock file is left: not this code's."""
    try:
        if time.time() - os.stat(folder).st_mtime < SPILL_GRACE_S:
            return
        lock = os.open(os.path.join(folder, SPILL_LOCK), os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(folder, ignore_errors=True)
    except OSError:  # held: in use
        return
    finally:
        os.close(lock)


def split(table: pa.Table, n: int) -> Iterator[pa.Table]:
    """The rows of each of the n buckets, in their order within `table`, a bucket at a time
    (`table` whole when n is 1). The table's chunks are joined first: a take from a chunked
    table joins them anew each time, a copy of the table a bucket."""
    if n == 1:
        yield table
        return
    table = table.combine_chunks()
    buckets = bucket_of(table["rel_path"], n)
    order = np.argsort(buckets, kind="stable")
    bounds = np.searchsorted(buckets[order], np.arange(n + 1))
    for k in range(n):
        yield table.take(pa.array(order[bounds[k] : bounds[k + 1]]))


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def coalesced(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """`tables` joined into tables of at least `rows` rows (the last one what is left), empty
    ones dropped: a listing of a folder per file, or many small manifest parts, are few tables."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        if len(table):
            held.append(table)
            count += len(table)
        if count >= rows:
            yield pa.concat_tables(held).combine_chunks()
            held, count = [], 0
    if held:
        yield pa.concat_tables(held).combine_chunks()
