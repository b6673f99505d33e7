"""`tadm archive` end to end on a local folder, with a real local Ray."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import (
    THUMBNAIL,
    bad_images,
    cli_env,
    encode,
    good_images,
    photo,
    photoshop_resource,
    run_cli,
    thumbnail_exif,
    transparent_corner,
    write_tree,
)
from PIL import ExifTags, Image, TiffImagePlugin, TiffTags

from pipeline.decode import decode_image
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, decode_lr_png
from pipeline.lease import LEASE, Lease
from pipeline.manifest import list_parts, read_manifest
from pipeline.storage import Location
from pipeline.summary import any_loss


def manifest_rows(archive: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    return {row["rel_path"]: row for row in table.to_pylist()}


@pytest.fixture(scope="module")
def zoo_archive(ray_cluster, zoo: Path, tiny_model: str, tmp_path_factory) -> tuple[int, Path]:
    dst = tmp_path_factory.mktemp("zoo-archive")
    return run_cli("archive", zoo, dst, "--model", tiny_model, "--batch-size", 4), dst


def test_some_failed_so_exit_status_is_1(zoo_archive):
    rc, dst = zoo_archive
    assert rc == 1
    assert set(manifest_rows(dst)) == set(good_images()) | set(bad_images())


def test_every_good_image_is_archived_and_the_manifest_matches_the_files(zoo_archive, zoo):
    _, dst = zoo_archive
    rows = manifest_rows(dst)
    model_ids = {rows[name]["model_id"] for name in good_images()}
    assert len(model_ids) == 1
    for name, data in good_images().items():
        row = rows[name]
        assert row["status"] == "ok" and row["error"] is None, row
        lr_file = dst / "lr" / f"{name}.png"
        assert row["source_uri"] == str(zoo / name)
        assert row["lr_uri"] == str(lr_file)
        assert row["source_bytes"] == (zoo / name).stat().st_size == len(data)
        assert row["source_sha256"] == hashlib.sha256(data).hexdigest()
        assert row["lr_bytes"] == lr_file.stat().st_size
        height, width = decode_image(data).pixels.shape[:2]
        assert (row["width"], row["height"]) == (width, height)
        assert row["bpp"] == pytest.approx(8 * row["lr_bytes"] / (width * height))
        assert row["compression_ratio"] == pytest.approx(row["source_bytes"] / row["lr_bytes"])
        lr, header = decode_lr_png(lr_file.read_bytes())
        assert lr.shape == (math.ceil(height / 16), math.ceil(width / 16), 3)
        assert (row["lr_width"], row["lr_height"]) == (lr.shape[1], lr.shape[0])
        assert (header.width, header.height, header.scale) == (width, height, 16)
        assert header.model_id == row["model_id"] and row["scale"] == 16
        assert row["psnr"] is None and row["ssim"] is None and row["timestep_mean"] is None
        assert row["seconds"] > 0
        assert row["precision"] == "fp32"  # the CPU's default
    for name in bad_images():
        assert rows[name]["precision"] is None  # the model never saw it


def test_conversions_are_recorded(zoo_archive):
    rows = manifest_rows(zoo_archive[1])
    assert rows["rgba.png"]["conversion"] == "RGBA -> RGB, alpha dropped"
    assert rows["gray.png"]["conversion"] == "L -> RGB"
    assert rows["palette.png"]["conversion"] == "P -> RGB, alpha dropped"
    assert rows["cmyk.jpg"]["conversion"] == "CMYK -> RGB"
    assert "16-bit" in rows["gray16.png"]["conversion"]
    assert "16-bit" in rows["rgb16.png"]["conversion"]
    assert rows["rotated.jpg"]["conversion"] == "EXIF orientation 6 applied"
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (64, 80)
    assert rows["nested/deeper/rgb.jpg"]["conversion"] is None


def test_a_restore_row_says_what_archiving_did_to_its_image(
    zoo_archive, tiny_model, tmp_path, capsys
):
    restored = tmp_path / "restored"
    args = ("restore", zoo_archive[1], restored, "--model", tiny_model, "--only", "*r*.*")
    assert run_cli(*args) == 0
    table = read_manifest(Location.parse(str(restored / "manifest")), RESTORE_SCHEMA)
    rows = {row["rel_path"]: row["conversion"] for row in table.to_pylist()}
    archived = manifest_rows(zoo_archive[1])
    lossy = any_loss(pa.array([archived[rel_path]["conversion"] for rel_path in rows]))
    assert (  # the archive's count of them, of the images restored
        f"no errors, {pc.sum(lossy).as_py()} archived with something not carried (their rows' "
        f"conversion in {restored / 'manifest'} says what)" in capsys.readouterr().err
    )
    assert rows["rgba.png"] == "when archived: RGBA -> RGB, alpha dropped"
    assert rows["gray.png"] == "when archived: L -> RGB"
    assert rows["nested/deeper/rgb.jpg"] is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad/corrupt.jpg", "not a readable PNG/JPEG/WEBP/TIFF/BMP/GIF/HEIF/AVIF/JXL image"),
        ("bad/truncated.png", "corrupt or truncated image"),
        ("bad/empty.jpg", "empty file (0 bytes)"),
        ("bad/not-an-image.png", "not a readable"),
        ("bad/too-small.png", "image is 12x40, smaller than the scale 16"),
        ("bad/bomb.png", "decompression bomb: 20000x20000"),
    ],
)
def test_each_bad_input_is_one_error_row(zoo_archive, zoo, name: str, message: str):
    _, dst = zoo_archive
    row = manifest_rows(dst)[name]
    assert row["status"] == "error" and message in row["error"]
    assert row["source_bytes"] == (zoo / name).stat().st_size
    assert row["lr_uri"] is None and not (dst / "lr" / f"{name}.png").exists()


def test_hidden_and_non_image_files_are_ignored(zoo_archive):
    rows = manifest_rows(zoo_archive[1])
    assert ".hidden.jpg" not in rows and "notes.txt" not in rows


def test_finished_manifest_is_one_part_any_parquet_reader_can_read(zoo_archive):
    _, dst = zoo_archive
    assert len(list_parts(Location.parse(str(dst / "manifest")))) == 1
    table = pq.read_table(dst / "manifest")
    assert table.column_names == ARCHIVE_SCHEMA.names
    assert table.num_rows == len(good_images()) + len(bad_images())


def test_rerun_skips_done_images_overwrite_redoes_them(
    ray_cluster, small_photos, tiny_model, tmp_path, capsys
):
    src = tmp_path / "src"
    shutil.copytree(small_photos, src)
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 0
    err = capsys.readouterr().err
    assert "archive: 3/3 images (100%), 0 errors, " in err and "images/s" in err
    lr_files = sorted((dst / "lr").rglob("*.png"))
    assert len(lr_files) == 3
    first = manifest_rows(dst)
    mtimes = {p: p.stat().st_mtime_ns for p in lr_files}

    (src / "sub/c.png").write_bytes(encode(Image.fromarray(photo(80, 70, 99)), "PNG"))
    assert run_cli(*args) == 0
    second = manifest_rows(dst)
    assert second["sub/c.png"]["status"] == "ok" and second["sub/c.png"]["width"] == 80
    for name in ("a.png", "b.jpg"):
        # still describes the LR; written_at is when this run wrote the row
        assert second[name] == first[name] | {
            "status": "skipped",
            "written_at": second[name]["written_at"],
        }
        assert second[name]["written_at"] > first[name]["written_at"]
        assert (dst / "lr" / f"{name}.png").stat().st_mtime_ns == mtimes[dst / "lr" / f"{name}.png"]
    capsys.readouterr()

    # Rows "skipped" already are not written again: a re-run of a finished archive writes none.
    assert run_cli(*args) == 0
    third = manifest_rows(dst)
    assert third["sub/c.png"]["status"] == "skipped"
    assert {name: third[name] for name in ("a.png", "b.jpg")} == {
        name: second[name] for name in ("a.png", "b.jpg")
    }
    manifest = Location.parse(str(dst / "manifest"))
    parts = list_parts(manifest)
    assert run_cli(*args) == 0
    assert list_parts(manifest) == parts and manifest_rows(dst) == third
    assert "archive: 3 images: 3 skipped" in capsys.readouterr().err

    assert run_cli(*args, "--overwrite") == 0
    assert {r["status"] for r in manifest_rows(dst).values()} == {"ok"}
    assert all(p.stat().st_mtime_ns != mtimes[p] for p in lr_files)


def test_an_image_kept_now_or_archived_now_loses_its_earlier_output(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    dst = tmp_path / "archive"
    args = ("archive", small_photos, dst, "--model", tiny_model)

    def files(folder: str) -> list[str]:
        return sorted(p.relative_to(dst / folder).as_posix() for p in (dst / folder).rglob("*.*"))

    assert run_cli(*args) == 0
    assert files("lr") == ["a.png.png", "b.jpg.png", "sub/c.png.png"]
    # A floor no image reaches: each is kept as it is, and its LR goes.
    assert run_cli(*args, "--min-psnr", "99") == 0
    assert {r["status"] for r in manifest_rows(dst).values()} == {"kept"}
    assert files("kept") == ["a.png", "b.jpg", "sub/c.png"] and files("lr") == []
    assert (dst / "kept/b.jpg").read_bytes() == (small_photos / "b.jpg").read_bytes()
    # Archived again without the floor: each is an LR again, and its kept copy goes.
    assert run_cli(*args, "--overwrite") == 0
    assert {r["status"] for r in manifest_rows(dst).values()} == {"ok"}
    assert files("lr") == ["a.png.png", "b.jpg.png", "sub/c.png.png"] and files("kept") == []


def test_what_an_lr_cannot_hold_is_kept_as_it_is_and_restored_whole(
    ray_cluster, tiny_model, tmp_path
):
    """A Motion Photo's video follows its JPEG's end, where no decoder reads, and a GeoTIFF's
    georeferencing places a map on the earth: an LR would lose them, so these files are kept
    byte for byte, without --keep-failed, and restored as they were."""
    video = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 64
    motion = encode(Image.fromarray(photo(96, 64, 5)), "JPEG") + video
    name = "PXL_20240101_120000000.MP.jpg"
    geo = TiffImagePlugin.ImageFileDirectory_v2()
    geo[34264] = (0.5, 0.0, 0.0, 500000.0) + (0.0,) * 12  # ModelTransformation
    geo.tagtype[34264] = TiffTags.DOUBLE
    geotiff = encode(Image.fromarray(photo(96, 64, 7)), "TIFF", tiffinfo=geo)
    src = write_tree(
        tmp_path / "src",
        {
            name: motion,
            "map.tif": geotiff,
            "still.jpg": encode(Image.fromarray(photo(96, 64, 6)), "JPEG"),
        },
    )
    dst = tmp_path / "archive"
    assert run_cli("archive", src, dst, "--model", tiny_model) == 0
    rows = manifest_rows(dst)
    row = rows[name]
    assert row["status"] == "kept" and row["error"] is None
    assert row["kept_reason"] == (
        f"{len(video):,} bytes after the JPEG's end (a Motion Photo's video, say), which an LR "
        "cannot hold: kept as it is"
    )
    assert row["kept_uri"] == str(dst / "kept" / name) and row["lr_uri"] is None
    assert (dst / "kept" / name).read_bytes() == motion
    assert not (dst / "lr" / f"{name}.png").exists() and rows["still.jpg"]["status"] == "ok"
    assert rows["map.tif"]["status"] == "kept"
    assert rows["map.tif"]["kept_reason"] == (
        "GeoTIFF georeferencing (ModelTransformation), which an LR cannot hold: kept as it is"
    )
    restored = tmp_path / "restored"
    assert run_cli("restore", dst, restored, "--model", tiny_model) == 0
    assert (restored / name).read_bytes() == motion
    assert (restored / "map.tif").read_bytes() == geotiff


def test_keep_failed_keeps_earlier_failures_and_files_whose_lr_cannot_be_written(
    ray_cluster, tiny_model, tmp_path
):
    """The usual course: a run reports errors, the next adds --keep-failed. The failures of
    the first are kept then, and so is an image whose LR name is too long to write."""
    long_name = "x" * 251 + ".jpg"  # 255 bytes; its LR, with ".png", 259: too long
    files = {
        "ok.png": encode(Image.fromarray(photo(64, 64, 1)), "PNG"),
        "bad/truncated.png": bad_images()["bad/truncated.png"],
        long_name: encode(Image.fromarray(photo(64, 64, 2)), "JPEG"),
    }
    src = write_tree(tmp_path / "src", files)
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 1
    rows = manifest_rows(dst)
    assert [rows[n]["error_kind"] for n in ("bad/truncated.png", long_name)] == ["permanent"] * 2
    assert run_cli(*args, "--keep-failed") == 0
    rows = manifest_rows(dst)
    assert {n: r["status"] for n, r in rows.items()} == {
        "ok.png": "skipped",
        "bad/truncated.png": "kept",
        long_name: "kept",
    }
    assert "File name too long" in rows[long_name]["kept_reason"]
    for name in ("bad/truncated.png", long_name):
        assert (dst / "kept" / name).read_bytes() == files[name]


def test_a_source_that_fails_after_it_was_archived_leaves_the_earlier_lr(
    ray_cluster, tiny_model, tmp_path
):
    """Bit rot or a half-copied file after a good run: its LR may be the only good copy left."""
    good = encode(Image.fromarray(photo(96, 64, 3)), "JPEG")
    src = write_tree(
        tmp_path / "src",
        {"good.jpg": good, "other.png": encode(Image.fromarray(photo(64, 64, 4)), "PNG")},
    )
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 0
    lr = (dst / "lr" / "good.jpg.png").read_bytes()
    (src / "good.jpg").write_bytes(good[:300])  # truncated
    assert run_cli(*args) == 1
    row = manifest_rows(dst)["good.jpg"]
    assert row["status"] == "error" and row["error_kind"] == "permanent"
    assert row["error"].endswith("; the LR of an earlier version stays at lr/good.jpg.png")
    assert (dst / "lr" / "good.jpg.png").read_bytes() == lr
    assert row["lr_sha256"] == hashlib.sha256(lr).hexdigest() and row["width"] == 96
    # The row records that LR: a restore still gives the image back.
    restored = tmp_path / "restored"
    assert run_cli("restore", dst, restored, "--model", tiny_model) == 0
    assert Image.open(restored / "good.jpg.png").size == (96, 64)
    (src / "good.jpg").write_bytes(good[:200])  # worse still, and kept as it is now
    assert run_cli(*args, "--keep-failed") == 0
    row = manifest_rows(dst)["good.jpg"]
    assert row["status"] == "kept" and "stays at lr/good.jpg.png" in row["kept_reason"]
    assert (dst / "kept" / "good.jpg").read_bytes() == good[:200]
    assert (dst / "lr" / "good.jpg.png").read_bytes() == lr
    # The kept row records both files: the copy kept now and the LR of the earlier version.
    assert row["kept_uri"] == str(dst / "kept" / "good.jpg")
    assert row["lr_uri"] == str(dst / "lr" / "good.jpg.png")
    assert (row["lr_bytes"], row["width"]) == (len(lr), 96)
    assert row["lr_sha256"] == hashlib.sha256(lr).hexdigest()


def test_outputs_that_clash_as_a_file_and_a_folder_fail_once_and_can_be_kept(
    ray_cluster, tiny_model, tmp_path
):
    """The LR of "a.png" is lr/a.png.png, a folder that "a.png.png/b.png" needs too: one of
    them fails on every run, so it is a permanent error, not redone by each re-run, and
    --keep-failed keeps it (its kept copy does not clash)."""
    png = encode(Image.fromarray(photo(64, 64, 3)), "PNG")
    src = write_tree(tmp_path / "src", {"a.png": png, "a.png.png/b.png": png})
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 1
    rows = manifest_rows(dst)
    failed = [name for name, row in rows.items() if row["status"] == "error"]
    assert len(failed) == 1 and rows[failed[0]]["error_kind"] == "permanent"
    assert (
        "a file and a folder of one name): if two sources clash, rename one;"
        in (rows[failed[0]]["error"])
    )
    assert run_cli(*args) == 0  # an earlier permanent failure, not redone
    assert manifest_rows(dst)[failed[0]]["seconds"] == rows[failed[0]]["seconds"]
    assert run_cli(*args, "--keep-failed") == 0
    assert manifest_rows(dst)[failed[0]]["status"] == "kept"
    assert (dst / "kept" / failed[0]).read_bytes() == png


def test_a_kept_source_that_fails_again_stays_restorable(
    ray_cluster, tiny_model, other_model, tmp_path
):
    """A file kept by --keep-failed, redone by a run without it (another model), is an error
    row again; its kept copy stays, and the row records it, so a restore still gives it back:
    the originals may be gone by then."""
    bad = encode(Image.fromarray(photo(96, 64, 3)), "PNG")[:400]
    src = write_tree(tmp_path / "src", {"bad.png": bad, "cat.txt": b"meow"})
    dst = tmp_path / "archive"
    assert run_cli("archive", src, dst, "--model", tiny_model, "--keep-failed") == 0
    assert run_cli("archive", src, dst, "--model", other_model) == 1
    row = manifest_rows(dst)["bad.png"]
    assert row["status"] == "error" and row["error_kind"] == "permanent"
    assert row["error"].endswith("; the source kept earlier stays at kept/bad.png")
    assert row["kept_uri"].endswith("/archive/kept/bad.png")
    assert row["source_sha256"] == hashlib.sha256(bad).hexdigest()
    (src / "bad.png").write_bytes(bad[:300])  # worse still: the kept copy is the better one
    assert run_cli("archive", src, dst, "--model", other_model) == 1
    row = manifest_rows(dst)["bad.png"]
    assert row["error"].endswith(
        "; an earlier version of the source, kept, stays at kept/bad.png (this row's"
        " source_sha256 is that version's)"
    )
    assert row["source_bytes"] == 300 and row["source_sha256"] == hashlib.sha256(bad).hexdigest()
    assert (dst / "kept" / "bad.png").read_bytes() == bad
    assert run_cli("archive", src, dst, "--model", other_model) == 0  # not redone
    assert manifest_rows(dst)["bad.png"]["seconds"] == row["seconds"]
    assert run_cli("inspect", dst, "--check") == 0  # the copy, against its SHA-256
    restored = tmp_path / "restored"
    assert run_cli("restore", dst, restored, "--model", other_model) == 0
    assert (restored / "bad.png").read_bytes() == bad
    # The copy's own modification time, not that of the source as it is now
    assert (restored / "bad.png").stat().st_mtime_ns == (dst / "kept/bad.png").stat().st_mtime_ns
    assert (restored / "cat.txt").read_bytes() == b"meow"


def test_drop_thumbnails_leaves_the_embedded_previews_out_of_the_lr(
    ray_cluster, tiny_model, tmp_path
):
    iptc = photoshop_resource(0x0404, b"\x1c\x02\x78\x00\x07harbour")  # a caption
    app13 = b"Photoshop 3.0\x00" + iptc + photoshop_resource(0x040C, THUMBNAIL)
    data = encode(
        Image.fromarray(photo(256, 192, 5)), "JPEG", exif=b"Exif\x00\x00" + thumbnail_exif()
    )
    data = data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:]
    src = write_tree(tmp_path / "src", {"cam.jpg": data})
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)

    def lr() -> tuple[int, Image.Exif, bytes]:
        with Image.open(dst / "lr" / "cam.jpg.png") as img:
            header = decode_lr_png((dst / "lr" / "cam.jpg.png").read_bytes())[1]
            return (
                (dst / "lr" / "cam.jpg.png").stat().st_size,
                img.getexif(),
                header.metadata.photoshop,
            )

    assert run_cli(*args) == 0  # by default the thumbnails travel with the rest
    size, exif, photoshop = lr()
    assert exif.get_ifd(ExifTags.IFD.IFD1) and photoshop == app13[len(b"Photoshop 3.0\x00") :]
    assert run_cli(*args, "--drop-thumbnails", "--overwrite") == 0
    row = manifest_rows(dst)["cam.jpg"]
    assert re.search(r"thumbnails dropped: EXIF \d+ bytes, Photoshop \d+ bytes", row["conversion"])
    small, exif_now, photoshop_now = lr()
    assert exif_now.get_ifd(ExifTags.IFD.IFD1) == {} and exif_now[0x010F] == exif[0x010F]
    assert exif_now.get_ifd(ExifTags.IFD.Exif) == exif.get_ifd(ExifTags.IFD.Exif)  # maker note
    assert photoshop_now == iptc and row["metadata"] == "exif,photoshop"
    # both thumbnails went: the EXIF's, and the Photoshop one (hex in a compressed zTXt)
    assert size - small > 1.5 * len(THUMBNAIL) and row["lr_bytes"] == small


def test_kill_9_midway_leaves_no_broken_file_and_a_rerun_completes(
    ray_cluster, tiny_model, tmp_path
):
    n = 32  # large enough that the job is still running when its first manifest part lands
    src = write_tree(
        tmp_path / "src",
        {f"img{i:02d}.png": encode(Image.fromarray(photo(256, 192, i)), "PNG") for i in range(n)},
    )
    dst = tmp_path / "archive"
    log = (tmp_path / "stderr.log").open("w")
    args = ["archive", str(src), str(dst), "--model", tiny_model, "--batch-size", "1"]
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        env=cli_env(ray_cluster),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    manifest = Location.parse(str(dst / "manifest"))
    deadline = time.monotonic() + 300
    while not list_parts(manifest) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, (tmp_path / "stderr.log").read_text()[-3000:]

    before = manifest_rows(dst)
    assert 0 < len(before) < n
    for lr_file in (dst / "lr").glob("[!.]*"):  # no truncated or half-written LR file
        decode_lr_png(lr_file.read_bytes())
    for name in before:  # every row flushed has its LR file
        assert (dst / "lr" / f"{name}.png").is_file()
    stale = dst / "lr" / f".img99.png.{'0' * 32}.tmp"  # as a kill during a write leaves it
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 5, time.time() - 5))  # the kill was moments ago

    assert run_cli(*args) == 0
    assert not stale.exists()  # the re-run removed the interrupted run's temporary file
    after = manifest_rows(dst)
    assert len(after) == n
    assert {name for name, row in after.items() if row["status"] == "skipped"} == set(before)
    assert {row["status"] for row in after.values()} <= {"ok", "skipped"}
    assert len(list((dst / "lr").glob("[!.]*.png"))) == n


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gs://bucket/x", "{dst}"], "unsupported scheme 'gs'"),
        (["{empty}", "{dst}", "--model", "{model}"], "no input"),
        (
            ["{photos}", "{dst}", "--model", "no-such-model"],
            "model cannot be loaded: unknown model 'no-such-model': not a folder, not a URI",
        ),
        (
            ["{photos}", "{dst}", "--model", "{photos}"],
            "model cannot be loaded: '{photos}' has no config.json: not a TADM checkpoint",
        ),
        (["{photos}", "{dst}", "--scale", "32", "--model", "{model}"], "--scale 32 does not"),
        (["{photos}", "{dst}", "--scale", "8"], "invalid choice: 8"),
        (["{photos}", "{dst}", "--storage-options", "{{nope"], "--storage-options"),
        (["{photos}"], "required: DST"),
        (["{photos}", "{photos}", "--model", "{model}"], "is SRC"),
        (["{photos}", "{link}", "--model", "{model}"], "is SRC"),  # a symlink to SRC
        (["{dst}/lr/photos", "{dst}", "--model", "{model}"], "lies in DST's lr/ folder"),
        (["{photos}", "{dst}", "--model", "{model}", "--precision", "fp8"], "invalid choice"),
        (["{photos}", "{dst}", "--model", "{model}", "--precision", "fp16"], "fp16 needs a GPU"),
        (["{photos}", "{dst}", "--model", "{model}", "--gpus-per-worker", "1"], "has 0: drop"),
        (["{photos}", "{dst}", "--min-psnr", "nan"], "--min-psnr must be a positive number"),
        (["{photos}", "{dst}", "--min-psnr", "inf"], "--min-psnr must be a positive number"),
        (["{photos}", "{dst}", "--min-ssim", "2"], "--min-ssim must be in (0, 1]"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args, message, small_photos, tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(small_photos)
    values = {
        "link": tmp_path / "link",
        "dst": tmp_path / "out",
        "empty": tmp_path / "empty",
        "photos": small_photos,
        "model": tiny_model,
    }
    assert run_cli("archive", *(a.format(**values) for a in args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message.format(**values) in err[-1] and err[-1].startswith("tadm archive: error: ")
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_images_are_named_before_anything_runs(tiny_model, tmp_path, capsys):
    """A team deletes SRC after archiving: what an archive leaves out must be said."""
    src = write_tree(tmp_path / "src", {"notes.txt": b"1", "clip.mov": b"2", "raw/a.CR2": b"3"})
    assert run_cli("archive", src, tmp_path / "out", "--model", tiny_model) == 2
    err = capsys.readouterr().err
    found = re.search(
        r"archive: 3 files under SRC are hidden or not images \((.*)\) and are not archived: "
        r"--keep-failed keeps every file as it is",
        err,
    )
    assert found and sorted(found[1].split(", ")) == ["'clip.mov'", "'notes.txt'", "'raw/a.CR2'"]
    assert err.strip().splitlines()[-1].startswith("tadm archive: error: no input")


def test_a_kept_file_named_as_a_temporary_file_outlives_its_source(
    ray_cluster, tiny_model, tmp_path
):
    """A hidden source named as an interrupted write's temporary file, of an old modification
    time, in a SRC inside DST: a first run leaves it in SRC (it looks for temporary files in
    lr/, kept/ and manifest/ only) and keeps it with --keep-failed; once its source is deleted,
    a later run finds the copy among the files a stopped job left, and leaves it, as the
    manifest records it (it deleted both)."""
    name = f".notes.{'0123456789abcdef' * 2}.tmp"
    dst = tmp_path / "archive"
    src = write_tree(dst / "photos", {"a.jpg": encode(Image.fromarray(photo(64, 64)), "JPEG")})
    (src / name).write_bytes(b"the only copy, soon")
    os.utime(src / name, (1.6e9, 1.6e9))  # 2020
    args = ("archive", src, dst, "--model", tiny_model, "--keep-failed")
    assert run_cli(*args) == 0
    assert manifest_rows(dst)[name]["status"] == "kept"
    assert (src / name).read_bytes() == b"the only copy, soon"
    (src / name).unlink()  # the originals deleted, one file at a time
    write_tree(src, {"b.jpg": encode(Image.fromarray(photo(64, 64, 1)), "JPEG")})
    stale = dst / "kept" / f".b.{'1' * 32}.tmp"  # a killed job's, which goes
    stale.write_bytes(b"partial")
    os.utime(stale, (1.6e9, 1.6e9))
    assert run_cli(*args) == 0
    assert (dst / "kept" / name).read_bytes() == b"the only copy, soon"
    assert not stale.exists()
    assert run_cli("inspect", dst, "--check") == 0


def test_hidden_files_are_named_without_keep_failed_and_kept_with_it(
    ray_cluster, tiny_model, tmp_path, capsys
):
    """Sidecars such as .picasa.ini or .darktable/*.xmp go with SRC when it is deleted:
    without --keep-failed the warning counts them and inspect --source names them; with it
    they are kept byte for byte (an AppleDouble "._a.jpg" too, not shrunk), skipped by a
    re-run and given back by restore. The archive's own files inside SRC are never sources."""
    hidden = {
        "._a.jpg": b"\x00\x05\x16\x07 AppleDouble resource fork",
        ".picasa.ini": b"[a.jpg]\nstar=yes\n",
        ".darktable/a.jpg.xmp": b"<x:xmpmeta/>",
    }
    src = write_tree(tmp_path / "src", {"a.jpg": encode(Image.fromarray(photo(64, 64)), "JPEG")})
    write_tree(src, hidden)
    dst = src / ".archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 0
    found = re.search(
        r"archive: 3 files under SRC are hidden or not images \((.*)\) and are not archived: "
        r"--keep-failed keeps every file as it is",
        capsys.readouterr().err,
    )
    assert found and sorted(found[1].split(", ")) == sorted(repr(name) for name in hidden)
    assert set(manifest_rows(dst)) == {"a.jpg"}
    assert run_cli("inspect", dst, "--check", "--source", src) == 1
    assert capsys.readouterr().out.splitlines()[-4:] == [
        f"source: {src}: 4 files: 1 archived as they are now, 3 not",
        "  ._a.jpg: not archived: hidden file (archive with --keep-failed keeps it)",
        "  .darktable/a.jpg.xmp: not archived: hidden file (archive with --keep-failed keeps it)",
        "  .picasa.ini: not archived: hidden file (archive with --keep-failed keeps it)",
    ]
    assert run_cli(*args, "--keep-failed") == 0
    # the job's line counts them as files, not images
    assert "archive: 1 image and 3 other files: 3 kept, 1 skipped, no errors" in (
        capsys.readouterr().err
    )
    rows = manifest_rows(dst)
    assert {name: row["status"] for name, row in rows.items()} == {
        "a.jpg": "skipped",
        **{name: "kept" for name in hidden},
    }
    for name, data in hidden.items():
        assert (dst / "kept" / name).read_bytes() == data
    assert not (dst / "lr/._a.jpg.png").exists()
    assert run_cli("inspect", dst, "--check", "--source", src) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "check: 4 files, " + f"{sum(map(len, hidden.values())) + rows['a.jpg']['lr_bytes']:,}"
        " bytes read: all as recorded",
        f"source: {src}: 4 files: all archived as they are now",
    ]
    assert run_cli(*args, "--keep-failed") == 0
    assert {row["status"] for row in manifest_rows(dst).values()} == {"skipped"}
    restored = tmp_path / "restored"
    assert run_cli("restore", dst, restored, "--model", tiny_model, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["images"], out["other_files"], sum(out["counts"].values())) == (1, 3, 4)
    for name, data in hidden.items():
        assert (restored / name).read_bytes() == data


def test_precision_is_recorded_and_a_rerun_in_another_keeps_the_images(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    dst = tmp_path / "archive"
    args = ("archive", small_photos, dst, "--model", tiny_model)
    assert run_cli(*args, "--precision", "bf16") == 0
    first = manifest_rows(dst)
    assert {row["precision"] for row in first.values()} == {"bf16"}
    assert len({row["model_id"] for row in first.values()}) == 1  # the fp32 weights' id
    assert run_cli(*args) == 0  # fp32 now: same model, nothing to redo
    second = manifest_rows(dst)
    assert {row["status"] for row in second.values()} == {"skipped"}
    assert {row["precision"] for row in second.values()} == {"bf16"}  # what made the LRs


def test_a_job_that_loses_its_lease_stops_keeps_its_rows_and_does_not_compact(
    ray_cluster, small_photos, tiny_model, tmp_path, monkeypatch, capsys
):
    """No heartbeat written for LOST_S (here at once): another job may take DST over, so this
    one stops (exit 3, saying why), its rows kept in part files, the manifest not compacted."""
    dst = tmp_path / "archive"
    args = ("archive", small_photos, dst, "--model", tiny_model, "--workers", 1)
    assert run_cli(*args) == 0  # one part, compacted
    monkeypatch.setattr("pipeline.lease.LOST_S", -1.0)
    assert run_cli(*args, "--overwrite") == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        f"tadm archive: crashed: LeaseLost: the lease of DST '{dst}' could not be renewed for "
    )
    assert "run it again once no other job writes DST" in err
    assert len(list((dst / "manifest").glob("part-*.parquet"))) == 2  # its rows: not compacted
    assert not (dst / "manifest" / ".lease.json").exists()  # its own: released
    monkeypatch.undo()
    assert run_cli(*args) == 0
    assert len(manifest_rows(dst)) == 3
    assert len(list((dst / "manifest").glob("part-*.parquet"))) == 1


@pytest.mark.parametrize(
    ("code", "said", "advice"),
    [
        (121, "We encountered an internal error. Please try again.", "compacts them\n"),
        (28, "No space left on device", "compacts them, once DST's disk has room for a copy"),
    ],
)
def test_a_manifest_that_cannot_be_compacted_is_a_warning_not_the_jobs_failure(
    ray_cluster, small_photos, tiny_model, tmp_path, monkeypatch, capsys, code, said, advice
):
    """Every image done, then the storage fails the compaction (pass 19: a truncated read, a
    DELETE refused; a full disk): the rows are in their parts, so the job's status is its
    images'."""
    dst = tmp_path / "archive"

    def refused(*_) -> None:
        raise OSError(code, said)

    monkeypatch.setattr("pipeline.job.compact", refused)
    args = ("archive", small_photos, dst, "--model", tiny_model, "--workers", 1)
    assert run_cli(*args, "--overwrite", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["counts"]["ok"] == 3
    assert (
        f"archive: the manifest {dst}/manifest was not compacted ([Errno {code}] {said}): its "
        in (captured.err)
    )
    assert advice in captured.err
    assert len(manifest_rows(dst)) == 3


def test_the_summary_counts_images_archived_with_a_loss(ray_cluster, tiny_model, tmp_path, capsys):
    """An alpha channel dropped is said on the summary line and in --json, not only in the
    manifest's conversion column."""
    rgba = transparent_corner(photo(64, 64, 4))
    src = write_tree(
        tmp_path / "src",
        {"rgba.png": encode(rgba, "PNG"), "rgb.png": encode(Image.fromarray(photo(64, 64)), "PNG")},
    )
    dst = tmp_path / "archive"
    assert run_cli("archive", src, dst, "--model", tiny_model, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["with_losses"] == 1
    assert (
        f"2 ok, no errors, 1 archived with something not carried (see `tadm inspect {dst} "
        "--conversions`), " in captured.err
    )


@pytest.mark.slow
def test_a_first_run_prints_only_its_own_lines(small_photos, tiny_model, tmp_path):
    """As a new user runs it: a fresh local Ray (not the session's). stderr holds the job's
    configuration, progress and summary lines, none of Ray's notices; stdout the --json."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    dst = tmp_path / "archive"
    argv = ["archive", str(small_photos), str(dst), "--model", tiny_model, "--json"]
    job = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    # Ray's one line that stays (see jobs/common.py): one per model actor
    ray_line = r"\[.*\] core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*\)' and "
    ray_line += r"ID: .* has constructor arguments in the object store and max_restarts > 0\. .*"
    lines = [line for line in job.stderr.splitlines() if not re.fullmatch(ray_line, line)]
    assert lines[0].startswith(f"archive: src={small_photos} dst={dst} images=3 "), lines
    for line in lines[1:-1]:
        assert re.fullmatch(r"archive: [0-3]/3 images \(\d+%\), \d+ errors, .* images/s.*", line)
    assert re.fullmatch(r"archive: 3 images: 3 ok, no errors, [\d.]+x smaller, .*s", lines[-1])
    result = json.loads(job.stdout)
    assert result["counts"] == {"ok": 3, "kept": 0, "skipped": 0, "error": 0}
    assert result["exit_code"] == 0 and result["manifest"] == str(dst / "manifest")
    assert result["lr_bytes"] == sum(p.stat().st_size for p in (dst / "lr").rglob("*.png"))


def test_same_size_edits_odd_files_and_case_collisions(ray_cluster, tiny_model, tmp_path, capsys):
    elsewhere = write_tree(
        tmp_path / "elsewhere",
        {"t.png": encode(Image.fromarray(photo(64, 64, 3)), "PNG"), "sub/u.png": b"x"},
    )
    bmp = encode(Image.fromarray(photo(64, 48, 1)), "BMP")
    src = write_tree(
        tmp_path / "src",
        {
            "a.bmp": bmp,
            "B.png": encode(Image.fromarray(photo(64, 64, 4)), "PNG"),
            "b.png": encode(Image.fromarray(photo(64, 64, 5)), "PNG"),
        },
    )
    (src / "link.png").symlink_to(elsewhere / "t.png")
    (src / "folder").symlink_to(elsewhere / "sub")
    os.mkfifo(src / "pipe.png")  # a read would block for ever
    Path(os.fsdecode(os.fsencode(src) + b"/caf\xe9.png")).write_bytes(bmp)  # a Latin-1 name
    dst = tmp_path / "archive"
    args = ("archive", src, dst, "--model", tiny_model)
    assert run_cli(*args) == 1
    rows = manifest_rows(dst)
    assert set(rows) == {
        "a.bmp",
        "B.png",
        "b.png",
        "link.png",
        "folder",
        "pipe.png",
        "caf\\xe9.png",
    }
    assert rows["pipe.png"]["error"].startswith("not a regular file")
    assert rows["caf\\xe9.png"]["error"].startswith("name is not valid UTF-8")
    assert rows["link.png"]["status"] == "ok"
    assert rows["link.png"]["source_uri"] == str(src / "link.png")
    assert (dst / "lr" / "link.png.png").is_file()
    assert "symbolic link to a folder, not followed" in rows["folder"]["error"]
    assert "collides with 'b.png'" in rows["B.png"]["error"]
    assert "collides with 'B.png'" in rows["b.png"]["error"]
    assert not (dst / "lr" / "B.png.png").exists() and not (dst / "lr" / "b.png.png").exists()
    first = rows["a.bmp"]
    assert first["source_mtime"] is not None and first["source_etag"] is None

    edited = encode(Image.fromarray(photo(64, 48, 2)), "BMP")  # another image, the same size
    assert len(edited) == len(bmp)
    (src / "a.bmp").write_bytes(edited)
    later = time.time() + 5
    os.utime(src / "a.bmp", (later, later))
    capsys.readouterr()
    # The collisions and the linked folder are found again: the first run's permanent
    # failures, not this run's, so nothing new failed.
    assert run_cli(*args) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 permanent failures of an earlier run not retried" in last, last
    rows = manifest_rows(dst)
    assert rows["a.bmp"]["status"] == "ok"  # archived again, not skipped
    assert rows["a.bmp"]["source_sha256"] == hashlib.sha256(edited).hexdigest()
    assert rows["a.bmp"]["source_mtime"] > first["source_mtime"]
    assert rows["link.png"]["status"] == "skipped"

    capsys.readouterr()
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    live = {"job": "archive", "host": "other-host", "pid": 42, "heartbeat": now, "token": "t"}
    (dst / "manifest" / ".lease.json").write_text(json.dumps(live))  # a job into the same DST
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert "in use by archive on host other-host pid 42" in err and len(err.splitlines()) == 1
    assert manifest_rows(dst)["link.png"]["status"] == "skipped"  # nothing written


def test_a_job_taken_over_writes_nothing_more(
    ray_cluster, small_photos, tiny_model, tmp_path, monkeypatch, capsys
):
    """Another job takes DST's lease over just after this one took it (its storage slow, say):
    the write stage sees the other token before its first batch, long before the driver's next
    heartbeat would, and the job stops without writing an LR."""
    dst = tmp_path / "archive"
    acquire = Lease.acquire

    def taken_over_at_once(lease: Lease) -> None:
        acquire(lease)
        other = lease.record | {"token": "other", "pid": 4121}
        (dst / LEASE).write_text(json.dumps(other))

    monkeypatch.setattr(Lease, "acquire", taken_over_at_once)
    args = ("archive", small_photos, dst, "--model", tiny_model, "--workers", 1)
    assert run_cli(*args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(
        rf"tadm archive: crashed in a Ray task: LeaseLost: the lease of DST '{dst}' was taken "
        r"over by archive on host .* pid 4121 .*run it again once no other job writes DST",
        err,
    )
    assert not (dst / "lr").exists()
    assert json.loads((dst / LEASE).read_text())["token"] == "other"  # left to its holder


def test_another_src_into_the_same_dst_never_replaces_its_images(
    ray_cluster, small_photos, tiny_model, tmp_path, capsys
):
    """A second SRC whose file has the path of the first's image (IMG_0001.JPG of two memory
    cards) is refused before anything is written; a copy of the first SRC (a moved folder) is
    the same images, skipped; --overwrite replaces them when asked."""
    dst, other, moved = tmp_path / "archive", tmp_path / "other", tmp_path / "moved"
    shutil.copytree(small_photos, moved)  # copy2: the same sizes and modification times
    other.mkdir()
    (other / "b.jpg").write_bytes(encode(Image.fromarray(photo(64, 80, 30)), "JPEG"))
    (other / "d.png").write_bytes(encode(Image.fromarray(photo(64, 64, 31)), "PNG"))
    options = ("--model", tiny_model, "--workers", 1)
    assert run_cli("archive", small_photos, dst, *options) == 0
    before = manifest_rows(dst)
    lr = (dst / "lr" / "b.jpg.png").read_bytes()
    capsys.readouterr()
    assert run_cli("archive", other, dst, *options) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"tadm archive: error: DST '{dst}' holds images of another SRC at paths where SRC "
        f"'{other}' has other files: 'b.jpg' (from {small_photos}/b.jpg); archiving SRC would "
        "replace them. Archive it into a DST of its own, or the folder above both SRCs into a "
        "new DST; if SRC is the other SRC moved and its files changed, --overwrite redoes it"
    )
    assert manifest_rows(dst) == before and (dst / "lr" / "b.jpg.png").read_bytes() == lr
    assert not (dst / "lr" / "d.png.png").exists()
    assert run_cli("archive", moved, dst, *options) == 0
    rows = manifest_rows(dst)
    assert {row["status"] for row in rows.values()} == {"skipped"}
    assert rows["b.jpg"]["source_uri"] == f"{moved}/b.jpg"
    assert run_cli("archive", other, dst, *options, "--overwrite") == 0
    assert manifest_rows(dst)["b.jpg"]["source_uri"] == f"{other}/b.jpg"
    assert (dst / "lr" / "b.jpg.png").read_bytes() != lr
