"""Which files archive reads under SRC."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
from conftest import make_bucket, write_tree

import pipeline.sources as sources_module
from pipeline.sources import (
    FOLDER_MARKER,
    FOLDER_UNREADABLE,
    LISTING_SCHEMA,
    NOT_UTF8,
    NotImages,
    list_sources,
    listing_table,
    scan,
    select_images,
)
from pipeline.storage import Location


def test_lists_images_recursively_with_relative_paths(tmp_path: Path):
    write_tree(
        tmp_path,
        {
            "a.jpg": b"1",
            "B.JPEG": b"22",
            "x/y/c.png": b"333",
            "d.webp": b"4",
            "e.tif": b"5",
            "f.tiff": b"6",
            "g.bmp": b"7",
            "notes.txt": b"8",
            "h.gif": b"9",
            "k.heic": b"13",
            "l.HEIF": b"14",
            "m.avif": b"15",
            "n.jxl": b"16",
            ".hidden.jpg": b"10",
            ".cache/i.jpg": b"11",
            "x/._j.jpg": b"12",
        },
    )
    sources, prefix = list_sources(Location.parse(str(tmp_path)))
    assert prefix == f"{tmp_path}/"
    assert [s.rel_path for s in sources] == [
        "B.JPEG",
        "a.jpg",
        "d.webp",
        "e.tif",
        "f.tiff",
        "g.bmp",
        "h.gif",
        "k.heic",
        "l.HEIF",
        "m.avif",
        "n.jxl",
        "x/y/c.png",
    ]
    assert {s.rel_path: s.size for s in sources}["x/y/c.png"] == 3
    every, _ = list_sources(Location.parse(str(tmp_path)), every_file=True)
    # --keep-failed's every file: hidden ones too, in hidden folders too
    assert {s.rel_path for s in every} - {s.rel_path for s in sources} == {
        "notes.txt",
        ".hidden.jpg",
        ".cache/i.jpg",
        "x/._j.jpg",
    }
    assert all(s.path == f"{tmp_path}/{s.rel_path}" for s in sources)


def test_an_archive_inside_src_is_not_read_back(tmp_path: Path):
    tree = {"a.jpg": b"1", "out/lr/a.jpg.png": b"2", "out/kept/k.png": b"2", "outside.png": b"3"}
    tree |= {"out/manifest/part.png": b"4", "out/b.jpg": b"5", "out/lrx/c.png": b"6"}
    write_tree(tmp_path, tree)
    src = Location.parse(str(tmp_path))
    sources, _ = list_sources(src, exclude=src.child("out"))
    # Only the folders the archive writes are left out: the photos beside them are SRC's.
    assert [s.rel_path for s in sources] == ["a.jpg", "out/b.jpg", "out/lrx/c.png", "outside.png"]
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path / "out")  # DST given so
    linked = Location.parse(str(tmp_path.parent / f"{tmp_path.name}-link"))
    assert [s.rel_path for s in list_sources(src, exclude=linked)[0]] == [
        s.rel_path for s in sources
    ]


def test_src_may_be_one_file(tmp_path: Path):
    write_tree(tmp_path, {"dir/one.png": b"1", "dir/two.png": b"2"})
    sources, prefix = list_sources(Location.parse(str(tmp_path / "dir/one.png")))
    assert [(s.rel_path, s.size) for s in sources] == [("one.png", 1)]
    assert prefix == f"{tmp_path}/dir/"


def test_missing_folder_lists_nothing(tmp_path: Path):
    assert list_sources(Location.parse(str(tmp_path / "nope")))[0] == []


def listing(src: Location, exclude: Location | None = None) -> dict[str, dict]:
    pages, _ = scan(src, exclude)
    table = pa.concat_tables([LISTING_SCHEMA.empty_table(), *pages])
    return {row["rel_path"]: row for row in table.to_pylist()}


def test_symlinked_files_are_listed_symlinked_folders_are_error_rows(tmp_path: Path):
    target = write_tree(tmp_path / "elsewhere", {"t.png": b"12345", "sub/u.png": b"1"})
    src = write_tree(tmp_path / "src", {"a.png": b"1"})
    (src / "link.png").symlink_to(target / "t.png")
    (src / "folder").symlink_to(target / "sub")
    (src / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (src / "zero.png").symlink_to("/dev/zero")  # not broken: not a file either
    rows = listing(Location.parse(str(src)))
    assert set(rows) == {"a.png", "link.png", "folder", "broken.jpg", "zero.png"}
    assert rows["zero.png"]["error"].startswith("not a regular file")
    assert rows["link.png"]["size"] == 5 and rows["link.png"]["error"] is None
    assert rows["link.png"]["mtime"] is not None
    assert "symbolic link to a folder, not followed" in rows["folder"]["error"]
    assert rows["broken.jpg"]["error"] == "broken symbolic link"
    assert "folder/u.png" not in rows
    sources, _ = list_sources(Location.parse(str(src)))  # objects: error rows left out
    assert [s.rel_path for s in sources] == ["a.png", "link.png"]


def test_special_files_and_names_that_are_not_utf8_are_error_rows(tmp_path: Path):
    src = write_tree(tmp_path / "src", {"a.png": b"1"})
    os.mkfifo(src / "pipe.png")
    os.makedirs(os.fsencode(src) + b"/old\xe9")  # Latin-1 folder name, its files unlisted
    (Path(os.fsdecode(os.fsencode(src) + b"/old\xe9")) / "in.png").write_bytes(b"2")
    Path(os.fsdecode(os.fsencode(src) + b"/bad\xffname.png")).write_bytes(b"3")
    rows = listing(Location.parse(str(src)))
    assert set(rows) == {"a.png", "pipe.png", "old\\xe9", "bad\\xffname.png"}
    assert rows["pipe.png"]["error"].startswith("not a regular file")
    assert rows["old\\xe9"]["error"] == rows["bad\\xffname.png"]["error"] == NOT_UTF8
    pa.table({"rel_path": list(rows)})  # every rel_path is a string Arrow and Parquet take
    sources, _ = list_sources(Location.parse(str(src)))
    assert [s.rel_path for s in sources] == ["a.png"]


def test_a_link_loop_or_a_folder_that_cannot_be_listed_is_an_error_row(tmp_path: Path, monkeypatch):
    src = write_tree(tmp_path / "src", {"a.png": b"1", "locked/b.png": b"2", "open/c.png": b"3"})
    (src / "l1.png").symlink_to(src / "l2.png")
    (src / "l2.png").symlink_to(src / "l1.png")
    (src / "self.jpg").symlink_to("self.jpg")
    scandir = os.scandir

    def refusing(path):  # as for a folder of another user's, mode 700 (root reads them all)
        if str(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(sources_module.os, "scandir", refusing)
    rows = listing(Location.parse(str(src)))
    assert set(rows) == {"a.png", "l1.png", "l2.png", "self.jpg", "locked", "open/c.png"}
    assert {rows[n]["error"] for n in ("l1.png", "l2.png", "self.jpg")} == {"symbolic link loop"}
    assert rows["locked"]["error"] == f"{FOLDER_UNREADABLE}: Permission denied"
    sources, _ = list_sources(Location.parse(str(src)))
    assert [s.rel_path for s in sources] == ["a.png", "open/c.png"]


def test_many_folders_are_listed_in_parallel_pages(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sources_module, "PAGE_ROWS", 7)
    files = {f"f{i % 13}/g{i % 3}/img{i}.png": b"x" * i for i in range(200)}
    src = write_tree(tmp_path, files | {"top.jpg": b"1"})
    pages, _ = scan(Location.parse(str(src)))
    pages = list(pages)
    per_folder = max(Counter(p.rsplit("/", 1)[0] for p in files).values())
    assert len(pages) > 13 and max(len(p) for p in pages) < 2 * (7 + per_folder)  # a few folders
    rows = listing(Location.parse(str(src)))
    assert {r: v["size"] for r, v in rows.items()} == {
        p: len(d) for p, d in (files | {"top.jpg": b"1"}).items()
    }


def test_s3_listing_goes_page_by_page(s3_endpoint: str):
    make_bucket(s3_endpoint, "listing")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    src = Location.parse("s3://listing/src", options)
    fs = src.filesystem()
    keys = [f"src/a/img{i:04d}.png" for i in range(1005)] + ["src/b/c.jpg", "src/top.png"]
    keys += ["src/.hidden/x.png", "src/a/notes.txt", "src-other/x.png", "src/d/", "src/e/"]
    data = {"src/b/c.jpg": b"12", "src/d/": b""}  # src/d/: a folder marker; src/e/: not one
    for key in keys:
        fs.pipe_file(f"listing/{key}", data.get(key, b"1"))
    pages, prefix = scan(src)
    pages = list(pages)
    assert prefix == "listing/src/"
    table = pa.concat_tables(pages)
    rows = {r["rel_path"]: r for r in table.to_pylist()}
    assert len(rows) == 1008 and "b/c.jpg" in rows and "top.png" in rows
    assert rows["e/"]["error"] == FOLDER_MARKER  # its byte named, never dropped silently
    assert rows["b/c.jpg"]["size"] == 2
    assert rows["b/c.jpg"]["etag"] == hashlib.md5(b"12").hexdigest()  # without quotes
    assert rows["b/c.jpg"]["mtime"] is not None


def test_an_s3_listing_takes_a_request_per_page_not_per_folder(s3_endpoint: str, monkeypatch):
    """A folder per image (photos/<id>/original.jpg) is listed in runs of folders, each a flat
    listing from its first folder to the next run's: every key once, names that sort between
    a folder's and its keys' ("a!x", "a-b/", "a0") included, in a few requests."""
    monkeypatch.setattr(sources_module, "S3_RANGES", 3)
    make_bucket(s3_endpoint, "runs")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    src = Location.parse("s3://runs/p", options)
    fs = src.filesystem()
    keys = [f"p/{i:03d}/original.jpg" for i in range(40)]
    keys += ["p/a!x", "p/a-b/1.png", "p/a/1.png", "p/a/b/2.png", "p/a0", "p/a0/3.png", "p/z/"]
    keys += ["p/a.png", "p/zz/4.png", "p/é/5.png", "pp/6.png", "p!/7.png"]
    for key in keys:
        fs.pipe_file(f"runs/{key}", b"" if key == "p/z/" else b"1")  # p/z/: a folder marker
    calls = []
    list_pages = sources_module.list_pages

    def counted(*args, **kwargs):
        for page in list_pages(*args, **kwargs):  # a page per request
            calls.append(kwargs)
            yield page

    monkeypatch.setattr(sources_module, "list_pages", counted)
    pages, _ = scan(src, every_file=True)
    rel_paths = [r for page in pages for r in page["rel_path"].to_pylist()]
    assert sorted(rel_paths) == sorted(k[2:] for k in keys if k.startswith("p/") and k != "p/z/")
    assert len(calls) == 1 + 3  # the top level, then 3 runs of folders: not one per folder


def test_an_s3_src_that_is_an_object_and_a_folder_is_the_folder(s3_endpoint: str, caplog):
    """Some tools mark a folder with an object of its name: SRC s3://b/zdir lists zdir/...
    A non-empty object beside the folder is not archived, and a warning says so."""
    make_bucket(s3_endpoint, "dual")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    fs = Location.parse("s3://dual", options).filesystem()
    for key, data in {
        "zdir": b"",
        "zdir/a.png": b"1",
        "pic.png": b"12",
        "pic.png/b.png": b"3",
    }.items():
        fs.pipe_file(f"dual/{key}", data)
    for name, expected in (("zdir", "a.png"), ("pic.png", "b.png")):
        caplog.clear()
        pages, prefix = scan(Location.parse(f"s3://dual/{name}", options))
        assert [r["rel_path"] for p in pages for r in p.to_pylist()] == [expected]
        assert prefix == f"dual/{name}/"
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warned == (
            []
            if name == "zdir"
            else [
                "SRC s3://dual/pic.png is an object (2 bytes) and a folder: the folder's files are "
                "archived, not the object; archive the folder above to take both"
            ]
        )


def test_dot_segments_are_kept_for_the_plan_to_refuse_hidden_names_are_left_out():
    paths = ["a.png", "../s.png", "d/./c.png", ".h.png", "x/.h.png", "..h.png", "x/.../b.png"]
    kept = select_images(listing_table({"rel_path": paths}))["rel_path"].to_pylist()
    assert kept == ["a.png", "../s.png", "d/./c.png"]


def test_files_left_out_for_their_name_are_counted_hidden_ones_too():
    paths = [".hidden.txt", "a.png", "clip.mov", "raw/b.CR2", "b.xmp", "c.jpg", "out/lr/a.png.png"]
    paths += [".d/x.xmp", "._e.jpg", "out/lr/.a.png.png.0123456789abcdef0123456789abcdef.tmp"]
    seen = NotImages()
    kept = select_images(listing_table({"rel_path": paths}), "out", not_images=seen)
    assert kept["rel_path"].to_pylist() == ["a.png", "c.jpg"]
    assert (seen.count, seen.examples) == (6, [".hidden.txt", "clip.mov", "raw/b.CR2"])
    select_images(listing_table({"rel_path": ["d.mp4", "e.mp4"]}), not_images=seen)
    assert (seen.count, seen.examples) == (8, [".hidden.txt", "clip.mov", "raw/b.CR2"])
    every = NotImages()
    kept = select_images(listing_table({"rel_path": paths}), "out", True, every)
    assert every.count == 0  # --keep-failed: every file is a source, but the archive's own
    assert kept["rel_path"].to_pylist() == [p for p in paths if not p.startswith("out/")]
