"""Manifest parts: atomic appends, merge keeping the latest row per rel_path, compaction."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_bucket

import pipeline.buckets as buckets_module
import pipeline.manifest as manifest_module
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, WRITTEN_AT
from pipeline.manifest import (
    ManifestWriter,
    compact,
    list_parts,
    read_manifest,
    to_table,
    write_part,
)
from pipeline.storage import DstFull, Location

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


def test_a_part_the_storage_fails_keeps_its_rows_for_the_next_flush(
    tmp_path: Path, monkeypatch, caplog
):
    """A burst of server errors (pass 19: five 500s on one PUT crashed the job): the rows
    stay buffered and go with a later part; close waits and tries again; only a refusal, or
    failures for WRITE_PATIENCE_S, reach the job."""
    manifest = Location.parse(str(tmp_path / "manifest"))
    failures = [3]

    def flaky(manifest_: Location, table: pa.Table) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OSError("manifest part cannot be written: InternalError (reached max retries)")
        write_part(manifest_, table)

    monkeypatch.setattr(manifest_module, "write_part", flaky)
    monkeypatch.setattr(manifest_module, "RETRY_WAIT_S", 0.01)
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=1)
    assert writer.add([{"rel_path": "a", "status": "ok"}])  # its part fails
    assert writer.add([{"rel_path": "b", "status": "ok"}])  # fails again, a and b kept
    assert list_parts(manifest) == []
    assert writer.close() == {"ok": 2}  # a third failure, then written
    assert sorted(read_manifest(manifest, ARCHIVE_SCHEMA)["rel_path"].to_pylist()) == ["a", "b"]
    assert caplog.text.count("rows kept, to be written again: manifest part cannot be") == 3

    monkeypatch.setattr(manifest_module, "WRITE_PATIENCE_S", 0.0)
    failures[0] = 1
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=1)
    with pytest.raises(OSError, match="InternalError"):
        writer.add([{"rel_path": "c", "status": "ok"}])

    def refused(*_) -> None:
        raise PermissionError("manifest part cannot be written: Access Denied")

    monkeypatch.setattr(manifest_module, "WRITE_PATIENCE_S", 600.0)
    monkeypatch.setattr(manifest_module, "write_part", refused)
    with pytest.raises(PermissionError):
        ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=1).add([{"rel_path": "d"}])

    def full(*_) -> None:  # a disk full, or read-only: no use waiting
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest_module, "write_part", full)
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=3)
    writer.add([{"rel_path": "e"}, {"rel_path": "f"}])
    with pytest.raises(DstFull) as stopped:
        writer.close()
    assert str(stopped.value) == (
        "[Errno 28] No space left on device (2 rows not written): DST's disk takes no more "
        "files: free space on it, or make it writable, and run the job again, which does the "
        "images not done yet"
    )


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


def test_a_damaged_part_is_named_and_a_folder_named_like_a_part_is_not_one(tmp_path: Path):
    manifest = Location.parse(str(tmp_path / "manifest"))
    write_part(manifest, pa.table({"rel_path": ["a"], "status": ["ok"]}))
    (tmp_path / "manifest" / "part-99-folder.parquet").mkdir()
    assert read_manifest(manifest, ARCHIVE_SCHEMA)["rel_path"].to_pylist() == ["a"]
    for name, data in [("part-98-cut.parquet", b"PAR1 cut short"), ("part-97-type.parquet", None)]:
        path = tmp_path / "manifest" / name
        if data is None:  # a Parquet file whose width is text
            pq.write_table(pa.table({"rel_path": ["b"], "width": ["wide"]}), path)
        else:
            path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"^manifest part {path} cannot be read \(.*\): move"):
            read_manifest(manifest, ARCHIVE_SCHEMA)
        path.unlink()


def test_the_manifest_of_the_other_job_is_refused(tmp_path: Path):
    """An archive's folder read as a restore's output, or the reverse, would mix their rows."""
    restored = Location.parse(str(tmp_path / "restored" / "manifest"))
    write_part(restored, pa.table({"rel_path": ["a"], "status": ["ok"], "output_uri": ["x"]}))
    archive = Location.parse(str(tmp_path / "archive" / "manifest"))
    write_part(archive, pa.table({"rel_path": ["a"], "status": ["ok"], "lr_uri": ["y"]}))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/restored is a restore's output "):
        read_manifest(restored, ARCHIVE_SCHEMA)
    with pytest.raises(ValueError, match=rf"^{tmp_path}/archive is an archive \(`tadm archive`"):
        read_manifest(archive, RESTORE_SCHEMA)
    assert read_manifest(restored, RESTORE_SCHEMA)["output_uri"].to_pylist() == ["x"]


def stamped(rel_path: str, status: str, written_us: int | None) -> pa.Table:
    return pa.table(
        {
            "rel_path": [rel_path],
            "status": [status],
            "written_at": pa.array([written_us], pa.int64()).cast(WRITTEN_AT),
        }
    )


def test_newer_row_wins_over_an_older_row_in_a_later_part(tmp_path: Path):
    """A compaction of another job rewrites old rows into a part named after newer parts: the
    order is by written_at, which rewritten rows keep, not by part name."""
    manifest = Location.parse(str(tmp_path / "manifest"))
    write_part(manifest, stamped("x", "ok", 2_000))  # job B's newer row
    write_part(manifest, stamped("x", "error", 1_000))  # job A's older row, rewritten later
    write_part(manifest, stamped("y", "ok", None))  # a part from before written_at: oldest
    write_part(manifest, stamped("y", "error", 5))
    table = read_manifest(manifest, ARCHIVE_SCHEMA)
    assert dict(zip(table["rel_path"].to_pylist(), table["status"].to_pylist(), strict=True)) == {
        "x": "ok",
        "y": "error",
    }
    compact(manifest, ARCHIVE_SCHEMA)
    write_part(manifest, stamped("x", "skipped", 1_500))  # older than the compacted row
    assert read_manifest(manifest, ARCHIVE_SCHEMA)["status"].to_pylist() == ["ok", "error"]


def test_a_closed_writer_counts_exactly_the_rows_it_wrote(tmp_path: Path):
    """The job reads its counts with close(): rows that come after are refused, not counted
    and left unwritten (a send_rows task still running when a job stops early)."""
    manifest = Location.parse(str(tmp_path / "manifest"))
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_seconds=3600)
    assert writer.add([{"rel_path": "a", "status": "error"}, {"rel_path": "b", "status": "ok"}])
    assert writer.close() == {"error": 1, "ok": 1}
    assert not writer.add([{"rel_path": "c", "status": "error"}])
    assert writer.taken() == {"error": 1, "ok": 1}
    writer.flush()
    assert sorted(read_manifest(manifest, ARCHIVE_SCHEMA)["rel_path"].to_pylist()) == ["a", "b"]


def test_writer_stamps_each_add_later_than_the_last(tmp_path: Path):
    manifest = Location.parse(str(tmp_path / "manifest"))
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA)
    for status in ("error", "ok"):
        writer.add([{"rel_path": "x", "status": status}])
    writer.add(pa.table({"rel_path": ["y", "z"], "status": ["ok", "ok"]}))
    writer.flush()
    (part,) = list_parts(manifest)
    stamps = pq.read_table(part)["written_at"].to_pylist()
    assert stamps[0] < stamps[1] < stamps[2] == stamps[3]
    assert read_manifest(manifest, ARCHIVE_SCHEMA)["status"].to_pylist() == ["ok", "ok", "ok"]


def test_large_manifest_compacts_bucket_by_bucket_into_several_parts(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(buckets_module, "MEMORY_ROWS", 50)
    monkeypatch.setattr(manifest_module, "PART_ROWS", 120)
    manifest = Location.parse(str(tmp_path / "manifest"))
    paths = [f"d{i % 7}/img{i:03d}.png" for i in range(300)]
    for run, status in enumerate(("error", "ok")):
        writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=40)
        for path in paths[: 300 - 100 * run]:
            writer.add([{"rel_path": path, "status": status, "width": run}])
        writer.flush()
    expected = {p: "ok" if i < 200 else "error" for i, p in enumerate(paths)}
    merged = read_manifest(manifest, ARCHIVE_SCHEMA)
    assert merged["rel_path"].to_pylist() == sorted(paths)  # in rel_path order
    assert (
        dict(zip(merged["rel_path"].to_pylist(), merged["status"].to_pylist(), strict=True))
        == expected
    )

    compact(manifest, ARCHIVE_SCHEMA)
    parts = list_parts(manifest)
    assert len(parts) == 3  # 300 rows, at most 120 a part
    table = pq.read_table(tmp_path / "manifest")  # any Parquet reader: one row per image
    assert sorted(table["rel_path"].to_pylist()) == sorted(paths)
    assert (
        dict(zip(table["rel_path"].to_pylist(), table["status"].to_pylist(), strict=True))
        == expected
    )
    assert read_manifest(manifest, ARCHIVE_SCHEMA, columns=["status"]).column_names == [
        "rel_path",
        "status",
        "written_at",
    ]


def test_a_manifest_on_another_disk_than_the_temporary_folder_compacts(tmp_path, monkeypatch):
    """A DST on its own disk (an NFS or EBS mount) is the rule: a compacted part is spooled
    beside the parts, not in the temporary folder, from which a rename fails across disks."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        monkeypatch.setattr(tempfile, "tempdir", elsewhere)
        manifest = Location.parse(str(tmp_path / "manifest"))
        for status in ("error", "ok"):
            writer = ManifestWriter(manifest, ARCHIVE_SCHEMA)
            writer.add([{"rel_path": "x", "status": status}])
            writer.flush()
        compact(manifest, ARCHIVE_SCHEMA)
        assert os.listdir(elsewhere) == []
    (part,) = list_parts(manifest)
    assert pq.read_table(part)["status"].to_pylist() == ["ok"]
    assert sorted(os.listdir(tmp_path / "manifest")) == [os.path.basename(part)]


