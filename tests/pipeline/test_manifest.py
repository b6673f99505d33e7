"""Manifest parts: atomic appends, merge keeping the latest row per rel_path, compaction."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.format import ARCHIVE_SCHEMA
from pipeline.manifest import ManifestWriter, compact, list_parts, read_manifest, write_part
from pipeline.storage import Location

DESIGN_COLUMNS = [
    "source_uri",
    "rel_path",
    "status",
    "error",
    "width",
    "height",
    "source_bytes",
    "source_sha256",
    "lr_uri",
    "lr_width",
    "lr_height",
    "lr_bytes",
    "bpp",
    "compression_ratio",
    "scale",
    "model_id",
    "psnr",
    "ssim",
    "timestep_mean",
    "seconds",
]


def test_archive_schema_has_design_columns_in_order():
    assert ARCHIVE_SCHEMA.names[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS


def test_writer_flushes_parts_and_reader_keeps_latest_row(tmp_path: Path):
    manifest = Location.parse(str(tmp_path / "manifest"))
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=2, flush_seconds=3600)
    writer.add([{"rel_path": "a", "status": "error", "error": "boom"}])
    assert list_parts(manifest) == []
    writer.add([{"rel_path": "b", "status": "ok", "psnr": float("nan")}])
    assert len(list_parts(manifest)) == 1
    writer.add([{"rel_path": "a", "status": "ok", "width": 5}])
    writer.flush()
    assert len(list_parts(manifest)) == 2
    table = read_manifest(manifest, ARCHIVE_SCHEMA)
    assert table.schema == ARCHIVE_SCHEMA
    rows = {r["rel_path"]: r for r in table.to_pylist()}
    assert rows["a"]["status"] == "ok" and rows["a"]["width"] == 5 and rows["a"]["error"] is None
    assert rows["b"]["psnr"] is None  # NaN is stored as null


def test_compact_leaves_one_part_with_the_merged_rows(tmp_path: Path):
    manifest = Location.parse(str(tmp_path / "manifest"))
    for status in ("error", "ok", "skipped"):
        writer = ManifestWriter(manifest, ARCHIVE_SCHEMA)
        writer.add([{"rel_path": "x", "status": status}, {"rel_path": status, "status": "ok"}])
        writer.flush()
    compact(manifest, ARCHIVE_SCHEMA)
    (part,) = list_parts(manifest)
    table = pq.read_table(part)
    assert table.column("rel_path").to_pylist() == ["error", "ok", "skipped", "x"]
    assert table.column("status").to_pylist()[-1] == "skipped"


def test_older_parts_without_a_column_read_as_null(tmp_path: Path):
    manifest = Location.parse(str(tmp_path / "manifest"))
    write_part(manifest, pa.table({"rel_path": ["a"], "status": ["ok"]}))
    (row,) = read_manifest(manifest, ARCHIVE_SCHEMA).to_pylist()
    assert row["conversion"] is None and row["status"] == "ok"


def test_no_manifest_reads_as_none(tmp_path: Path):
    assert read_manifest(Location.parse(str(tmp_path / "none")), ARCHIVE_SCHEMA) is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".part-1.parquet.tmp").write_bytes(b"half")
    assert read_manifest(Location.parse(str(tmp_path / "empty")), ARCHIVE_SCHEMA) is None
