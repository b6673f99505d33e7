"""The restore plan's checks that look across buckets: clashes, earlier outputs to remove."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.buckets import Buckets
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA
from pipeline.job import OUTPUT_SCHEMA
from pipeline.lease import Lease
from pipeline.manifest import to_table, write_part
from pipeline.restore.config import RestoreConfig
from pipeline.restore.plan import (
    ITEM_SCHEMA,
    RestoreJob,
    check_model,
    kept_clashes,
    kept_items,
    list_items,
    warn_if_written,
)
from pipeline.storage import Location, temp_stem


def items(rel_paths: list[str], kept: set[str], memory_rows: int) -> Buckets:
    """Restore items of `rel_paths`, those in `kept` kept sources."""
    columns = {f.name: pa.nulls(len(rel_paths), f.type) for f in ITEM_SCHEMA}
    columns["rel_path"] = pa.array(rel_paths, pa.string())
    columns["kept_uri"] = pa.array([f"kept/{p}" if p in kept else None for p in rel_paths])
    table = pa.table(columns, schema=ITEM_SCHEMA)
    return Buckets(ITEM_SCHEMA, memory_rows=memory_rows).extend([table])


def test_a_kept_source_named_as_an_images_output_clashes_with_it_in_any_bucket():
    names = [f"img{i}.jpg" for i in range(300)] + ["Img7.JPG.png", "img8.jpg.webp", "notes.txt"]
    kept = {"Img7.JPG.png", "img8.jpg.webp", "notes.txt"}
    for memory_rows in (10**6, 50):  # one bucket in memory; spilled to 64 buckets
        with items(names, kept, memory_rows) as buckets:
            assert buckets.n == (1 if memory_rows > 1000 else 64)
            clashes = kept_clashes(buckets, "png")
            assert set(clashes) == {"img7.jpg", "Img7.JPG.png"}  # a case-insensitive store's view
            assert clashes["img7.jpg"] == clashes["Img7.JPG.png"]
            assert "DST/img7.jpg.png, where the kept source 'Img7.JPG.png'" in clashes["img7.jpg"]
            assert set(kept_clashes(buckets, "webp")) == {"img8.jpg", "img8.jpg.webp"}


def restore_job(
    buckets: Buckets, dst: str, overwrite: bool = False, to_srgb: bool = False
) -> RestoreJob:
    config = RestoreConfig(archive="/archive", dst=dst, overwrite=overwrite, to_srgb=to_srgb)
    location = Location.parse(dst)
    return RestoreJob(config, location, {}, "tiny", "m1", Location.parse("/archive"), buckets, {})


def earlier_rows(dst: str, outputs: dict[str, str], skipped: set[str]) -> pa.Table:
    """An earlier restore's manifest rows: rel_path -> the key it wrote ("kept" rows for keys
    equal to their rel_path, the copy of a kept source); those in `skipped` as a restore in
    between left them, "skipped"."""
    rows = [
        {
            "rel_path": rel_path,
            "output_uri": f"{dst}/{key}",
            "status": "skipped" if rel_path in skipped else "kept" if key == rel_path else "ok",
            "model_id": "m1",
        }
        for rel_path, key in outputs.items()
    ]
    return to_table(rows, RESTORE_SCHEMA)


def test_an_image_restored_to_another_key_names_its_earlier_output_to_remove():
    dst = "/restored"
    # Then: "a.jpg" and "b.jpg" kept (copied), "c.jpg" and "d.jpg" restored; now the reverse.
    # "x.png" was kept and is an LR now, but "x" is an image restored to x.png: left alone.
    # "e.jpg" and "f.jpg" were restored as WebP and JPEG; now as PNG.
    names = [f"img{i}.jpg" for i in range(300)] + ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "x.png", "x"]
    names += ["e.jpg", "f.jpg"]
    kept_now = {"c.jpg", "d.jpg"}
    then = {"a.jpg": "a.jpg", "b.jpg": "b.jpg", "c.jpg": "c.jpg.png", "d.jpg": "d.jpg.png"}
    then |= {"x.png": "x.png", "e.jpg": "e.jpg.webp", "f.jpg": "f.jpg.jpeg"}
    # b.jpg and f.jpg.jpeg: gone
    held = {"a.jpg": "kept", "c.jpg": "image", "d.jpg": "image", "x.png": "kept", "e.jpg": "webp"}
    # One bucket in memory, or spilled to 64 buckets; with --overwrite too, which skips nothing.
    for memory_rows, overwrite in ((10**6, False), (50, False), (50, True)):
        with items(names, kept_now, memory_rows) as buckets:
            job = restore_job(buckets, dst, overwrite)
            n = buckets.n
            earlier = {}
            for k in range(n):
                bucket = buckets.bucket(k, n)
                done = earlier_rows(dst, then, skipped={"a.jpg", "d.jpg"})
                done = done.filter(pc.is_in(done["rel_path"], value_set=bucket["rel_path"]))
                outputs = pa.table(
                    {
                        "rel_path": list(held),
                        "size": [1] * len(held),
                        "kind": list(held.values()),
                    },
                    schema=OUTPUT_SCHEMA,
                )
                _, todo = job.split(bucket, done, outputs)
                pairs = zip(todo["rel_path"].to_pylist(), todo["earlier"].to_pylist(), strict=True)
                earlier |= dict(pairs)
            assert {k: v for k, v in earlier.items() if v} == {
                "a.jpg": "a.jpg",
                "c.jpg": "c.jpg.png",
                "d.jpg": "d.jpg.png",
                "e.jpg": "e.jpg.webp",
            }
            assert len(earlier) == len(names)


def test_an_archive_whose_images_all_failed_says_so(tmp_path):
    archive = Location.parse(str(tmp_path / "archive"))
    rows = [{"rel_path": "a.jpg", "status": "error", "error": "not a readable image"}]
    write_part(archive.child("manifest"), to_table(rows, ARCHIVE_SCHEMA))
    with pytest.raises(
        ValueError, match="the image in the manifest of ARCHIVE .* was not archived"
    ):
        list_items(archive, None)
    (tmp_path / "empty" / "lr").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no manifest rows and no LR PNGs"):
        list_items(Location.parse(str(tmp_path / "empty")), None)


def test_a_path_that_is_no_archive_is_said_so(tmp_path):
    """A user who gives the archive's lr/ folder, or a folder of images, is told what to
    give instead; a path that does not exist is said not to."""
    (tmp_path / "archive" / "lr").mkdir(parents=True)
    (tmp_path / "archive" / "lr" / "a.jpg.png").write_bytes(b"1")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photo.jpg").write_bytes(b"1")
    cases = {
        "nope": "ARCHIVE '{}/nope' does not exist",
        "photo.jpg": "ARCHIVE '{}/photo.jpg' is a file: give the archive's folder",
        "photos": "ARCHIVE '{}/photos' is not an archive: it has no lr/ or manifest/ (give the "
        "folder that holds them)",
        "archive/lr": "ARCHIVE '{}/archive/lr' is not an archive: it has no lr/ or manifest/ "
        "(this is an archive's lr/ folder: give the folder above it)",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError) as raised:
            list_items(Location.parse(str(tmp_path / path)), None)
        assert str(raised.value) == message.format(tmp_path)


def test_a_file_no_restore_of_the_image_wrote_is_in_the_way_unless_overwrite():
    """A user's file at an image's key in DST is never replaced without --overwrite: a first
    restore into a folder of files, or one whose file the image's latest row does not name."""
    dst = "/restored"
    names = ["a.jpg", "b.jpg", "c.jpg", "k.txt"]
    outputs = pa.table(
        {
            "rel_path": ["a.jpg", "b.jpg", "k.txt"],
            "size": [1, 1, 1],
            "kind": ["image", "image", "kept"],
        },
        schema=OUTPUT_SCHEMA,
    )
    done = earlier_rows(dst, {"b.jpg": "b.jpg.png"}, skipped=set())
    done = done.set_column(done.column_names.index("model_id"), "model_id", pa.array(["m0"]))
    i = done.column_names.index("output_sha256")
    done = done.set_column(i, "output_sha256", pa.array(["sha of b.jpg.png"]))
    with items(names, {"k.txt"}, 10**6) as buckets:
        bucket = buckets.bucket(0, 1)
        for earlier, overwrite, in_the_way in (
            (None, False, {"a.jpg", "b.jpg", "k.txt"}),  # no restore into DST before
            (done, False, {"a.jpg", "k.txt"}),  # b.jpg.png: b.jpg's restore wrote it
            (done, True, set()),
        ):
            _, todo = restore_job(buckets, dst, overwrite).split(bucket, earlier, outputs)
            pairs = zip(todo["rel_path"].to_pylist(), todo["in_the_way"].to_pylist(), strict=True)
            found = dict(pairs)
            assert {name for name, why in found.items() if why} == in_the_way
            # b.jpg.png is replaced only while it has the bytes b.jpg's restore recorded.
            pairs = zip(todo["rel_path"].to_pylist(), todo["replaces"].to_pylist(), strict=True)
            replaces = dict(pairs)
            sha = "sha of b.jpg.png" if earlier is not None and not overwrite else ""
            assert replaces == {"a.jpg": "", "b.jpg": sha, "c.jpg": "", "k.txt": ""}
            if in_the_way:
                assert found["a.jpg"].startswith(
                    "DST/a.jpg.png exists, no restore of this image into DST recorded it, and "
                )


