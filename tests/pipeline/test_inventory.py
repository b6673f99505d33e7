"""Sources from an S3 Inventory report (manifest.json + gzipped CSV, Parquet) or a listing."""

from __future__ import annotations

import gzip
import io
import json
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_bucket

from pipeline.inventory import scan_inventory
from pipeline.sources import LISTING_SCHEMA
from pipeline.storage import Location

WHEN = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
OBJECTS = [  # (key, size, etag) in the source bucket
    ("src/a.jpg", 10, "aaa"),
    ("src/dir with space/b+c.png", 20, "bbb"),
    ("src/caf\u00e9.png", 30, "ccc"),
    ("src/notes.txt", 5, "ddd"),
    ("src/.hidden/x.png", 5, "eee"),
    ("src/archive/lr/a.jpg.png", 5, "fff"),
    ("other/y.png", 5, "ggg"),
]
EXPECTED = {"a.jpg": 10, "dir with space/b+c.png": 20, "caf\u00e9.png": 30}


def csv_gz(rows: list[tuple[str, int, str]]) -> bytes:
    """An S3 Inventory CSV file: no header, quoted fields, URL-encoded keys, gzipped."""
    when = f"{WHEN:%Y-%m-%dT%H:%M:%S.000Z}"
    lines = [
        f'"photos","{urllib.parse.quote_plus(k, safe="/")}","{s}","{when}","{e}"'
        for k, s, e in rows
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def parquet_bytes(rows: list[tuple[str, int, str]]) -> bytes:
    table = pa.table(
        {
            "bucket": ["photos"] * len(rows),
            "key": [k for k, _, _ in rows],
            "size": [s for _, s, _ in rows],
            "last_modified_date": pa.array([WHEN] * len(rows), pa.timestamp("ms", tz="UTC")),
            "e_tag": [e for _, _, e in rows],
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def write_report(fs, root: str, kind: str) -> str:
    """An S3 Inventory report under s3://inventories/<root>/: data files and manifest.json."""
    data = csv_gz if kind == "CSV" else parquet_bytes
    ext = "csv.gz" if kind == "CSV" else "parquet"
    keys = [f"{root}/photos/daily/data/part-{i}.{ext}" for i in range(2)]
    fs.pipe_file(f"inventories/{keys[0]}", data(OBJECTS[:4]))
    fs.pipe_file(f"inventories/{keys[1]}", data(OBJECTS[4:]))
    manifest = {
        "sourceBucket": "photos",
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "fileFormat": kind,
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": k, "size": 1, "MD5checksum": "x"} for k in keys],
    }
    path = f"inventories/{root}/photos/daily/2026-11-30T01-00Z/manifest.json"
    fs.pipe_file(path, json.dumps(manifest).encode())
    return f"s3://{path}"


def rows_of(inventory: str, src: Location, options: dict) -> dict[str, dict]:
    dst = "archive"
    tables = scan_inventory(Location.parse(inventory, options), src, src.root + "/", dst)
    table = pa.concat_tables([LISTING_SCHEMA.empty_table(), *tables])
    return {r["rel_path"]: r for r in table.to_pylist()}


@pytest.mark.parametrize("kind", ["CSV", "Parquet"])
def test_s3_inventory_report(s3_endpoint: str, kind: str):
    make_bucket(s3_endpoint, "inventories")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    fs = Location.parse("s3://inventories", options).filesystem()
    manifest = write_report(fs, kind.lower(), kind)
    src = Location.parse("s3://photos/src", options)
    for uri in (manifest, manifest.rsplit("/", 1)[0]):  # manifest.json, or its folder
        rows = rows_of(uri, src, options)
        assert {r: v["size"] for r, v in rows.items()} == EXPECTED
        assert rows["a.jpg"]["etag"] == "aaa" and rows["a.jpg"]["mtime"] == WHEN


def test_plain_listings_csv_and_parquet(tmp_path: Path):
    src = Location.parse("s3://photos/src")
    header = "key,size,etag,last_modified\n" + "".join(
        f'"{k}",{s},"\\"{e}\\"",{WHEN.isoformat()}\n'.replace('\\"', '""') for k, s, e in OBJECTS
    )
    (tmp_path / "list.csv").write_text(header)
    (tmp_path / "list.csv.gz").write_bytes(gzip.compress(header.encode()))
    (tmp_path / "list.parquet").write_bytes(parquet_bytes(OBJECTS))
    for name in ("list.csv", "list.csv.gz", "list.parquet"):
        rows = rows_of(str(tmp_path / name), src, {})
        assert {r: v["size"] for r, v in rows.items()} == EXPECTED, name
        assert rows["a.jpg"]["etag"] == "aaa", name  # quotes stripped


def test_a_local_src_takes_absolute_paths(tmp_path: Path):
    listing = tmp_path / "list.csv"
    listing.write_text("key,size\n/data/src/a.png,3\n/data/src2/b.png,4\n/data/src/c.txt,1\n")
    rows = rows_of(str(listing), Location.parse("/data/src"), {})
    assert {r: v["size"] for r, v in rows.items()} == {"a.png": 3}
    assert rows["a.png"]["etag"] is None and rows["a.png"]["mtime"] is None


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.json", "{}", "give an S3 Inventory manifest.json"),
        ("manifest.json", "{}", "not an S3 Inventory manifest"),
        ("list.csv", "name,bytes\na.png,1\n", "no 'key' column"),
    ],
)
def test_bad_inventories_are_named(tmp_path: Path, name: str, text: str, message: str):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        rows_of(str(tmp_path / name), Location.parse("/data/src"), {})
