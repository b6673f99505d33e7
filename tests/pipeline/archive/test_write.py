"""Archive's write stage: one output per image, the earlier one of the other kind removed;
kept sources copied as they are, only while they are the bytes the job read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from conftest import make_bucket

from pipeline.archive.write import write_lr
from pipeline.storage import Location

SOURCE = b"source bytes"
EMPTY = hashlib.sha256(b"").hexdigest()


def kept_rows(outputs: str, rel_path: str = "a.png", sha256: str | None = None) -> dict:
    """One file to keep (an image below the quality floor, read as SOURCE by default); DST
    held `outputs` for it before."""
    row = {
        "rel_path": rel_path,
        "status": "kept",
        "kept_reason": "psnr 20.00 dB below --min-psnr 30",
        "error": None,
        "error_kind": None,
        "source_bytes": len(SOURCE),
        "source_sha256": sha256 if sha256 is not None else hashlib.sha256(SOURCE).hexdigest(),
        "lr_png": None,
        "outputs": outputs,
        "seconds": 0.0,
    }
    return {name: np.array([value], dtype=object) for name, value in row.items()}


def write(tmp_path: Path, batch: dict) -> dict:
    """write_lr into tmp_path/dst, the sources under tmp_path/src."""
    src = tmp_path / "src"
    return write_lr(
        batch,
        dst=Location.parse(str(tmp_path / "dst")),
        src=Location.parse(str(src)),
        prefix=f"{src}/",
    )


def source(tmp_path: Path, rel_path: str = "a.png", data: bytes = SOURCE) -> None:
    (tmp_path / "src" / rel_path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / rel_path).write_bytes(data)


def test_an_image_kept_now_loses_its_earlier_lr(tmp_path: Path):
    source(tmp_path)
    (tmp_path / "dst/lr").mkdir(parents=True)
    (tmp_path / "dst/lr/a.png.png").write_bytes(b"old LR")
    out = write(tmp_path, kept_rows("lr"))
    assert out["status"][0] == "kept"
    assert (tmp_path / "dst/kept/a.png").read_bytes() == SOURCE
    assert not (tmp_path / "dst/lr/a.png.png").exists()


def test_a_kept_files_row_says_no_conversion_of_the_pixels_not_archived(tmp_path: Path):
    """Decoding said what an LR would have had done to the pixels (an orientation applied);
    the kept copy is the file as it was, so its row says nothing was done."""
    source(tmp_path)
    batch = kept_rows("") | {"conversion": np.array(["EXIF orientation 6 applied"], object)}
    out = write(tmp_path, batch)
    assert out["status"][0] == "kept" and out["conversion"][0] is None


def test_a_local_copy_of_an_s3_object_says_its_user_metadata_and_tags_are_not_carried(
    s3_env: str, tmp_path: Path
):
    """Of any kept file: an image, a file never read (no image name, --keep-failed), an empty
    one; the copy holds the file, and the row names what its object has beside it."""
    make_bucket(s3_env, "kept-local")
    src = Location.parse("s3://kept-local/src")
    fs = src.filesystem()
    fs.pipe_file(src.path("a.png"), SOURCE, Metadata={"owner": "team-a"}, Tagging="class=raw")
    fs.pipe_file(src.path("notes.txt"), b"", Metadata={"owner": "team-a"}, Tagging="a=1&b=2")
    fs.pipe_file(src.path("c.png"), SOURCE)
    rows = [kept_rows("", "a.png"), kept_rows("", "notes.txt", EMPTY), kept_rows("", "c.png")]
    batch = {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}
    batch["source_bytes"][1] = 0
    batch["metadata"] = np.array(["exif,s3_metadata,s3_tags", None, None], object)
    out = write_lr(batch, dst=Location.parse(str(tmp_path / "dst")), src=src, prefix=src.path(""))
    assert list(out["status"]) == ["kept"] * 3
    assert list(out["metadata"]) == ["exif", None, None]
    assert list(out["conversion"]) == [
        "not carried: S3 user metadata, S3 object tags (a local file holds none)",
        "not carried: S3 user metadata, S3 object tags (a local file holds none)",
        None,
    ]


def test_what_the_read_stage_could_not_read_is_named_as_not_carried(tmp_path: Path):
    """Tags whose reading a policy refused: an LR holds none of them."""
    source(tmp_path)
    refused = "S3 object tags (2: reading them was refused)"
    archived = kept_rows("") | {
        "status": np.array(["ok"], object),
        "kept_reason": np.array([None], object),
        "lr_png": np.array([b"an LR"], object),
        "width": np.array([64]),
        "height": np.array([48]),
        "conversion": np.array(["EXIF orientation 6 applied"], object),
        "not_read": np.array([refused], object),
    }
    out = write(tmp_path, archived)
    assert out["status"][0] == "ok"
    assert out["conversion"][0] == f"EXIF orientation 6 applied; not carried: {refused}"


def test_an_earlier_lr_that_cannot_be_removed_is_a_transient_error(tmp_path: Path):
    source(tmp_path)
    (tmp_path / "dst/lr/a.png.png").mkdir(parents=True)  # a folder in the way
    (tmp_path / "dst/lr/a.png.png/x").write_bytes(b"")
    out = write(tmp_path, kept_rows("lr"))
    assert (out["status"][0], out["error_kind"][0]) == ("error", "transient")
    lr = tmp_path / "dst/lr/a.png.png"
    assert out["error"][0].startswith(f"cannot remove the earlier LR {lr}: ")
    assert (tmp_path / "dst/kept/a.png").read_bytes() == SOURCE  # a re-run finishes it


def test_a_source_changed_since_it_was_read_is_not_kept(tmp_path: Path):
    """The copy is made from SRC, a chunk at a time: only the bytes the read stage hashed
    become the kept copy; a file changed in between is a transient error, and the copy an
    earlier run kept stays as it was."""
    source(tmp_path, data=b"source bytez")  # same size, other bytes
    (tmp_path / "dst/kept").mkdir(parents=True)
    (tmp_path / "dst/kept/a.png").write_bytes(b"kept before")
    out = write(tmp_path, kept_rows(""))
    assert (out["status"][0], out["error_kind"][0]) == ("error", "transient")
    assert out["error"][0] == (
        "psnr 20.00 dB below --min-psnr 30; not kept either: the source changed while it was "
        f"archived (its SHA-256 is {hashlib.sha256(b'source bytez').hexdigest()}, not the one "
        "recorded): run again"
    )
    assert (tmp_path / "dst/kept/a.png").read_bytes() == b"kept before"
    assert sorted(p.name for p in (tmp_path / "dst/kept").iterdir()) == ["a.png"]


def test_a_file_without_an_image_name_gets_its_size_and_sha256_from_the_copy(tmp_path: Path):
    """read_sources reads no such file (a video may be larger than memory): the copy is the
    first read, and the row records what it copied."""
    data = b"\x00video" * 1000
    source(tmp_path, "clips/v.mp4", data)
    batch = kept_rows("", "clips/v.mp4", sha256="")
    batch["source_sha256"] = np.array([None], dtype=object)
    batch["source_bytes"] = np.array([len(data)], dtype=object)  # as listed
    out = write(tmp_path, batch)
    assert out["status"][0] == "kept"
    assert out["source_sha256"][0] == hashlib.sha256(data).hexdigest()
    assert out["source_bytes"][0] == len(data)
    assert (tmp_path / "dst/kept/clips/v.mp4").read_bytes() == data


def test_a_file_that_cannot_be_kept_either_is_an_error_saying_both(s3_env: str, tmp_path: Path):
    """--keep-failed keeps a permanent failure; when its copy cannot be made either (an S3 key
    whose name is too long for a local DST), the row is an error with both reasons, and no
    kept_reason."""
    make_bucket(s3_env, "long-names")
    name = "n" * 256 + ".txt"  # over the 255 bytes a local name may have
    src = Location.parse("s3://long-names/src")
    src.filesystem().pipe_file(src.path(name), SOURCE)
    batch = kept_rows("", name)
    batch["kept_reason"] = np.array(["not an image file: only images are archived"], object)
    dst = Location.parse(str(tmp_path / "dst"))
    out = write_lr(batch, dst=dst, src=src, prefix=src.path(""))
    assert (out["status"][0], out["kept_reason"][0], out["error_kind"][0]) == (
        "error",
        None,
        "permanent",
    )
    assert out["error"][0].startswith(
        "not an image file: only images are archived; not kept either: cannot write "
    )
    assert "the name is 260 bytes" in out["error"][0]
