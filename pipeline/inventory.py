"""Sources from an inventory instead of a listing: `tadm archive --inventory URI`.

URI is either
- an S3 Inventory report: its `manifest.json` (or the folder holding it), which names the
  report's files (`files[].key`, in the bucket of `destinationBucket`) and their format
  (`fileFormat` CSV, Parquet or ORC; CSV files are gzipped, without a header, in the columns
  of `fileSchema`, with URL-encoded keys); a local copy keeps the report's layout, the files
  in `data/` beside the dated folder of manifest.json;
- or a plain listing: one Parquet or CSV file (`.csv`, `.csv.gz`, with a header) with
  columns `key` and `size`, and optionally `etag`, `last_modified` and `bucket`.

A key is an object key in SRC's bucket (or in the row's `bucket` when there is one), or, for a
local SRC, an absolute path. Rows under SRC with an image name become the job's sources; each
file is read in batches, so the inventory is never held whole.
"""

from __future__ import annotations

import json
import posixpath
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.sources import LISTING_SCHEMA, NotImages, select_images
from pipeline.storage import Location

BATCH_ROWS = 200_000
MANIFEST = "manifest.json"
# Column names as S3 Inventory spells them (fileSchema, Parquet/ORC) -> ours.
COLUMNS = {
    "bucket": "bucket",
    "key": "key",
    "size": "size",
    "etag": "etag",
    "e_tag": "etag",
    "lastmodifieddate": "last_modified",
    "last_modified_date": "last_modified",
    "last_modified": "last_modified",
}


def inventory_files(inventory: Location) -> tuple[str, list[str], list[str] | None]:
    """(format, file paths, CSV column names or None when the files have a header)."""
    fs = inventory.filesystem()
    path = inventory.root
    if fs.isdir(path):
        path = inventory.path(MANIFEST)
    if posixpath.basename(path) != MANIFEST:
        name = path.lower()
        if name.endswith(".parquet"):
            return "parquet", [path], None
        if name.endswith((".csv", ".csv.gz")):
            return "csv", [path], None
        raise ValueError(
            f"--inventory {inventory.uri_of(path)!r}: give an S3 Inventory manifest.json (or "
            "its folder), or a .parquet, .csv or .csv.gz listing"
        )
    try:
        report = json.loads(fs.cat_file(path))
        kind = report["fileFormat"].lower()
        keys = [f["key"] for f in report["files"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"--inventory {inventory.uri_of(path)!r} is not an S3 Inventory manifest: {e}"
        ) from None
    if kind not in ("csv", "parquet", "orc"):
        raise ValueError(f"--inventory: unsupported fileFormat {report['fileFormat']!r}")
    if inventory.protocol == "s3":
        bucket = report.get("destinationBucket", "").rsplit(":", 1)[-1]
        files = [f"{bucket}/{key}" for key in keys]
    else:  # a local copy: data/ beside the dated folder of manifest.json
        data = posixpath.join(posixpath.dirname(posixpath.dirname(path)), "data")
        files = [posixpath.join(data, posixpath.basename(key)) for key in keys]
    names = None
    if kind == "csv":
        names = [name.strip() for name in report.get("fileSchema", "").split(",")]
    return kind, files, names


def read_batches(
    inventory: Location, kind: str, path: str, names: list[str] | None
) -> Iterator[pa.Table]:
    """The rows of one inventory file, BATCH_ROWS at a time, with our column names."""
    fs = inventory.filesystem()
    with fs.open(path, "rb") as f:
        if kind == "parquet":
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                yield renamed(pa.Table.from_batches([batch]))
        elif kind == "orc":
            from pyarrow import orc

            orc_file = orc.ORCFile(f)
            for stripe in range(orc_file.nstripes):
                yield renamed(pa.Table.from_batches([orc_file.read_stripe(stripe)]))
        else:
            stream = pa.input_stream(f, compression="gzip" if path.endswith(".gz") else None)
            header = names is None
            read = pacsv.ReadOptions(column_names=names, block_size=1 << 24)
            strings = {n: pa.string() for n in (names or [])}
            convert = pacsv.ConvertOptions(column_types=strings, strings_can_be_null=True)
            for batch in pacsv.open_csv(stream, read_options=read, convert_options=convert):
                table = renamed(pa.Table.from_batches([batch]))
                if not header and "key" in table.column_names:
                    table = table.set_column(
                        table.column_names.index("key"), "key", url_decoded(table["key"])
                    )
                yield table


def renamed(table: pa.Table) -> pa.Table:
    names = [COLUMNS.get(n.lower().replace(" ", ""), n) for n in table.column_names]
    return table.rename_columns(names)


def url_decoded(keys: pa.ChunkedArray) -> pa.Array:
    """S3 Inventory CSV keys are URL-encoded (a space is "+"); decode the keys that need it."""
    keys = keys.combine_chunks().cast(pa.string())
    encoded = pc.or_(pc.match_substring(keys, "%"), pc.match_substring(keys, "+"))
    if not pc.any(encoded).as_py():
        return keys
    values = [urllib.parse.unquote_plus(k) if k is not None else None for k in keys.to_pylist()]
    return pa.array(values, pa.string())


def listing(table: pa.Table, src: Location, prefix: str) -> pa.Table:
    """Inventory rows -> LISTING_SCHEMA rows under SRC (`prefix`: SRC's folder with "/")."""
    for name in ("key", "size"):
        if name not in table.column_names:
            raise ValueError(f"--inventory: no {name!r} column (columns: {table.column_names})")
    keys = table["key"].cast(pa.string())
    if src.protocol == "s3":
        default = src.root.split("/", 1)[0]
        bucket: Any = (
            table["bucket"].cast(pa.string()) if "bucket" in table.column_names else default
        )
        if "bucket" in table.column_names:
            bucket = pc.fill_null(bucket, default)
        paths = pc.binary_join_element_wise(bucket, keys, "/")
    else:
        paths = keys
    under = pc.fill_null(pc.starts_with(paths, prefix), False)
    table, paths = table.filter(under), paths.filter(under)
    n = len(table)

    def column(name: str, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
        if name not in table.column_names:
            return pa.nulls(n, kind)
        values = table[name]
        if name == "etag":
            return pc.utf8_trim(values.cast(pa.string()), '"')
        return values.cast(kind)  # an ISO 8601 text, or a timestamp (naive ones are UTC)

    rows = pa.table(
        {
            "rel_path": pc.utf8_slice_codeunits(paths, len(prefix)),
            "size": column("size", pa.int64()),
            "mtime": column("last_modified", LISTING_SCHEMA.field("mtime").type),
            "etag": column("etag", pa.string()),
            "error": pa.nulls(n, pa.string()),
        },
        schema=LISTING_SCHEMA,
    )
    return rows


def scan_inventory(
    inventory: Location,
    src: Location,
    prefix: str,
    exclude: str | None,
    every_file: bool = False,
    not_images: NotImages | None = None,
) -> Iterator[pa.Table]:
    """The inventory's image files (with `every_file`, any file) under SRC, as listing
    tables, file by file; the others counted in `not_images`."""
    kind, files, names = inventory_files(inventory)
    for path in files:
        for table in read_batches(inventory, kind, path, names):
            yield select_images(listing(table, src, prefix), exclude, every_file, not_images)
