"""Files under an archive's lr/ and kept/ that no manifest row records."""

from __future__ import annotations

import pytest

import pipeline.buckets as buckets_module
from pipeline.fixity import UNRECORDED, check_archive
from pipeline.format import ARCHIVE_SCHEMA
from pipeline.manifest import merged, to_table, write_part
from pipeline.storage import Location


@pytest.mark.parametrize("memory_rows", [10**6, 3])  # one bucket in memory; spilled
def test_unrecorded_files_are_named_however_the_listing_is_cut(tmp_path, monkeypatch, memory_rows):
    monkeypatch.setattr(buckets_module, "MEMORY_ROWS", memory_rows)
    archived = [f"d{i % 3}/img{i}.jpg" for i in range(20)]
    kept = ["notes.txt", "d1/Img4.JPG"]  # a name like an archived one's in another case
    rows = [{"rel_path": p, "status": "ok", "lr_sha256": "0" * 64} for p in archived]
    rows += [{"rel_path": p, "status": "kept", "kept_uri": f"kept/{p}"} for p in kept]
    lost = ["d0/lost.jpg", "img4.jpg"]  # files of rows a lost manifest part held
    for key in [f"lr/{p}.png" for p in archived + lost] + [f"kept/{p}" for p in kept + lost]:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    (tmp_path / "lr" / "d0" / f".x.png.{'0' * 32}.tmp").write_bytes(b"a write's")
    archive = Location.parse(str(tmp_path))
    write_part(archive.child("manifest"), to_table(rows, ARCHIVE_SCHEMA))
    with merged(archive.child("manifest"), ARCHIVE_SCHEMA) as manifest:
        fixity = check_archive(archive, manifest)
    found = [(p["rel_path"], p["file"]) for p in fixity.problems if p["problem"] == UNRECORDED]
    assert found == sorted([(p, f"lr/{p}.png") for p in lost] + [(p, f"kept/{p}") for p in lost])
    assert fixity.unrecorded == 4 and fixity.problems[-4:] == [
        {"rel_path": p, "file": f, "problem": UNRECORDED} for p, f in found
    ]