def test_an_s3_manifest_compacts_through_a_local_spool(s3_env: str):
    make_bucket(s3_env, "compact")
    manifest = Location.parse("s3://compact/archive/manifest")
    for status in ("error", "ok"):
        writer = ManifestWriter(manifest, ARCHIVE_SCHEMA)
        writer.add([{"rel_path": "x", "status": status}])
        writer.flush()
    compact(manifest, ARCHIVE_SCHEMA)
    (part,) = list_parts(manifest)
    assert read_manifest(manifest, ARCHIVE_SCHEMA)["status"].to_pylist() == ["ok"]
    assert manifest.filesystem().ls(manifest.root) == [part]


def test_a_compaction_that_fails_midway_leaves_the_rows_and_no_temporary(tmp_path, monkeypatch):
    """The disk full halfway: the parts it replaces stay, with a part it published, whose
    duplicates read_manifest resolves; the part it was writing leaves no temporary file."""
    monkeypatch.setattr(buckets_module, "MEMORY_ROWS", 50)
    monkeypatch.setattr(manifest_module, "PART_ROWS", 120)
    manifest = Location.parse(str(tmp_path / "manifest"))
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA, flush_rows=40)
    for i in range(300):
        writer.add([{"rel_path": f"img{i:03d}.png", "status": "ok"}])
    writer.flush()
    before = read_manifest(manifest, ARCHIVE_SCHEMA).drop_columns(["written_at"])
    buckets, real = [], manifest_module.latest

    def latest(table: pa.Table) -> pa.Table:
        buckets.append(table)
        if sum(map(len, buckets)) > 200:  # after a part of 120 rows was published
            raise OSError(28, "No space left on device")
        return real(table)

    monkeypatch.setattr(manifest_module, "latest", latest)
    with pytest.raises(OSError, match="No space left on device"):
        compact(manifest, ARCHIVE_SCHEMA)
    monkeypatch.setattr(manifest_module, "latest", real)
    assert len(list_parts(manifest)) == 8 + 1  # 300 rows in parts of 40, and one new part
    assert [name for name in os.listdir(tmp_path / "manifest") if name.startswith(".")] == []
    after = read_manifest(manifest, ARCHIVE_SCHEMA).drop_columns(["written_at"])
    assert after.equals(before)


