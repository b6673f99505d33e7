"""Parquet manifests: one row per image, written as atomic part files under <root>/manifest/.

A job appends part files as it goes (`ManifestWriter`, run by the job's writer actor and by the
driver), so a killed job keeps every row it flushed, and a part is never half-written (see
storage.write_atomic). Every row carries `written_at`, the time the writer took it: one time
for the rows it takes together, later than the time of those it took before; of the rows of
one rel_path the one with the latest written_at wins (then the later part, then the later
row). `read_manifest` merges the parts so; `compact`
rewrites the merged rows as a few parts, keeping each row's written_at, so a compaction can
never put an older row over a newer one. Both work one bucket of rel_paths at a time
(pipeline/buckets.py), in memory bounded by a bucket. The schemas are part of the archive format
(pipeline/format.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import posixpath
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.buckets import Buckets, coalesced
from pipeline.format import KEPT_DIR, LR_DIR, MANIFEST_DIR
from pipeline.rows import error_text, from_storage_client
from pipeline.storage import DstFull, Location, local_temp, no_room, write_atomic
from pipeline.summary import plural

logger = logging.getLogger("tadm")

SEQ = "_seq"  # part index << 32 | row index: the order parts and rows were written in
PART_ROWS = 1_000_000  # rows of a compacted part at most
PART_READERS = 16  # parts fetched at once (on S3 each is a few requests: latency, not work)
SMALL_PART_BYTES = 16 << 20  # a part fetched whole; larger ones are streamed
# How long a ManifestWriter keeps trying to write a part the storage refuses (a burst of server
# errors, an outage) before the job gives up, and its first wait between tries at the end
WRITE_PATIENCE_S = 600.0
RETRY_WAIT_S = 5.0


def part_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table of exactly `schema`'s columns. NaN becomes null, and integral floats
    in integer columns become ints (Ray hands back an int column with nulls as floats)."""
    clean = [{f.name: cell(row.get(f.name), f.type) for f in schema} for row in rows]
    return pa.Table.from_pylist(clean, schema=schema)


def cell(value: Any, kind: pa.DataType) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    whole = pa.types.is_integer(kind) or pa.types.is_timestamp(kind)  # timestamps as ints
    return int(value) if whole and isinstance(value, (int, float)) else value


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones null, extra ones dropped."""
    columns = [
        table[name].cast(field.type)
        if name in table.column_names
        else pa.nulls(len(table), field.type)
        for name, field in zip(schema.names, schema, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(manifest: Location, table: pa.Table) -> None:
    """Write `table` as a new part; an OSError names the part that could not be written (a
    crash must say which object the credentials may not write, say)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path = manifest.path(part_name())
    try:
        write_atomic(manifest.filesystem(), path, buffer.getvalue())
    except OSError as e:
        raise with_text(e, f"manifest part {manifest.uri_of(path)} cannot be written: {e}") from e
    except Exception as e:  # the S3 client's own, after its retries: a server error
        if not from_storage_client(e):
            raise
        message = f"manifest part {manifest.uri_of(path)} cannot be written: {error_text(e)}"
        raise OSError(message) from e


def with_text(e: OSError, text: str) -> OSError:
    """An OSError of `e`'s type and errno that says `text`."""
    error = type(e)(text)
    error.errno = e.errno
    return error


def list_parts(manifest: Location) -> list[str]:
    """Part files in write order; hidden temporaries are not parts."""
    fs = manifest.filesystem()
    if not fs.isdir(manifest.root):
        return []
    files = (e["name"] for e in fs.ls(manifest.root, detail=True) if e["type"] == "file")
    names = sorted(posixpath.basename(p) for p in files)
    return [manifest.path(n) for n in names if n.startswith("part-") and n.endswith(".parquet")]


