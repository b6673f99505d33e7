"""Parquet manifests: one row per image, written as atomic part files under <root>/manifest/.

A job appends part files as it goes (`ManifestWriter`), so a killed job keeps every row it
flushed, and a part is never half-written (see storage.write_atomic). Part names start with a
zero-padded nanosecond time, so name order is write order; `read_manifest` merges them and keeps
the latest row per rel_path. At the end of a job `compact` rewrites the merged rows as one part,
so plain Parquet readers see one row per image too. The schemas are part of the archive format
(pipeline/format.py).
"""

from __future__ import annotations

import io
import math
import posixpath
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.storage import Location, write_atomic


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
    return int(value) if pa.types.is_integer(kind) else value


def write_part(manifest: Location, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_atomic(manifest.filesystem(), manifest.path(part_name()), buffer.getvalue())


def list_parts(manifest: Location) -> list[str]:
    """Part files in write order; hidden temporaries are not parts."""
    fs = manifest.filesystem()
    if not fs.isdir(manifest.root):
        return []
    names = sorted(posixpath.basename(p) for p in fs.ls(manifest.root, detail=False))
    return [manifest.path(n) for n in names if n.startswith("part-") and n.endswith(".parquet")]


def read_manifest(manifest: Location, schema: pa.Schema) -> pa.Table | None:
    """The merged manifest (latest row per rel_path, in rel_path order), or None if there is
    no part. Columns missing from older parts read as null; extra columns are dropped."""
    parts = list_parts(manifest)
    if not parts:
        return None
    fs = manifest.filesystem()
    tables = []
    for path in parts:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        columns = [
            table[name].cast(field.type)
            if name in table.column_names
            else pa.nulls(len(table), field.type)
            for name, field in zip(schema.names, schema, strict=True)
        ]
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    table = pa.concat_tables(tables)
    order = pa.array(range(len(table)), pa.int64())
    latest = (
        table.append_column("_order", order)
        .group_by("rel_path", use_threads=False)
        .aggregate([("_order", "max")])
    )
    keep = pc.sort_indices(latest, [("rel_path", "ascending")])
    return table.take(pc.take(latest["_order_max"], keep))


def compact(manifest: Location, schema: pa.Schema) -> None:
    """Rewrite the merged rows as one part, then delete the parts it replaces. A crash in
    between leaves duplicates that read_manifest already resolves."""
    parts = list_parts(manifest)
    if len(parts) <= 1:
        return
    table = read_manifest(manifest, schema)
    write_part(manifest, table)
    manifest.filesystem().rm(parts)


class ManifestWriter:
    """Buffers rows and writes them as a part every `flush_rows` rows or `flush_seconds`."""

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
        self.rows: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        waited = time.monotonic() - self.last_flush
        if len(self.rows) >= self.flush_rows or waited >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            write_part(self.manifest, to_table(self.rows, self.schema))
            self.rows = []
        self.last_flush = time.monotonic()
