"""Buckets: a stable hash of rel_path, rows kept in memory or spilled, and buckets that line up."""

from __future__ import annotations

import fcntl
import os
import tempfile

import numpy as np
import pyarrow as pa

import pipeline.buckets as buckets_module
from pipeline.buckets import SPILL_BUCKETS, Buckets, bucket_of, string_hash

SCHEMA = pa.schema([("rel_path", pa.string()), ("n", pa.int64())])


def table(paths: list[str]) -> pa.Table:
    return pa.table({"rel_path": paths, "n": list(range(len(paths)))}, schema=SCHEMA)


def test_hash_is_stable_and_sees_every_byte():
    paths = pa.array(["a.png", "b.png", "ab", "ba", "", None, "dir/" + "x" * 300])
    assert string_hash(paths).tolist() == string_hash(pa.array(paths.to_pylist())).tolist()
    assert string_hash(paths.slice(2, 2)).tolist() == string_hash(paths).tolist()[2:4]
    assert len(set(string_hash(paths[:4]).tolist())) == 4
    long = "d/" * 400 + "img.jpg"
    changed = [long[:k] + "e" + long[k + 1 :] for k in (0, 400, len(long) - 1)]
    assert len(set(string_hash(pa.array([long, *changed])).tolist())) == 4
    # a string's hash is its own, whatever strings are beside it (empty or null ones too)
    for neighbours in ([""], [None], ["", "x"], ["x", ""]):
        assert string_hash(pa.array(["abc", *neighbours]))[0] == string_hash(pa.array(["abc"]))[0]
        assert string_hash(pa.array([*neighbours, "abc"]))[-1] == string_hash(pa.array(["abc"]))[0]
    # a fixed value: the same in every process and run, so spilled buckets line up
    assert int(string_hash(pa.array(["a/b.jpg"]))[0]) == 4159554631449719084


def test_case_and_unicode_variants_share_a_bucket():
    nfc, nfd = "caf\u00e9.png", "cafe\u0301.png"
    buckets = bucket_of(pa.array(["A.png", "a.png", nfc, nfd]), SPILL_BUCKETS)
    assert buckets[0] == buckets[1] and buckets[2] == buckets[3]


def test_buckets_spread_evenly():
    paths = pa.array([f"d{i % 97}/img_{i:07d}.jpg" for i in range(64_000)])
    counts = np.bincount(bucket_of(paths, 64), minlength=64)
    assert counts.min() > 800 and counts.max() < 1200


def test_long_paths_sharing_all_but_a_middle_folder_spread_evenly():
    paths = pa.array([f"{'x' * 500}/{i}/{'y' * 500}.jpg" for i in range(64_000)])
    counts = np.bincount(bucket_of(paths, 64), minlength=64)
    assert counts.min() > 800 and counts.max() < 1200


def test_small_tables_stay_in_memory_and_split_on_demand():
    with Buckets(SCHEMA) as buckets:
        buckets.add(table(["a", "b", "c"]))
        assert buckets.n == 1 and buckets.folder is None
        assert buckets.bucket(0, 1)["rel_path"].to_pylist() == ["a", "b", "c"]
        split = [buckets.bucket(k, 4)["rel_path"].to_pylist() for k in range(4)]
        assert sorted(sum(split, [])) == ["a", "b", "c"]
        assert split[int(bucket_of(pa.array(["b"]), 4)[0])].count("b") == 1


def test_large_tables_spill_to_files_removed_on_close(monkeypatch):
    monkeypatch.setattr(buckets_module, "STAGE_ROWS", 7)
    paths = [f"img{i}.png" for i in range(50)]
    buckets = Buckets(SCHEMA, memory_rows=10)
    for start in range(0, 50, 5):
        buckets.add(table(paths[start : start + 5]))
    assert buckets.n == SPILL_BUCKETS and buckets.rows == 50
    folder = buckets.folder
    got = [buckets.bucket(k, buckets.n) for k in range(buckets.n)]
    assert sorted(pa.concat_tables(got)["rel_path"].to_pylist()) == sorted(paths)
    for k, part in enumerate(got):
        assert set(bucket_of(part["rel_path"], SPILL_BUCKETS).tolist()) <= {k}
    buckets.close()
    assert not os.path.exists(folder)


def test_rows_of_long_paths_spill_by_their_bytes(monkeypatch):
    """Rows of 1,000-character paths take ten times the memory of short ones: they spill past
    MEMORY_BYTES however few they are, and are staged by their bytes too."""
    monkeypatch.setattr(buckets_module, "MEMORY_BYTES", 40_000)
    monkeypatch.setattr(buckets_module, "STAGE_BYTES", 20_000)
    paths = [f"{'x' * 1000}/img{i}.png" for i in range(100)]
    with Buckets(SCHEMA) as buckets:
        buckets.add(table(paths[:30]))
        assert buckets.folder is None  # 30 kB
        buckets.add(table(paths[30:60]))
        assert buckets.n == SPILL_BUCKETS and not buckets.tables  # 60 kB: spilled, none staged
        buckets.add(table(paths[60:70]))
        assert buckets.staged == 10
        got = pa.concat_tables(buckets.bucket(k, buckets.n) for k in range(buckets.n))
        assert sorted(got["rel_path"].to_pylist()) == sorted(paths[:70])


def test_a_spill_removes_the_spilled_buckets_no_process_uses(tmp_path, monkeypatch):
    """A job killed with kill -9 never closes its buckets: the next spill removes them, not
    the folder of a job still running (its lock held, in whatever process namespace or host),
    nor one too new to be locked yet, nor a folder of no lock."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folders = {name: tmp_path / f"tadm-buckets-{name}" for name in ("gone", "live", "new", "odd")}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "0.parquet").write_bytes(b"spilled")
        if name != "odd":
            (folder / ".lock").write_bytes(b"")
        if name != "new":
            os.utime(folder, (1.6e9, 1.6e9))
    held = os.open(folders["live"] / ".lock", os.O_RDONLY)  # another open file: another job
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with Buckets(SCHEMA, memory_rows=1) as buckets:
            buckets.add(table(["a", "b"]))
            assert buckets.folder is not None and os.path.isfile(f"{buckets.folder}/.lock")
            left = {folder.name for folder in folders.values() if folder.exists()}
            assert left == {"tadm-buckets-live", "tadm-buckets-new", "tadm-buckets-odd"}
            spilled = buckets.folder
        assert not os.path.exists(spilled)
    finally:
        os.close(held)
