"""The archive plan's split of one bucket, without Ray: listing errors, collisions, the skip."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_bucket, write_tree

from pipeline.archive.plan import ArchiveConfig, ArchiveJob, collisions, prepare_archive
from pipeline.buckets import Buckets
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, TRANSPARENT_REASON
from pipeline.job import OUTPUT_SCHEMA
from pipeline.manifest import to_table, write_part
from pipeline.sources import LISTING_SCHEMA
from pipeline.storage import Location

MODEL = "m1"
T1, T2 = 1_700_000_000_000_000, 1_700_000_500_000_000
T1_TIME = pa.scalar(T1, pa.timestamp("us", tz="UTC")).as_py()


def plan(tmp_path: Path, verify: bool = False) -> ArchiveJob:
    src, dst = Location.parse(str(tmp_path / "src")), Location.parse(str(tmp_path / "dst"))
    config = ArchiveConfig(src=src.uri, dst=dst.uri, verify=verify)
    return ArchiveJob(
        config=config,
        dst=dst,
        options={},
        model_ref="m",
        model_id=MODEL,
        src=src,
        scale=16,
        sources=Buckets(LISTING_SCHEMA),
        prefix=src.root + "/",
    )


def listing(rows: list[tuple]) -> pa.Table:
    """(rel_path, size, mtime us, etag, error) rows."""
    names = LISTING_SCHEMA.names
    table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
    return table.cast(LISTING_SCHEMA)


def manifest(rows: list[dict]) -> pa.Table:
    base = {"status": "ok", "scale": 16, "model_id": MODEL, "lr_bytes": 7, "psnr": 30.0}
    return to_table([base | r for r in rows], ARCHIVE_SCHEMA)


def lr_files(rel_paths: list[str]) -> pa.Table:
    n = len(rel_paths)
    return pa.table({"rel_path": rel_paths, "size": [7] * n, "kind": ["lr"] * n}, OUTPUT_SCHEMA)


def test_collisions_name_each_other_and_nothing_else_collides():
    table = listing(
        [
            ("A.png", 1, None, None, None),
            ("a.png", 1, None, None, None),
            ("caf\u00e9.png", 1, None, None, None),
            ("cafe\u0301.png", 1, None, None, None),
            ("x.png", 1, None, None, None),
            ("X.png", None, None, None, "broken symbolic link"),  # an error row: not a file
        ]
    )
    found = collisions(table).to_pylist()
    assert "collides with 'a.png'" in found[0] and "collides with 'A.png'" in found[1]
    assert "cafe\u0301.png" in found[2] and "caf\u00e9.png" in found[3]
    assert found[4:] == [None, None]
    assert collisions(table.slice(4)).to_pylist() == [None, None]


def test_a_name_archived_before_keeps_its_place_beside_one_that_collides_with_it(
    tmp_path: Path,
):
    """Photo.jpg was archived; photo.jpg appears beside it. Photo.jpg stays archived (its row
    is not made an error), photo.jpg is the error."""
    job = plan(tmp_path)
    images = listing([("Photo.jpg", 10, T1, None, None), ("photo.jpg", 10, T1, None, None)])
    done = manifest([{"rel_path": "Photo.jpg", "source_bytes": 10, "source_mtime": T1}])
    written, todo = job.split(images, done, lr_files(["Photo.jpg"]))
    rows = {r["rel_path"]: r for r in written.to_pylist()}
    assert rows["Photo.jpg"]["status"] == "skipped" and todo.num_rows == 0
    assert rows["photo.jpg"]["status"] == "error"
    assert "collides with 'Photo.jpg', archived already" in rows["photo.jpg"]["error"]
    assert "rename this one" in rows["photo.jpg"]["error"]
    # --overwrite redoes Photo.jpg, and it keeps its place still.
    again = replace(job, config=replace(job.config, overwrite=True))
    written, todo = again.split(images, done, lr_files(["Photo.jpg"]))
    assert written["rel_path"].to_pylist() == ["photo.jpg"]
    assert todo["rel_path"].to_pylist() == ["Photo.jpg"]
    # Neither archived before: both are errors, as ever.
    written, todo = job.split(images, None, lr_files([]))
    assert written["status"].to_pylist() == ["error", "error"] and todo.num_rows == 0


def test_split_skips_what_is_finished_and_redoes_what_changed(tmp_path: Path):
    job = plan(tmp_path)
    images = listing(
        [
            ("same.png", 10, T1, None, None),
            ("edited.png", 10, T2, None, None),  # same size, another mtime
            ("resized.png", 11, T1, None, None),
            ("no-lr.png", 10, T1, None, None),
            ("other-model.png", 10, T1, None, None),
            ("old-row.png", 10, T2, None, None),  # row from before source_mtime: size only
            ("failed.png", 10, T1, None, None),
            ("new.png", 10, T1, None, None),
            ("s3.png", 10, T2, "e1", None),  # ETag equal: mtime not compared
            ("s3-edited.png", 10, T1, "e2", None),
            ("link-dir", None, None, None, "symbolic link to a folder, not followed"),
        ]
    )
    rows = [
        {"rel_path": p, "source_bytes": 10, "source_mtime": T1}
        for p in ("same.png", "edited.png", "resized.png", "no-lr.png")
    ]
    rows += [
        {"rel_path": "other-model.png", "source_bytes": 10, "model_id": "m0"},
        {"rel_path": "old-row.png", "source_bytes": 10},
        {"rel_path": "failed.png", "source_bytes": 10, "status": "error"},
        {"rel_path": "s3.png", "source_bytes": 10, "source_mtime": T1, "source_etag": "e1"},
        {"rel_path": "s3-edited.png", "source_bytes": 10, "source_etag": "e1"},
    ]
    lr = [p for p in images["rel_path"].to_pylist() if p != "no-lr.png"]
    outputs = lr_files(lr)
    written, todo = job.split(images, manifest(rows), outputs)
    statuses = dict(
        zip(written["rel_path"].to_pylist(), written["status"].to_pylist(), strict=True)
    )
    assert statuses == {
        "link-dir": "error",
        "same.png": "skipped",
        "old-row.png": "skipped",
        "s3.png": "skipped",
    }
    assert written.schema == ARCHIVE_SCHEMA
    skipped = written.filter(pa.compute.equal(written["status"], "skipped"))
    assert skipped["source_uri"].to_pylist()[0].startswith(str(tmp_path / "src") + "/")
    assert sorted(todo["rel_path"].to_pylist()) == sorted(
        ["edited.png", "resized.png", "no-lr.png", "other-model.png", "failed.png", "new.png",
         "s3-edited.png"]
    )  # fmt: skip
    assert todo.column_names == ["rel_path", "size", "etag", "mtime", "outputs"]
    # The kinds of output DST holds for each image to run: the write stage removes a stale one.
    held = dict(zip(todo["rel_path"].to_pylist(), todo["outputs"].to_pylist(), strict=True))
    assert held["edited.png"] == "lr" and held["no-lr.png"] == ""
    assert todo["mtime"].type == pa.int64()

    written, todo = job.split(images, None, outputs)  # --overwrite: only the listing errors
    assert written["rel_path"].to_pylist() == ["link-dir"] and len(todo) == len(images) - 1


def test_verify_redoes_rows_without_psnr(tmp_path: Path):
    images = listing([("a.png", 10, T1, None, None)])
    rows = manifest([{"rel_path": "a.png", "source_bytes": 10, "source_mtime": T1, "psnr": None}])
    outputs = lr_files(["a.png"])
    assert len(plan(tmp_path).split(images, rows, outputs)[1]) == 0
    assert len(plan(tmp_path, verify=True).split(images, rows, outputs)[1]) == 1


def test_kept_sources_and_the_quality_floor(tmp_path: Path):
    images = listing([(p, 10, T1, None, None) for p in ("kept.txt", "gone.txt", "low.png")])
    rows = manifest(
        [
            {"rel_path": "kept.txt", "status": "kept", "kept_uri": "k", "source_bytes": 10},
            {"rel_path": "gone.txt", "status": "kept", "kept_uri": "k", "source_bytes": 10},
            {"rel_path": "low.png", "source_bytes": 10, "psnr": 15.0},
        ]
    )
    rows = rows.set_column(  # kept by --keep-failed, the model never ran: no psnr
        rows.column_names.index("psnr"), "psnr", pa.array([None, None, 15.0], pa.float64())
    )
    outputs = pa.concat_tables(
        [
            lr_files(["low.png"]),
            pa.table({"rel_path": ["kept.txt"], "size": [10], "kind": ["kept"]}, OUTPUT_SCHEMA),
        ]
    )
    job = plan(tmp_path)
    written, todo = job.split(images, rows, outputs)
    assert sorted(written["rel_path"].to_pylist()) == ["kept.txt", "low.png"]
    assert todo["rel_path"].to_pylist() == ["gone.txt"]  # its kept file is not there
    floor = ArchiveJob(**{**job.__dict__, "config": replace(job.config, min_psnr=18.0)})
    assert sorted(floor.split(images, rows, outputs)[1]["rel_path"].to_pylist()) == [
        "gone.txt",
        "low.png",  # below the floor now asked for
    ]


def test_a_lower_floor_archives_what_a_higher_one_kept(tmp_path: Path):
    """Kept at --min-psnr 18 (psnr 15, 12; ssim 0.3): a re-run at --min-psnr 14 shrinks the one
    whose recorded psnr meets it; not one kept for its transparent pixels, nor one kept for
    another reason (no psnr), nor any without a floor."""
    names = ("fifteen.png", "twelve.png", "logo.png", "tail.jpg")
    images = listing([(p, 10, T1, None, None) for p in names])
    kept = {"status": "kept", "kept_uri": "k", "source_bytes": 10, "ssim": 0.3}
    rows = manifest(
        [
            kept | {"rel_path": "fifteen.png", "psnr": 15.0, "kept_reason": "psnr 15.00 dB below"},
            kept | {"rel_path": "twelve.png", "psnr": 12.0, "kept_reason": "psnr 12.00 dB below"},
            kept | {"rel_path": "logo.png", "psnr": 30.0, "kept_reason": TRANSPARENT_REASON},
            kept | {"rel_path": "tail.jpg", "psnr": None, "kept_reason": "bytes after"},
        ]
    )
    outputs = pa.table(
        {"rel_path": list(names), "size": [10] * 4, "kind": ["kept"] * 4}, OUTPUT_SCHEMA
    )
    job = plan(tmp_path)
    assert len(job.split(images, rows, outputs)[1]) == 0  # no floor: as they are
    for min_psnr, min_ssim, redone in (
        (14.0, None, ["fifteen.png"]),
        (14.0, 0.2, ["fifteen.png"]),
        (14.0, 0.5, []),
        (None, 0.2, ["fifteen.png", "twelve.png"]),
    ):
        config = replace(job.config, min_psnr=min_psnr, min_ssim=min_ssim)
        lower = ArchiveJob(**{**job.__dict__, "config": config})
        assert sorted(lower.split(images, rows, outputs)[1]["rel_path"].to_pylist()) == redone


def test_a_floor_redoes_an_image_shrunk_with_its_transparent_pixels(tmp_path: Path):
    """Archived without a floor (--verify), its alpha dropped: a floor keeps it now, whatever
    its psnr; an alpha channel opaque throughout lost nothing and is skipped."""
    images = listing([(p, 10, T1, None, None) for p in ("logo.png", "opaque.png")])
    rows = manifest(
        [
            {
                "rel_path": "logo.png",
                "source_bytes": 10,
                "conversion": "RGBA -> RGB, alpha dropped",
            },
            {
                "rel_path": "opaque.png",
                "source_bytes": 10,
                "conversion": "RGBA -> RGB, its alpha opaque throughout",
            },
        ]
    )
    outputs = lr_files(["logo.png", "opaque.png"])
    job = plan(tmp_path, verify=True)
    assert len(job.split(images, rows, outputs)[1]) == 0
    floor = ArchiveJob(**{**job.__dict__, "config": replace(job.config, min_psnr=5.0)})
    assert floor.split(images, rows, outputs)[1]["rel_path"].to_pylist() == ["logo.png"]


def test_earlier_permanent_failures_are_carried_unless_retried(tmp_path: Path):
    """A re-run writes an earlier permanent failure again as it was (with its written_at, so
    the job counts it apart); a transient one, or any with --retry-errors, is done again."""
    images = listing(
        [
            ("corrupt.png", 10, T1, None, None),
            ("io.png", 10, T1, None, None),
            ("edited.png", 11, T1, None, None),  # another size: a new input
            ("link-dir", None, None, None, "symbolic link to a folder, not followed"),
        ]
    )
    error = {"status": "error", "error_kind": "permanent", "source_bytes": 10, "lr_bytes": None}
    rows = manifest(
        [
            error | {"rel_path": "corrupt.png", "error": "not a readable image"},
            error | {"rel_path": "io.png", "error": "timeout", "error_kind": "transient"},
            error | {"rel_path": "edited.png", "error": "not a readable image"},
            error | {"rel_path": "link-dir", "error": "symbolic link to a folder, not followed"},
        ]
    )
    rows = rows.set_column(
        ARCHIVE_SCHEMA.get_field_index("written_at"),
        "written_at",
        pa.array([T1] * 4, pa.timestamp("us", tz="UTC")),
    )
    written, todo = plan(tmp_path).split(images, rows, lr_files([]))
    carried = {r["rel_path"]: r for r in written.to_pylist()}
    assert set(carried) == {"corrupt.png", "link-dir"}
    assert all(r["status"] == "error" and r["written_at"] is not None for r in carried.values())
    assert sorted(todo["rel_path"].to_pylist()) == ["edited.png", "io.png"]

    retry = plan(tmp_path)
    retry = replace(retry, config=replace(retry.config, retry_errors=True))
    written, todo = retry.split(images, rows, lr_files([]))
    assert written["rel_path"].to_pylist() == ["link-dir"]  # found again: this run's error
    assert written["written_at"].to_pylist() == [None]
    assert len(todo) == 3


def test_what_keep_failed_cannot_keep_either_is_its_own_error_saying_rename(tmp_path: Path):
    """A name no store holds (a backslash, a tab, a case collision) fails every run the same:
    carried as an earlier failure without --keep-failed, but an error of a --keep-failed run,
    which keeps every file and cannot keep these; each says to rename the file."""
    names = ["A.png", "a.png", "back\\slash.png", "tab\t.png"]
    images = listing([(p, 5, T1, None, None) for p in names])
    written, todo = plan(tmp_path).split(images, None, lr_files([]))
    assert len(todo) == 0 and written["status"].to_pylist() == ["error"] * 4
    assert all("rename" in e for e in written["error"].to_pylist())
    rows = written.set_column(
        ARCHIVE_SCHEMA.get_field_index("written_at"),
        "written_at",
        pa.array([T1] * 4, pa.timestamp("us", tz="UTC")),
    )
    carried, _ = plan(tmp_path).split(images, rows, lr_files([]))
    assert carried["written_at"].to_pylist() == [T1_TIME] * 4
    job = plan(tmp_path)
    keep_failed = replace(job, config=replace(job.config, keep_failed=True))
    written, todo = keep_failed.split(images, rows, lr_files([]))
    assert len(todo) == 0 and written["written_at"].to_pylist() == [None] * 4
    assert written["error"].to_pylist() == rows["error"].to_pylist()


def test_paths_that_could_leave_src_are_error_rows_never_read(tmp_path: Path):
    """Listed paths (an inventory's keys) that are not plain relative paths: each is a
    permanent error row of the plan with its listed size, so a re-run carries it."""
    odd = ["../secret.png", "d/../../s.png", "./c.png", "a//b.png", "d\\b.png", "nul\x00.png"]
    images = listing([(p, 5, T1, None, None) for p in ["a.png", *odd]])
    written, todo = plan(tmp_path).split(images, None, lr_files([]))
    assert todo["rel_path"].to_pylist() == ["a.png"]
    rows = {r["rel_path"]: r for r in written.to_pylist()}
    assert set(rows) == set(odd)
    for rel_path, row in rows.items():
        assert row["status"] == "error" and row["error_kind"] == "permanent"
        assert row["error"].startswith(f"path {rel_path!r} ") and "refused" in row["error"]
        assert row["source_bytes"] == 5  # as listed: a re-run sees the same input


def test_other_archives_inside_src_are_not_archived_again(tiny_model, tmp_path: Path, caplog):
    """An archive written inside SRC by an earlier run (to another DST) holds LR PNGs, kept
    copies and manifests: none is a source. A restore's DST inside SRC is the user's images
    (its manifest apart: that is no image either way)."""
    part = "manifest/part-00000000000000000001-0123abcd.parquet"
    src = write_tree(
        tmp_path / "src",
        {
            "a.png": b"1",
            "old/lr/a.png.png": b"2",
            "old/kept/b.png": b"3",
            "old/notes.png": b"4",  # beside the archive's folders: SRC's own
            "restored/lr/c.png.png": b"5",  # a restore of an image in SRC's lr/ folder
            "mine/lr/d.png": b"6",  # beside a Parquet file of the user's, named as a part
        },
    )
    mine = pa.schema([("lr_sha256", pa.string()), ("kept_uri", pa.string())])
    for folder, schema in (("old", ARCHIVE_SCHEMA), ("restored", RESTORE_SCHEMA), ("mine", mine)):
        (src / folder / "manifest").mkdir()
        pq.write_table(schema.empty_table(), src / folder / part)
    config = ArchiveConfig(src=str(src), dst=str(tmp_path / "dst"), model=tiny_model)
    with caplog.at_level(logging.WARNING, logger="tadm"):
        job = prepare_archive(config)
    rel_paths = job.sources.bucket(0, job.sources.n)["rel_path"].to_pylist()
    assert sorted(rel_paths) == ["a.png", "mine/lr/d.png", "old/notes.png", "restored/lr/c.png.png"]
    assert (
        "archive: SRC holds 1 other archive ('old/'): its lr/, kept/ and manifest/ folders are "
        "not archived (--keep-failed takes them in)" in caplog.messages
    )
    # --keep-failed keeps every file: the earlier archive's kept/ may hold the only copies.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tadm"):
        with_every_file = prepare_archive(replace(config, keep_failed=True))
    rel_paths = with_every_file.sources.bucket(0, with_every_file.sources.n)["rel_path"]
    assert sorted(rel_paths.to_pylist()) == sorted(
        ["a.png", "old/lr/a.png.png", "old/kept/b.png", f"old/{part}", "old/notes.png"]
        + ["restored/lr/c.png.png", f"restored/{part}", "mine/lr/d.png", f"mine/{part}"]
    )
    assert caplog.messages == [
        "archive: SRC holds 1 other archive ('old/'): its lr/, kept/ and manifest/ folders are "
        "taken in as SRC's own files (--keep-failed)"
    ]


def test_a_src_that_does_not_exist_is_said_so(tiny_model, tmp_path: Path):
    config = ArchiveConfig(src=str(tmp_path / "nope"), dst=str(tmp_path / "dst"), model=tiny_model)
    with pytest.raises(ValueError, match=r"^SRC '.*/nope' does not exist$"):
        prepare_archive(config)


def test_a_relative_model_folder_is_given_to_the_model_actors_as_an_absolute_path(
    tiny_model, tmp_path: Path, monkeypatch
):
    """On a cluster the model actors run in another working folder than the driver's."""
    write_tree(tmp_path / "src", {"a.png": b"1"})
    monkeypatch.chdir(Path(tiny_model).parent)
    config = ArchiveConfig(
        src=str(tmp_path / "src"), dst=str(tmp_path / "dst"), model=Path(tiny_model).name
    )
    job = prepare_archive(config)
    assert job.model_ref == tiny_model
    assert job.stages().model_kwargs["model"] == tiny_model


@pytest.mark.parametrize("folder", ["lr", "kept", "manifest"])
def test_a_dst_inside_another_archives_folders_is_refused(folder, tiny_model, tmp_path: Path):
    """An archive written into another's lr/ would be files no row of that archive records."""
    src = write_tree(tmp_path / "src", {"a.png": b"x"})
    (tmp_path / "a1" / "manifest").mkdir(parents=True)
    pq.write_table(ARCHIVE_SCHEMA.empty_table(), tmp_path / "a1" / "manifest" / "part-0.parquet")
    (tmp_path / "link").symlink_to(tmp_path / "a1" / folder)
    for dst in (tmp_path / "a1" / folder / "x", tmp_path / "a1" / folder, tmp_path / "link"):
        config = ArchiveConfig(src=str(src), dst=str(dst), model=tiny_model)
        with pytest.raises(ValueError, match=rf"lies in the {folder}/ folder of archive '.*/a1'"):
            prepare_archive(config)
    # A restore's DST (its manifest is no archive's) and an archive's other folders are not.
    (tmp_path / "r" / "manifest").mkdir(parents=True)
    pq.write_table(RESTORE_SCHEMA.empty_table(), tmp_path / "r" / "manifest" / "part-0.parquet")
    for dst in (tmp_path / "r" / folder / "x", tmp_path / "a1" / "other" / "lr"):
        prepare_archive(ArchiveConfig(src=str(src), dst=str(dst), model=tiny_model))


def test_a_dst_inside_another_archives_lr_on_s3_is_refused(s3_env: str, tiny_model, tmp_path):
    make_bucket(s3_env, "nested")
    src = write_tree(tmp_path / "src", {"a.png": b"x"})
    dst = Location.parse("s3://nested/a1")
    write_part(dst.child("manifest"), ARCHIVE_SCHEMA.empty_table())
    config = ArchiveConfig(src=str(src), dst="s3://nested/a1/lr/x", model=tiny_model)
    with pytest.raises(ValueError, match=r"lies in the lr/ folder of archive 's3://nested/a1'"):
        prepare_archive(config)
    prepare_archive(replace(config, dst="s3://nested/a2/lr/x"))
