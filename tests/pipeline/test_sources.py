"""Which files archive reads under SRC."""

from __future__ import annotations

from pathlib import Path

from conftest import write_tree

from pipeline.sources import list_sources
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
    assert {s.rel_path for s in every} - {s.rel_path for s in sources} == {"notes.txt"}
    assert all(s.path == f"{tmp_path}/{s.rel_path}" for s in sources)


def test_an_archive_inside_src_is_not_read_back(tmp_path: Path):
    write_tree(tmp_path, {"a.jpg": b"1", "out/lr/a.jpg.png": b"2", "outside.png": b"3"})
    src = Location.parse(str(tmp_path))
    sources, _ = list_sources(src, exclude=src.child("out"))
    assert [s.rel_path for s in sources] == ["a.jpg", "outside.png"]


def test_src_may_be_one_file(tmp_path: Path):
    write_tree(tmp_path, {"dir/one.png": b"1", "dir/two.png": b"2"})
    sources, prefix = list_sources(Location.parse(str(tmp_path / "dir/one.png")))
    assert [(s.rel_path, s.size) for s in sources] == [("one.png", 1)]
    assert prefix == f"{tmp_path}/dir/"


def test_missing_folder_lists_nothing(tmp_path: Path):
    assert list_sources(Location.parse(str(tmp_path / "nope")))[0] == []