def test_a_rerun_skips_what_an_earlier_restore_made_with_the_same_to_srgb():
    """Whatever notes follow the colour conversion's (a WebP's metadata not carried), a row
    --to-srgb made is that restore's, and only that."""
    dst = "/restored"
    conversions = {
        "p3.jpg": "ICC 'Display P3' -> sRGB",
        "nikon.jpg": """ICC "Nikon's sRGB" -> sRGB; when archived: CMYK -> RGB""",  # repr's
        "gamma.png": "PNG gAMA 1, cHRM -> sRGB; webp holds no comment: not carried",
        "plain.jpg": "no ICC profile: taken as sRGB; webp holds no photoshop: not carried",
        "chunk.png": "no ICC profile: taken as sRGB, as its PNG sRGB chunk says",
        "kept.jpg": "webp holds no photoshop: not carried",  # restored without --to-srgb
        "none.jpg": None,
    }
    done = earlier_rows(dst, {name: f"{name}.png" for name in conversions}, skipped=set())
    i = done.column_names.index("conversion")
    done = done.set_column(i, "conversion", pa.array(list(conversions.values()), pa.string()))
    outputs = pa.table(
        {"rel_path": list(conversions), "size": [1] * 7, "kind": ["image"] * 7},
        schema=OUTPUT_SCHEMA,
    )
    with items(list(conversions), set(), 10**6) as buckets:
        bucket = buckets.bucket(0, 1)
        for to_srgb, skipped in (
            (True, {"p3.jpg", "nikon.jpg", "gamma.png", "plain.jpg", "chunk.png"}),
            (False, {"kept.jpg", "none.jpg"}),
        ):
            job = restore_job(buckets, dst, to_srgb=to_srgb)
            done_now, todo = job.split(bucket, done, outputs)
            assert set(done_now["rel_path"].to_pylist()) == skipped
            assert set(todo["rel_path"].to_pylist()) == set(conversions) - skipped


