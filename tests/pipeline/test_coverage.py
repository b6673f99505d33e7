"""inspect --source: each file under SRC compared with its manifest row."""

from __future__ import annotations

import os

import pytest

import pipeline.buckets as buckets_module
from pipeline.coverage import check_source
from pipeline.format import ARCHIVE_SCHEMA
from pipeline.manifest import merged, to_table, write_part
from pipeline.storage import Location


@pytest.mark.parametrize("memory_rows", [10**6, 3])  # one bucket in memory; spilled
def test_each_file_meets_its_own_row_however_the_listing_is_cut(tmp_path, monkeypatch, memory_rows):
    monkeypatch.setattr(buckets_module, "MEMORY_ROWS", memory_rows)
    src = tmp_path / "src"
    rows = []
    for i in range(30):
        path = src / f"d{i % 4}" / f"img{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * i)
        mtime = os.stat(path).st_mtime_ns // 1000
        rows.append({"rel_path": f"d{i % 4}/img{i}.jpg", "status": "ok", "source_bytes": i})
        rows[-1]["source_mtime"] = mtime
    rows[5]["source_bytes"] = 99  # the file changed since
    rows[7] |= {"status": "error", "error": "corrupt"}
    del rows[9]  # a row a lost part held
    archive = Location.parse(str(tmp_path / "a"))
    write_part(archive.child("manifest"), to_table(rows, ARCHIVE_SCHEMA))
    with merged(archive.child("manifest"), ARCHIVE_SCHEMA) as manifest:
        coverage = check_source(Location.parse(str(src)), archive, manifest)
    assert (coverage.files, coverage.archived) == (30, 27)
    assert coverage.problems == [
        {"rel_path": "d1/img5.jpg", "problem": "changed since it was archived: archive SRC again"},
        {"rel_path": "d1/img9.jpg", "problem": "not archived: no manifest row (archive SRC again)"},
        {"rel_path": "d3/img7.jpg", "problem": "failed: corrupt"},
    ]