def test_a_part_that_cannot_be_written_names_itself(tmp_path):
    (tmp_path / "manifest").write_text("a file in the way")
    table = to_table([{"rel_path": "a.png", "status": "ok"}], ARCHIVE_SCHEMA)
    with pytest.raises(OSError, match=r"^manifest part .*/manifest/part-.*\.parquet cannot be "):
        write_part(Location.parse(str(tmp_path / "manifest")), table)


def test_many_small_parts_are_read_together_in_order(tmp_path: Path, monkeypatch):
    """A killed job's many small parts are read PART_READERS at once and joined into tables
    of batch_rows; a compacted part larger than that is streamed; the order parts and rows
    were written in (SEQ) is kept, so the latest row of a rel_path still wins."""
    monkeypatch.setattr(manifest_module, "PART_READERS", 3)
    manifest = Location.parse(str(tmp_path / "manifest"))
    write_part(manifest, pa.table({"rel_path": [f"r{i}" for i in range(12)], "width": [0] * 12}))
    for part in range(1, 30):  # r<part % 12> rewritten by each: the last part's wins
        rel_paths = [f"r{part % 12}", f"s{part}"]
        write_part(manifest, pa.table({"rel_path": rel_paths, "width": [part, part]}))
    parts = list_parts(manifest)
    small = max(os.path.getsize(part) for part in parts[1:])
    monkeypatch.setattr(manifest_module, "SMALL_PART_BYTES", small)  # the first is large
    tables = list(manifest_module.read_parts(manifest, parts, ARCHIVE_SCHEMA, batch_rows=10))
    assert [len(t) for t in tables] == [10] * 7  # the large part streamed, all rows joined
    seq = pa.concat_tables(tables)[manifest_module.SEQ].to_pylist()
    assert seq == sorted(seq) and seq[:12] == list(range(12)) and seq[12] == 1 << 32
    rows = {r["rel_path"]: r["width"] for r in read_manifest(manifest, ARCHIVE_SCHEMA).to_pylist()}
    assert rows["r5"] == 29 and rows["r0"] == 24 and rows["s7"] == 7 and len(rows) == 12 + 29