def test_a_rerun_redoes_an_image_whose_lr_or_kept_source_the_archive_replaced():
    """An image archived again since (another photo at the same rel_path), or an archive of
    other images at the same rel_paths: its output, made from another LR or kept source, is
    restored again, as is an earlier permanent failure of another LR; where the LR restored
    from is not known (a row of an older restore, an archive without manifest), it is kept."""
    dst = "/restored"
    names = ["same.jpg", "new.jpg", "old-row.jpg", "unknown.jpg", "kept.txt", "new-kept.txt"]
    names += ["failed-same.jpg", "failed-new.jpg"]
    keys = {name: name if name.endswith(".txt") else f"{name}.png" for name in names}
    done = earlier_rows(dst, keys, skipped=set())
    then = ["a", "a", None, "a", None, None, "a", "a"]  # the LR restored from
    written = ["", "", "", "", "k", "k", "", ""]  # output_sha256: a kept source's
    done = done.set_column(done.column_names.index("lr_sha256"), "lr_sha256", pa.array(then))
    i = done.column_names.index("output_sha256")
    done = done.set_column(i, "output_sha256", pa.array(written))
    for column, value in (("status", "error"), ("error_kind", "permanent")):
        i = done.column_names.index(column)
        values = done[column].to_pylist()
        values[6:] = [value, value]
        done = done.set_column(i, column, pa.array(values, pa.string()))
    now_lr = ["a", "b", "b", None, None, None, "a", "b"]
    now_kept = [None, None, None, None, "k", "k2", None, None]
    outputs = pa.table(
        {"rel_path": names, "size": [1] * 8, "kind": ["kept" if k else "image" for k in now_kept]},
        schema=OUTPUT_SCHEMA,
    )
    with items(names, {"kept.txt", "new-kept.txt"}, 10**6) as buckets:
        bucket = buckets.bucket(0, 1)
        bucket = bucket.set_column(
            bucket.column_names.index("lr_sha256"), "lr_sha256", pa.array(now_lr, pa.string())
        )
        i = bucket.column_names.index("source_sha256")
        bucket = bucket.set_column(i, "source_sha256", pa.array(now_kept, pa.string()))
        done_now, todo = restore_job(buckets, dst).split(bucket, done, outputs)
    assert set(done_now["rel_path"].to_pylist()) == {
        "same.jpg",
        "old-row.jpg",
        "unknown.jpg",
        "kept.txt",
        "failed-same.jpg",
    }
    assert set(todo["rel_path"].to_pylist()) == {"new.jpg", "new-kept.txt", "failed-new.jpg"}