def read_parts(
    manifest: Location, parts: list[str], schema: pa.Schema, batch_rows: int = 100_000
) -> Iterator[pa.Table]:
    """The rows of `parts` as tables of `schema` plus SEQ, about `batch_rows` rows each;
    ValueError naming the part when one is not a Parquet file or has a column of another
    type. The bytes of small parts (a job's, flushed every few seconds) are fetched
    PART_READERS at once, larger ones (compacted) streamed, and their rows joined."""
    fs = manifest.filesystem()

    def fetch(path: str) -> bytes | None:
        """The part's bytes, or None when it is too large to hold."""
        return fs.cat_file(path) if fs.size(path) <= SMALL_PART_BYTES else None

    def rows(index: int, f: Any) -> Iterator[pa.Table]:
        parquet = pq.ParquetFile(f)
        found = parquet.schema_arrow
        check_job(manifest, found, schema)
        present = [n for n in schema.names if n in found.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
            table = conform(pa.Table.from_batches([batch]), schema)
            seq = (index << 32) + np.arange(row, row + len(table), dtype=np.int64)
            row += len(table)
            yield table.append_column(SEQ, pa.array(seq))

    def tables() -> Iterator[pa.Table]:
        with ThreadPoolExecutor(PART_READERS) as pool:
            fetching = deque(pool.submit(fetch, path) for path in parts[:PART_READERS])
            for index, path in enumerate(parts):
                with naming_part(manifest, path):
                    data = fetching.popleft().result()
                    if index + PART_READERS < len(parts):
                        fetching.append(pool.submit(fetch, parts[index + PART_READERS]))
                    if data is None:
                        with fs.open(path, "rb") as f:
                            yield from rows(index, f)
                    else:
                        yield from rows(index, pa.BufferReader(data))

    return coalesced(tables(), batch_rows)


@contextlib.contextmanager
def naming_part(manifest: Location, path: str) -> Iterator[None]:
    """ValueError naming the part at `path` for what makes it unreadable as a part; I/O
    errors, and the other job's folder, are not the part's fault and go through."""
    try:
        yield
    except (pa.ArrowException, ValueError) as e:
        if isinstance(e, (OSError, OtherJob)):
            raise
        raise ValueError(
            f"manifest part {manifest.uri_of(path)} cannot be read ({e}): move it out of "
            f"{MANIFEST_DIR}/, and a re-run does its images again"
        ) from None


class OtherJob(ValueError):
    """A manifest folder holds the manifest of the other job (archive, restore)."""


def job_of(schema: pa.Schema) -> str:
    """Which job writes manifests of `schema`: only restore's have output_uri."""
    return "restore" if "output_uri" in schema.names else "archive"


def check_job(manifest: Location, part: pa.Schema, schema: pa.Schema) -> None:
    """OtherJob when the part was written by the other job than the one `schema` is of: an
    archive's folder taken for a restore's output, or the reverse, would mix their rows."""
    if job_of(part) == job_of(schema):
        return
    folder = manifest.uri_of(posixpath.dirname(manifest.root))
    if job_of(schema) == "archive":
        raise OtherJob(
            f"{folder} is a restore's output (`tadm restore` wrote its manifest), not an "
            "archive: give an archive's folder"
        )
    raise OtherJob(
        f"{folder} is an archive (`tadm archive` wrote its manifest), not a restore's output: "
        "restore into another folder"
    )


def with_seq(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(SEQ, pa.int64()))


def merged_buckets(
    manifest: Location, schema: pa.Schema, parts: list[str] | None = None
) -> Buckets:
    """The rows of every part (or of `parts`), by bucket; `latest` merges one bucket."""
    parts = list_parts(manifest) if parts is None else parts
    return Buckets(with_seq(schema)).extend(read_parts(manifest, parts, schema))


def latest(rows: pa.Table, ordered: bool = True) -> pa.Table:
    """The latest row of each rel_path (by written_at, nulls oldest, then SEQ), without SEQ;
    in rel_path order when `ordered`."""
    if pc.count_distinct(rows["rel_path"]).as_py() < len(rows):
        # Null written_at (parts written before the column) sorts as the epoch: oldest.
        written = pc.fill_null(rows["written_at"].cast(pa.int64()), 0)
        keys = pa.table({"written": written, SEQ: rows[SEQ]})
        rows = rows.take(pc.sort_indices(keys, [("written", "ascending"), (SEQ, "ascending")]))
        index = pa.table({"rel_path": rows["rel_path"], "i": np.arange(len(rows))})
        last = index.group_by("rel_path", use_threads=False).aggregate([("i", "last")])
        rows = rows.take(last["i_last"])
    if ordered:
        rows = rows.take(pc.sort_indices(rows, [("rel_path", "ascending")]))
    return rows.drop_columns([SEQ])


def no_manifest(archive: Location) -> str:
    """What to say of an ARCHIVE `archive` whose manifest has no part: with outputs (a job
    stopped, killed say, before it wrote its first rows), that running it again finishes it."""
    said = f"ARCHIVE {archive.uri!r} has no manifest (no {MANIFEST_DIR}/part-*)"
    fs = archive.filesystem()
    if any(fs.exists(archive.child(name).root) for name in (LR_DIR, KEPT_DIR)):
        said += ", but outputs: a job stopped before it wrote its first rows; run it again"
    return said


class Merged:
    """A merged manifest by bucket of rel_paths (pipeline/buckets.py): `bucket(k, n)` is the
    latest row of each rel_path of bucket k of n, in no order; iterating gives each of its own
    buckets. What reads a manifest of millions of rows whole (inspect and its checks) holds a
    bucket of it at a time. A context manager: leaving it removes the spilled buckets."""

    def __init__(self, rows: Buckets) -> None:
        self.rows = rows

    def __enter__(self) -> Merged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rows.close()

    def __iter__(self) -> Iterator[pa.Table]:
        for k in range(self.n):
            yield self.bucket(k, self.n)

    @property
    def n(self) -> int:
        return self.rows.n

    def bucket(self, k: int, n: int) -> pa.Table:
        return latest(self.rows.bucket(k, n), ordered=False)


def merged(
    manifest: Location, schema: pa.Schema, columns: list[str] | None = None
) -> Merged | None:
    """The manifest's parts merged (see Merged), or None if there is no part. Columns missing
    from older parts read as null; extra columns are dropped. `columns` (rel_path and
    written_at are always read) keeps memory to what a caller needs."""
    parts = list_parts(manifest)
    if not parts:
        return None
    if columns is not None:
        keep = {"rel_path", "written_at", *columns}
        schema = pa.schema([f for f in schema if f.name in keep])
    return Merged(merged_buckets(manifest, schema, parts))


def read_manifest(
    manifest: Location, schema: pa.Schema, columns: list[str] | None = None
) -> pa.Table | None:
    """The merged manifest whole (latest row per rel_path, in rel_path order), or None if
    there is no part; see `merged`."""
    found = merged(manifest, schema, columns)
    if found is None:
        return None
    with found:
        table = pa.concat_tables(list(found))
    return table.take(pc.sort_indices(table, [("rel_path", "ascending")]))


def compact(manifest: Location, schema: pa.Schema) -> None:
    """Rewrite the merged rows as parts of at most PART_ROWS rows (one when they fit), one
    bucket at a time, then delete the parts they replace. A crash in between leaves
    duplicates that read_manifest resolves by written_at, which the rewritten rows keep."""
    parts = list_parts(manifest)
    if len(parts) <= 1:
        return
    with merged_buckets(manifest, schema, parts) as buckets, PartSink(manifest, schema) as out:
        for k in range(buckets.n):
            out.write(latest(buckets.bucket(k, buckets.n)))
    manifest.filesystem().rm(parts)


class PartSink:
    """Streams tables into parts of at most PART_ROWS rows, each written atomically into the
    manifest as it is spooled (part_spool); a context manager, which publishes the last part
    when its block ends, and leaves no part nor spool behind when it raises."""

    def __init__(self, manifest: Location, schema: pa.Schema) -> None:
        self.manifest = manifest
        self.schema = schema
        self.spool = contextlib.ExitStack()  # the part being written: its spool file
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def __enter__(self) -> PartSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.publish()
            return
        if self.writer is not None:
            with contextlib.suppress(Exception):  # its own error, as the disk's, is exc's
                self.writer.close()
        self.spool.__exit__(*exc)  # the spool is removed, nothing published

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            f = self.spool.enter_context(part_spool(self.manifest))
            self.writer = pq.ParquetWriter(f, self.schema)
        self.writer.write_table(table.cast(self.schema))
        self.rows += len(table)
        if self.rows >= PART_ROWS:
            self.publish()

    def publish(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.writer, self.rows = None, 0
        self.spool.close()


@contextlib.contextmanager
def part_spool(manifest: Location) -> Iterator[Any]:
    """A file to write a new part into, which becomes the part when the block ends without an
    exception, and is removed otherwise: in a local manifest a hidden temporary beside the
    parts, renamed into place (storage.local_temp: one disk, so a manifest on another disk than
    the temporary folder's compacts too); for S3 a local temporary file, then one PUT, or a
    multipart upload that appears when complete."""
    path = manifest.path(part_name())
    if manifest.protocol == "file":
        with local_temp(path, manifest.root) as f:
            yield f
        return
    with tempfile.NamedTemporaryFile(prefix="tadm-part-") as f:
        yield f
        f.flush()
        manifest.filesystem().put_file(f.name, path)


class ManifestWriter:
    """Buffers rows and writes them as a part every `flush_rows` rows or `flush_seconds`.
    Each `add` stamps its rows' written_at with one time, later than the previous add's;
    `taken` counts the rows added, by status. `close` writes the rest and refuses rows after
    it (`add` returns False): as a Ray actor, rows that come while the driver closes it are
    either written and counted or refused, never counted and left unwritten. A refused row's
    image has no row, so a re-run does it again. A part the storage fails to write keeps its
    rows buffered, written with the next flush (`close` waits and tries again); only after
    WRITE_PATIENCE_S of failures does the OSError reach the job, naming the rows not written,
    or at once when the storage refuses them, or its disk takes no more."""

    def __init__(
        self,
        manifest: Location,
        schema: pa.Schema,
        flush_rows: int = 1000,
        flush_seconds: float = 5.0,
    ) -> None:
        self.manifest = manifest
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.stamp = 0  # the last written_at given, in microseconds since the epoch
        self.statuses: Counter[str] = Counter()
        self.last_flush = time.monotonic()
        self.closed = False
        self.failing_since: float | None = None  # when writes began to fail, until one works

    def add(self, rows: list[dict[str, Any]] | pa.Table) -> bool:
        """Take `rows`; False, taking nothing, once closed."""
        if self.closed:
            return False
        table = rows if isinstance(rows, pa.Table) else to_table(rows, self.schema)
        if len(table):
            self.stamp = max(time.time_ns() // 1000, self.stamp + 1)
            stamp = pa.array(np.full(len(table), self.stamp, dtype=np.int64)).cast(
                self.schema.field("written_at").type
            )
            table = conform(table, self.schema).set_column(
                self.schema.get_field_index("written_at"), "written_at", stamp
            )
            self.tables.append(table)
            self.rows += len(table)
            counts = pc.value_counts(table["status"])
            values, n = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
            self.statuses.update(dict(zip(values, n, strict=True)))
        waited = time.monotonic() - self.last_flush
        if self.rows >= self.flush_rows or waited >= self.flush_seconds:
            self.flush()
        return True

    def taken(self) -> dict[str, int]:
        """The rows added so far, by status."""
        return dict(self.statuses)

    def close(self) -> dict[str, int]:
        """Write the rows buffered, trying again while the storage fails (flush), refuse any
        after; every row taken, by status."""
        self.closed = True
        wait = RETRY_WAIT_S
        while not self.flush():
            time.sleep(wait)
            wait = min(2 * wait, 60.0)
        return self.taken()

    def flush(self) -> bool:
        """Write the rows buffered as a part; whether they are written. A failed write keeps
        them for the next flush and logs why; OSError once writes have failed for
        WRITE_PATIENCE_S, or at once when the storage refuses them (no right to write, no such
        bucket, a file where the folder must be) or its disk takes no more (full, read-only:
        storage.no_room: DstFull), saying how many rows were not written."""
        self.last_flush = time.monotonic()
        if not self.tables:
            return True
        try:
            write_part(self.manifest, pa.concat_tables(self.tables))
        except OSError as e:
            now = time.monotonic()
            self.failing_since = self.failing_since or now
            refused = isinstance(e, (PermissionError, FileNotFoundError, NotADirectoryError))
            if refused or no_room(e) or now - self.failing_since >= WRITE_PATIENCE_S:
                # no use waiting
                failed = f"{e} ({plural(self.rows, 'row')} not written)"
                if no_room(e):
                    raise DstFull(failed) from e
                raise with_text(e, f"{failed}: the next run does their images again") from e
            logger.warning(
                "manifest: %s rows kept, to be written again: %s",
                f"{self.rows:,}",
                error_text(e),
            )
            return False
        self.tables, self.rows, self.failing_since = [], 0, None
        return True