def test_a_model_that_made_none_of_the_lrs_is_refused_and_one_that_made_some_warns(caplog):
    archive = Location.parse("/archive")
    table = pa.table(
        {f.name: pa.nulls(4, f.type) for f in ITEM_SCHEMA}
        | {"rel_path": ["a", "b", "c", "k"], "model_id": ["m1", "m1", "m2", None]},
        schema=ITEM_SCHEMA,
    )
    recorded = Buckets(ITEM_SCHEMA).extend([table])
    with pytest.raises(ValueError) as refused:
        check_model(recorded, archive, "other", "m3")
    assert str(refused.value) == (
        "model 'other' (id m3) made none of the LRs of ARCHIVE '/archive': they were made by "
        "m1 (2 images), m2 (1 image); pass --model with the model that archived them"
    )
    with caplog.at_level(logging.WARNING, logger="tadm"):
        check_model(recorded, archive, "first", "m1")
    assert caplog.messages == [
        "restore: 1 of the 3 LRs to restore were made by other models than 'first' (id m1): "
        "m2 (1 image); they will be error rows (restore them with --model and --only)"
    ]
    nulls = pa.table({f.name: pa.nulls(4, f.type) for f in ITEM_SCHEMA}, schema=ITEM_SCHEMA)
    none_recorded = Buckets(ITEM_SCHEMA).extend([nulls])
    check_model(none_recorded, archive, "any", "m9")  # LR files alone: nothing to go by


def test_a_restore_of_an_archive_a_job_writes_into_warns(tmp_path, caplog):
    archive = Location.parse(str(tmp_path))
    warn_if_written(archive)  # no lease: no word
    with Lease(archive, "archive") as lease, caplog.at_level(logging.WARNING, logger="tadm"):
        warn_if_written(archive)
    assert caplog.messages == [
        f"restore: ARCHIVE {tmp_path} is held by archive on host {socket.gethostname()} pid "
        f"{os.getpid()} started {lease.record['started']}, which "
        "runs now or stopped before it finished: what it archives meanwhile fails here and a "
        "re-run restores it; what it has not archived is not restored"
    ]


def test_a_restore_takes_for_its_own_only_the_temporary_files_of_what_it_writes_now():
    """DST may be a folder of one's own files: of the files named as temporary ones, the
    restore takes for its own those of manifest/ and of the outputs it writes now (its to-do
    images in this --format, a kept source's copy, a long name's cut), which the write
    replaces anyway; not a user's hidden file named as one of an output it skips, of another
    format, of a source kept as it is, or of no image."""
    long = "é" * 40 + ".tif"  # 84 bytes: its temporary files hold its first 64 (63: é is 2)
    todo = pa.table(
        {
            "rel_path": ["a/b.jpg", "notes/notes.txt", f"d/{long}", "readme"],
            "kept_uri": ["", "/archive/kept/notes/notes.txt", "", ""],
        }
    )
    job = restore_job(items(["a/b.jpg"], set(), 10**6), "/restored")
    assert [folder.root for folder in job.temp_folders()] == ["/restored"]
    own = {
        "a/.b.jpg.png.{}.tmp",
        "manifest/.part-1.parquet.{}.tmp",
        "notes/.notes.txt.{}.tmp",  # a kept source's copy
        f"d/.{temp_stem(long + '.png')}.{{}}.tmp",
        ".readme.png.{}.tmp",
    }
    others = {
        ".draft.{}.tmp",  # no image named so
        "a/.b.jpg.{}.tmp",  # a/b.jpg is restored to a/b.jpg.png, not copied
        "a/.b.jpg.webp.{}.tmp",  # another --format
        ".b.jpg.png.{}.tmp",  # an image not restored now (skipped)
        ".notes.txt.{}.tmp",  # another folder
        "notes/.notes.txt.png.{}.tmp",  # a kept source is copied, not restored to an image
        "d/.{}.{{}}.tmp".format("é" * 31),  # a shorter name
        ".readme.tif.{}.tmp",
    }
    named = {key: key.format(uuid.uuid4().hex) for key in own | others}
    assert job.own_temps(set(named.values()), todo) == {named[key] for key in own}
    none_to_do = todo.slice(0, 0)
    assert job.own_temps(set(named.values()), none_to_do) == {
        named[own_key] for own_key in own if own_key.startswith("manifest/")
    }


def test_kept_files_of_an_archive_without_manifest_are_hidden_ones_too_with_a_warning(caplog):
    """--keep-failed keeps hidden files (.picasa.ini, an AppleDouble "._a.jpg", one named as
    a write's temporary file): restored from ARCHIVE/kept/ alone, they all come back, and a
    warning names those that may be what an archive stopped mid-write left instead."""
    names = [".picasa.ini", "d/._a.jpg", ".darktable/a.xmp", "notes.txt"]
    names += [
        ".notes.txt.0123456789abcdef0123456789abcdef.tmp",
        "d/.x.0123456789abcdef0123456789abcdef.tmp",
    ]
    archive = Location.parse("/archive")
    only_d = kept_items(archive, pa.table({"rel_path": names}), "d/*")
    assert only_d["rel_path"].to_pylist() == names[1::4]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tadm"):
        items = kept_items(archive, pa.table({"rel_path": names}), None)
    assert items["rel_path"].to_pylist() == names
    assert items["kept_uri"].to_pylist()[0] == "/archive/kept/.picasa.ini"
    assert caplog.messages == [
        "restore: 2 files in ARCHIVE/kept/ named as the temporary file of a write "
        "('.notes.txt.0123456789abcdef0123456789abcdef.tmp'): with no archive manifest to "
        "tell a hidden source kept as it is from what an archive stopped mid-write left, "
        "restored as kept sources; delete from DST those that are no source of yours",
    ]
