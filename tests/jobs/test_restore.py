"""`tadm restore` end to end, with a real local Ray."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import bomb_png, cli_env, encode, photo, run_cli, write_tree
from PIL import Image

from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, LrHeader, encode_lr_png
from pipeline.manifest import read_manifest, to_table, write_part
from pipeline.storage import Location

SIZES = {"a.png": (96, 64), "b.jpg": (67, 83), "sub/c.png": (96, 64)}  # rel_path: (W, H)


def restore_rows(dst: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(dst / "manifest")), RESTORE_SCHEMA)
    return {row["rel_path"]: row for row in table.to_pylist()}


def archive_rows(archive: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    return {row["rel_path"]: row for row in table.to_pylist()}


def add_rows(archive: Path, rows: list[dict]) -> None:
    """Append rows to the archive manifest as a part of their own, as a hand would."""
    write_part(Location.parse(str(archive / "manifest")), to_table(rows, ARCHIVE_SCHEMA))


def lr_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def archive(ray_cluster, small_photos, tiny_model, tmp_path_factory) -> Path:
    """An archive of small_photos, made once for this module (copied: sources change later)."""
    src = tmp_path_factory.mktemp("restore-src")
    shutil.copytree(small_photos, src, dirs_exist_ok=True)
    dst = tmp_path_factory.mktemp("restore-archive")
    assert run_cli("archive", src, dst, "--model", tiny_model, "--verify") == 0
    return dst


@pytest.fixture(scope="module")
def restored(archive, tiny_model, tmp_path_factory) -> tuple[int, Path]:
    dst = tmp_path_factory.mktemp("restored")
    return run_cli("restore", archive, dst, "--model", tiny_model), dst


def test_restores_every_image_at_its_original_size(restored):
    rc, dst = restored
    assert rc == 0
    for rel_path, size in SIZES.items():
        with Image.open(dst / f"{rel_path}.png") as img:
            assert img.size == size and img.mode == "RGB"


def test_restore_manifest_values(restored, archive):
    _, dst = restored
    rows = restore_rows(dst)
    assert set(rows) == set(SIZES)
    for rel_path, (width, height) in SIZES.items():
        row = rows[rel_path]
        assert row["status"] == "ok" and row["error"] is None
        assert row["output_uri"] == str(dst / f"{rel_path}.png")
        assert row["lr_uri"] == str(archive / "lr" / f"{rel_path}.png")
        assert (row["width"], row["height"]) == (width, height) and row["region"] is None
        assert row["seconds"] > 0
        assert 0 < row["ssim"] <= 1  # the sources are still there
        assert row["precision"] == "fp32"  # the CPU's default


def test_psnr_of_restore_equals_archive_verify(restored, archive):
    """Both reconstruct from the same LR PNG with the same model."""
    table = read_manifest(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    verify = {r["rel_path"]: r["psnr"] for r in table.to_pylist()}
    rows = restore_rows(restored[1])
    for rel_path in SIZES:
        assert rows[rel_path]["psnr"] == pytest.approx(verify[rel_path])


def test_bf16_restores_close_to_fp32_and_says_so(restored, archive, tiny_model, tmp_path):
    dst = tmp_path / "bf16"
    assert run_cli("restore", archive, dst, "--model", tiny_model, "--precision", "bf16") == 0
    rows, fp32 = restore_rows(dst), restore_rows(restored[1])
    for rel_path in SIZES:
        assert rows[rel_path]["precision"] == "bf16"
        assert rows[rel_path]["psnr"] == pytest.approx(fp32[rel_path]["psnr"], abs=0.5)
        half = np.asarray(Image.open(dst / f"{rel_path}.png"), dtype=np.int16)
        full = np.asarray(Image.open(restored[1] / f"{rel_path}.png"), dtype=np.int16)
        assert np.abs(half - full).mean() < 3  # levels of 255


def test_region_restores_that_window_and_is_an_error_where_it_does_not_fit(
    archive, restored, tiny_model, tmp_path
):
    dst = tmp_path / "regions"
    assert run_cli("restore", archive, dst, "--model", tiny_model, "--region", "16,8,60,40") == 1
    rows = restore_rows(dst)
    for rel_path in ("a.png", "sub/c.png"):  # 96 x 64: the region fits
        assert rows[rel_path]["status"] == "ok" and rows[rel_path]["region"] == "16,8,60,40"
        assert (rows[rel_path]["width"], rows[rel_path]["height"]) == (60, 40)
        with Image.open(dst / f"{rel_path}.png") as img:
            assert img.size == (60, 40)
        full = np.asarray(Image.open(restored[1] / f"{rel_path}.png"), dtype=np.int16)
        region = np.asarray(Image.open(dst / f"{rel_path}.png"), dtype=np.int16)
        assert np.abs(region - full[8:48, 16:76]).max() <= 2  # the covering tiles, same pixels
    assert rows["b.jpg"]["status"] == "error"  # 67 x 83
    assert rows["b.jpg"]["error"] == "region 16,8,60,40 is not inside the 67x83 image"
    assert rows["b.jpg"]["error_kind"] == "permanent"
    assert not (dst / "b.jpg.png").exists()


def test_a_permanent_failure_is_not_retried_unless_asked(archive, tiny_model, tmp_path, capsys):
    args = ("restore", archive, tmp_path / "out", "--model", tiny_model, "--region", "0,0,90,8")
    assert run_cli(*args) == 1  # b.jpg is 67 pixels wide
    capsys.readouterr()
    assert run_cli(*args) == 0  # nothing new failed
    err = capsys.readouterr().err
    assert "restore: 3 images: 2 skipped, no errors, 1 permanent failure of an earlier" in err
    assert run_cli(*args, "--retry-errors") == 1
    assert "restore: 1/1 images (100%), 1 error" in capsys.readouterr().err


def test_from_lr_pngs_alone_and_with_another_model(
    archive, tiny_model, other_model, tmp_path, capsys
):
    bare = tmp_path / "bare"
    shutil.copytree(archive / "lr", bare / "lr")
    dst = tmp_path / "out"
    assert run_cli("restore", bare, dst, "--model", tiny_model) == 0
    for rel_path, size in SIZES.items():
        with Image.open(dst / f"{rel_path}.png") as img:
            assert img.size == size
    assert all(row["psnr"] is None for row in restore_rows(dst).values())  # no source known

    wrong = tmp_path / "wrong"
    assert run_cli("restore", bare, wrong, "--model", other_model) == 1
    rows = restore_rows(wrong)
    archived_id = restore_rows(dst)["a.png"]["model_id"]
    other_id = rows["a.png"]["model_id"]
    assert other_id != archived_id
    for row in rows.values():
        assert row["status"] == "error"
        assert archived_id in row["error"] and other_id in row["error"]
    assert not list(wrong.glob("*.png"))
    # With the manifest, which names the model of each LR, the wrong one is refused at once.
    capsys.readouterr()
    assert run_cli("restore", archive, tmp_path / "refused", "--model", other_model) == 2
    assert re.search(
        f"made none of the LRs of ARCHIVE '{archive}': they were made by {archived_id} "
        r"\(\d+ images\); pass --model with the model that archived them$",
        capsys.readouterr().err.strip(),
    )
    assert not (tmp_path / "refused").exists()


def test_only_format_and_rerun_skip(archive, tiny_model, tmp_path):
    dst = tmp_path / "out"
    args = ("restore", archive, dst, "--model", tiny_model, "--only", "*c.png", "--format", "jpeg")
    assert run_cli(*args) == 0
    assert set(restore_rows(dst)) == {"sub/c.png"}  # '*' spans '/'
    with Image.open(dst / "sub/c.png.jpeg") as img:
        assert img.format == "JPEG" and img.size == (96, 64)
    mtime = (dst / "sub/c.png.jpeg").stat().st_mtime_ns
    assert run_cli(*args) == 0
    assert restore_rows(dst)["sub/c.png"]["status"] == "skipped"
    assert (dst / "sub/c.png.jpeg").stat().st_mtime_ns == mtime
    assert run_cli(*args, "--overwrite") == 0
    assert restore_rows(dst)["sub/c.png"]["status"] == "ok"


def test_a_rerun_restores_again_an_image_whose_lr_is_another_now(archive, tiny_model, tmp_path):
    """DST holds sub/c.png restored from the archive; another archive (or this one archived
    again from another photo) holds another sub/c.png: restoring it into DST restores it, as
    the output is not of its LR."""
    other_photo = encode(Image.fromarray(photo(128, 96, 99)), "PNG")
    other_src = write_tree(tmp_path / "other-src", {"sub/c.png": other_photo})
    other = tmp_path / "other-archive"
    assert run_cli("archive", other_src, other, "--model", tiny_model) == 0
    dst = tmp_path / "out"
    only = ("--model", tiny_model, "--only", "sub/c.png")
    assert run_cli("restore", archive, dst, *only) == 0
    first = (dst / "sub/c.png.png").read_bytes()
    assert run_cli("restore", other, dst, *only) == 0
    row = restore_rows(dst)["sub/c.png"]
    assert row["status"] == "ok" and (row["width"], row["height"]) == (128, 96)
    assert row["lr_sha256"] == archive_rows(other)["sub/c.png"]["lr_sha256"]
    assert (dst / "sub/c.png.png").read_bytes() != first
    assert run_cli("restore", other, dst, *only) == 0
    assert restore_rows(dst)["sub/c.png"]["status"] == "skipped"


def test_a_link_out_of_the_archive_is_not_followed(archive, tiny_model, tmp_path):
    """An archive restored from its files alone (no manifest to check them against), whose
    kept/ holds a link to a file outside it and whose lr/ holds a link to another archive's LR:
    neither is read, each is a permanent error row, and nothing of theirs reaches DST."""
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy, ignore=shutil.ignore_patterns("manifest"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET outside the archive")
    (copy / "kept").mkdir()
    (copy / "kept/notes.txt").symlink_to(secret)
    elsewhere = tmp_path / "elsewhere.png.png"
    shutil.move(copy / "lr/a.png.png", elsewhere)
    (copy / "lr/a.png.png").symlink_to(elsewhere)
    dst = tmp_path / "out"
    assert run_cli("restore", copy, dst, "--model", tiny_model) == 1
    rows = restore_rows(dst)
    for name in ("notes.txt", "a.png"):
        assert rows[name]["status"] == "error" and rows[name]["error_kind"] == "permanent"
        assert (
            "leads outside ARCHIVE" in rows[name]["error"]
            and "symbolic link" in rows[name]["error"]
        )
    assert rows["b.jpg"]["status"] == "ok"
    assert not any(b"SECRET" in p.read_bytes() for p in dst.rglob("*") if p.is_file())
    assert not (dst / "a.png.png").exists()


def test_an_image_restored_to_another_key_loses_its_earlier_restore(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    archive, dst = tmp_path / "archive", tmp_path / "restored"
    archive_args = ("archive", small_photos, archive, "--model", tiny_model)
    restore_args = ("restore", archive, dst, "--model", tiny_model)
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")  # no restore wrote it: it stays

    def files() -> list[str]:
        names = (p.relative_to(dst).as_posix() for p in dst.rglob("*.*"))
        return sorted(name for name in names if not name.startswith("manifest/"))

    assert run_cli(*archive_args) == 0 and run_cli(*restore_args) == 0
    assert files() == ["a.png.png", "b.jpg.png", "notes.txt", "sub/c.png.png"]
    # Archived again with a floor no image reaches: each is kept, and restored as its copy.
    assert run_cli(*archive_args, "--min-psnr", "99") == 0
    assert run_cli(*restore_args) == 0
    assert files() == ["a.png", "b.jpg", "notes.txt", "sub/c.png"]
    assert (dst / "b.jpg").read_bytes() == (small_photos / "b.jpg").read_bytes()
    (dst / "b.jpg").write_bytes(b"edited by hand")  # edits of the copies: they stay
    assert run_cli(*restore_args) == 0  # a nightly run in between: all skipped
    (dst / "sub/c.png").write_bytes(b"edited by hand, later")
    # An LR again: the copies go, but those changed since.
    assert run_cli(*archive_args, "--overwrite") == 0
    assert run_cli(*restore_args) == 0
    assert files() == [
        "a.png.png",
        "b.jpg",
        "b.jpg.png",
        "notes.txt",
        "sub/c.png",
        "sub/c.png.png",
    ]
    rows = restore_rows(dst)
    assert {row["status"] for row in rows.values()} == {"ok"}
    for name in ("b.jpg", "sub/c.png"):
        assert f"{name} was changed since it was written: left there" in rows[name]["conversion"]
    # Another --format: the images restored before go, but one edited by hand, even before a
    # nightly run that skipped it (its bytes are not those the manifest records).
    (dst / "a.png.png").write_bytes(b"edited by hand")
    assert run_cli(*restore_args) == 0
    assert run_cli(*restore_args, "--format", "jpeg") == 0
    assert files() == [
        "a.png.jpeg",
        "a.png.png",
        "b.jpg",
        "b.jpg.jpeg",
        "notes.txt",
        "sub/c.png",
        "sub/c.png.jpeg",
    ]
    rows = restore_rows(dst)
    assert "a.png.png was changed since it was written: left there" in rows["a.png"]["conversion"]
    for name, row in rows.items():
        written = (dst / f"{name}.jpeg").read_bytes()
        assert row["output_sha256"] == hashlib.sha256(written).hexdigest()


def test_two_model_actors_on_a_two_cpu_cluster_finish(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    """--workers 2 on the tests' 2-CPU Ray: the actors hold both CPUs, so every other stage must
    reserve none or be fused into them (a separate 1-CPU stage would wait forever)."""
    for command, src, dst in [
        ("archive", small_photos, tmp_path / "archive"),
        ("restore", tmp_path / "archive", tmp_path / "restored"),
    ]:
        argv = [command, str(src), str(dst), "--model", tiny_model, "--workers", "2"]
        job = subprocess.run(
            [sys.executable, "-m", "jobs.cli", *argv, "--batch-size", "1"],
            env=cli_env(ray_cluster),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, job.stderr[-3000:]
        assert f"{command}: {len(SIZES)} images: {len(SIZES)} ok, no errors, " in job.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{archive}", "{dst}", "--only", "nothing*"], "--only 'nothing*' matches none"),
        (["{archive}", "{archive}"], "is ARCHIVE"),
        (["{empty}", "{dst}"], "is not an archive: it has no lr/ or manifest/"),
        (["{archive}", "{dst}", "--region", "1,2,3"], "X,Y,W,H"),
        (["{archive}", "{dst}", "--region", "0,0,0,5"], "W, H >= 1"),
        (["{archive}", "{dst}", "--format", "gif"], "invalid choice: 'gif'"),
        (["{archive}", "{dst}", "--model", "/no/such/folder"], "/no/such/folder"),
    ],
)
def test_bad_usage_exits_2(args, message, archive, tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    values = {"archive": archive, "dst": tmp_path / "out", "empty": tmp_path / "empty"}
    argv = [a.format(**values) for a in args]
    if "--model" not in argv:
        argv += ["--model", tiny_model]
    assert run_cli("restore", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tadm restore: error: ") and message in err[-1]
    assert not (tmp_path / "out").exists()


def test_the_archive_manifest_records_each_lr_files_sha256(archive):
    for rel_path, row in archive_rows(archive).items():
        data = (archive / "lr" / f"{rel_path}.png").read_bytes()
        assert row["lr_sha256"] == hashlib.sha256(data).hexdigest()
        assert row["lr_bytes"] == len(data)


@pytest.mark.parametrize(
    ("dst", "message"),
    [
        ("{archive}/lr", "lies in ARCHIVE's lr/ folder"),
        ("{archive}/lr/sub", "lies in ARCHIVE's lr/ folder"),
        ("{archive}/manifest", "lies in ARCHIVE's manifest/ folder"),
        ("{archive}/kept/sub", "lies in ARCHIVE's kept/ folder"),
        ("{archive}/..", "holds ARCHIVE"),
        ("{archive}/../..", "holds ARCHIVE"),
        ("{link}/lr", "lies in ARCHIVE's lr/ folder"),  # the same folder through a symlink
    ],
)
def test_a_dst_that_could_overwrite_the_archive_is_refused(
    dst, message, archive, tiny_model, tmp_path, capsys
):
    (tmp_path / "link").symlink_to(archive)
    before = lr_files(archive)
    target = dst.format(archive=archive, link=tmp_path / "link")
    assert run_cli("restore", archive, target, "--model", tiny_model) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tadm restore: error: DST ") and message in err[0]
    assert lr_files(archive) == before


def test_a_dst_inside_the_archive_elsewhere_is_fine(archive, tiny_model, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    assert run_cli("restore", copy, copy / "restored", "--model", tiny_model) == 0
    assert set(restore_rows(copy / "restored")) == set(SIZES)


def test_manifest_rows_with_paths_out_of_the_roots_are_error_rows(archive, tiny_model, tmp_path):
    """Hand-written rows whose rel_path would read and write outside ARCHIVE and DST: each is
    an error row naming it, nothing is written for it, the others are restored."""
    copy = tmp_path / "x" / "archive"
    shutil.copytree(archive, copy)
    lr = (archive / "lr" / "a.png.png").read_bytes()
    absolute = f"{tmp_path}/abs/x.png"
    (tmp_path / "x" / "up.png.png").write_bytes(lr)  # where lr/../../up.png.png leads
    (copy / "lr" / absolute.lstrip("/")).parent.mkdir(parents=True)
    (copy / "lr" / f"{absolute.lstrip('/')}.png").write_bytes(lr)  # lr//tmp/.../abs/x.png.png
    row = archive_rows(archive)["a.png"]
    add_rows(copy, [row | {"rel_path": p} for p in ("../../up.png", absolute, "a/./b.png")])
    dst = tmp_path / "x" / "d1" / "d2" / "dst"
    assert run_cli("restore", copy, dst, "--model", tiny_model) == 1
    rows = restore_rows(dst)
    assert {r for r in rows if rows[r]["status"] == "ok"} == set(SIZES)
    for rel_path in ("../../up.png", absolute, "a/./b.png"):
        assert rows[rel_path]["status"] == "error"
        assert repr(rel_path) in rows[rel_path]["error"] and "refused" in rows[rel_path]["error"]
        assert rows[rel_path]["output_uri"] is None
    assert not (tmp_path / "x" / "d1" / "up.png.png").exists()  # DST/../../up.png.png
    assert not Path(f"{absolute}.png").exists()
    assert (tmp_path / "x" / "up.png.png").read_bytes() == lr


def test_a_changed_lr_file_is_an_error_row_naming_both_values(archive, tiny_model, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    rows = archive_rows(archive)
    tampered = bytearray((copy / "lr" / "a.png.png").read_bytes())
    tampered[len(tampered) // 2] ^= 0x01  # one byte changed, same size
    (copy / "lr" / "a.png.png").write_bytes(bytes(tampered))
    with (copy / "lr" / "b.jpg.png").open("ab") as f:
        f.write(b"\x00")  # one byte more
    dst = tmp_path / "out"
    assert run_cli("restore", copy, dst, "--model", tiny_model) == 1
    restored = restore_rows(dst)
    a, b = restored["a.png"], restored["b.jpg"]
    assert a["status"] == "error" and b["status"] == "error"
    found = hashlib.sha256(bytes(tampered)).hexdigest()
    assert f"SHA-256 {found}, the archive manifest says {rows['a.png']['lr_sha256']}" in a["error"]
    expected = rows["b.jpg"]["lr_bytes"]
    assert f"has {expected + 1} bytes, the archive manifest says {expected}" in b["error"]
    assert restored["sub/c.png"]["status"] == "ok"
    assert not (dst / "a.png.png").exists() and not (dst / "b.jpg.png").exists()


def test_lr_files_over_the_pixel_limit_are_error_rows_among_good_ones(
    archive, tiny_model, tmp_path
):
    """From LR PNGs alone: a PNG whose header is a decompression bomb, and a small LR declaring
    a 20000 x 20000 image; each is an error row, the good images are restored."""
    bare = tmp_path / "bare"
    shutil.copytree(archive / "lr", bare / "lr")
    model_id = archive_rows(archive)["a.png"]["model_id"]
    (bare / "lr" / "bomb.png.png").write_bytes(bomb_png(40000, 40000))
    huge = encode_lr_png(photo(1250, 1250), LrHeader(20000, 20000, 16, model_id))
    (bare / "lr" / "huge.png.png").write_bytes(huge)
    dst = tmp_path / "out"
    assert run_cli("restore", bare, dst, "--model", tiny_model) == 1
    rows = restore_rows(dst)
    assert {r for r in rows if rows[r]["status"] == "ok"} == set(SIZES)
    assert rows["bomb.png"]["error"].startswith("the LR PNG is 40000x40000 = 1600000000 pixels")
    assert "declares 20000x20000 = 400000000 pixels" in rows["huge.png"]["error"]
    for rel_path in SIZES:
        assert (dst / f"{rel_path}.png").is_file()


def test_outputs_that_would_clash_or_enter_the_manifest_folder_are_error_rows(
    ray_cluster, small_photos, tiny_model, tmp_path, capsys
):
    """A kept "a.jpg.png" and the image "a.jpg" would both be DST/a.jpg.png; "manifest/m.png"
    would sit in the restore manifest's folder. Each is an error row saying what to do, the
    others are restored, and any Parquet reader still reads DST/manifest."""
    photo_png = (small_photos / "a.png").read_bytes()
    src = write_tree(
        tmp_path / "src",
        {
            "a.jpg": (small_photos / "b.jpg").read_bytes(),
            "a.jpg.png": b"not a PNG",  # kept with --keep-failed
            "manifest/m.png": photo_png,
            "ok.png": photo_png,
        },
    )
    archive = tmp_path / "archive"
    assert run_cli("archive", src, archive, "--model", tiny_model, "--keep-failed") == 0
    dst = tmp_path / "out"
    args = ("restore", archive, dst, "--model", tiny_model)
    assert run_cli(*args) == 1
    rows = restore_rows(dst)
    assert rows["ok.png"]["status"] == "ok"
    for rel_path in ("a.jpg", "a.jpg.png"):
        assert rows[rel_path]["status"] == "error", rows[rel_path]
        assert rows[rel_path]["error_kind"] == "permanent"
        assert (
            "the image 'a.jpg' is restored to DST/a.jpg.png, where the kept source 'a.jpg.png' "
            "is copied as it is: restore one of them into another DST (--only)"
        ) in rows[rel_path]["error"]
    assert not (dst / "a.jpg.png").exists()
    error = rows["manifest/m.png"]["error"]
    assert "'manifest/m.png.png' would be written into DST's manifest/ folder" in error
    assert "copy ARCHIVE/lr/manifest/ into a folder's lr/ and restore that" in error
    assert pq.read_table(dst / "manifest").num_rows == 4
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png")) == ["ok.png.png"]

    capsys.readouterr()
    assert run_cli(*args) == 0  # the same failures, carried over
    assert "3 permanent failures of an earlier run not retried" in capsys.readouterr().err
    assert run_cli(*args, "--only", "a.jpg", "--retry-errors") == 0  # alone: no clash
    assert restore_rows(dst)["a.jpg"]["status"] == "ok" and (dst / "a.jpg.png").is_file()


def test_a_file_in_dst_that_no_restore_wrote_is_left_unless_overwrite(
    archive, tiny_model, tmp_path
):
    """Restoring into a folder of one's own files (the originals' folder, say) never replaces
    one without --overwrite: the image's row is a transient error saying so."""
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "a.png.png").write_bytes(b"a file of mine")
    args = ("restore", archive, dst, "--model", tiny_model)
    assert run_cli(*args) == 1
    row = restore_rows(dst)["a.png"]
    assert (row["status"], row["error_kind"]) == ("error", "transient")
    assert row["error"].startswith("DST/a.png.png exists, no restore of this image into DST")
    assert (dst / "a.png.png").read_bytes() == b"a file of mine"
    assert {r["status"] for name, r in restore_rows(dst).items() if name != "a.png"} == {"ok"}
    assert run_cli(*args, "--overwrite") == 0
    with Image.open(dst / "a.png.png") as img:
        assert img.size == SIZES["a.png"]


def test_a_rerun_takes_what_a_restore_killed_before_recording_it_wrote(
    archive, tiny_model, tmp_path
):
    """`kill -9` between writing outputs and recording them leaves files no row names: the
    re-run takes each one holding the bytes it restores now, and no other. It deletes the
    temporary file of a write the kill cut short, not a user's named so."""
    dst = tmp_path / "restored"
    args = ("restore", archive, dst, "--model", tiny_model)
    assert run_cli(*args) == 0
    shutil.rmtree(dst / "manifest")  # killed before recording any of them
    written = lr_files(dst)
    (dst / "a.png.png").write_bytes(b"edited since")
    cut_short, mine = dst / "sub" / f".c.png.png.{'1' * 32}.tmp", dst / f".mine.{'2' * 32}.tmp"
    for path in (cut_short, mine):
        path.write_bytes(b"partial")
        os.utime(path, (1.6e9, 1.6e9))
    assert run_cli(*args) == 1
    rows = restore_rows(dst)
    assert (rows["a.png"]["status"], rows["a.png"]["error_kind"]) == ("error", "transient")
    assert {r["status"] for name, r in rows.items() if name != "a.png"} == {"ok"}
    now = {k: v for k, v in lr_files(dst).items() if not k.startswith("manifest/")}
    assert now == written | {"a.png.png": b"edited since", mine.name: b"partial"}


def test_restored_files_get_their_sources_modification_time(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    """A team that deletes its originals gets their dates back: a kept copy keeps the
    source's modification time and permission bits, and a restore gives each output the
    source's modification time as the archive manifest records it (to the microsecond)."""
    src, archive, dst = tmp_path / "src", tmp_path / "archive", tmp_path / "restored"
    shutil.copytree(small_photos, src)
    (src / "notes.txt").write_text("a note")
    os.chmod(src / "notes.txt", 0o600)
    then = 1_500_000_000_123_456_789
    for path in src.rglob("*.*"):
        os.utime(path, ns=(then, then))
    assert run_cli("archive", src, archive, "--model", tiny_model, "--keep-failed") == 0
    kept = (archive / "kept/notes.txt").stat()
    assert (kept.st_mtime_ns, kept.st_mode & 0o777) == (then, 0o600)
    assert run_cli("restore", archive, dst, "--model", tiny_model) == 0
    for name in ("a.png.png", "b.jpg.png", "sub/c.png.png", "notes.txt"):
        assert (dst / name).stat().st_mtime_ns == then // 1000 * 1000, name
    assert (dst / "notes.txt").stat().st_mode & 0o777 == 0o600


def forget_output_sha256(dst: Path) -> None:
    """Make DST's manifest one part whose rows record no output_sha256, as rows written before
    restores recorded it do."""
    manifest = Location.parse(str(dst / "manifest"))
    table = read_manifest(manifest, RESTORE_SCHEMA)
    index = table.schema.get_field_index("output_sha256")
    table = table.set_column(index, "output_sha256", pa.nulls(len(table), pa.string()))
    for part in (dst / "manifest").glob("*.parquet"):
        part.unlink()
    write_part(manifest, table)


def test_outputs_no_sha256_vouches_for_are_neither_replaced_nor_removed(
    ray_cluster, small_photos, tiny_model, tmp_path
):
    """Rows that record no output_sha256: an output edited since is not replaced by a restore
    that writes its key again (--to-srgb), and no output is removed for another --format,
    edited or not: nothing tells an edit. Each row says why."""
    archive, dst = tmp_path / "archive", tmp_path / "restored"
    assert run_cli("archive", small_photos, archive, "--model", tiny_model) == 0
    restore_args = ("restore", archive, dst, "--model", tiny_model)
    assert run_cli(*restore_args) == 0
    forget_output_sha256(dst)
    (dst / "a.png.png").write_bytes(b"edited by hand")
    assert run_cli(*restore_args, "--to-srgb") == 1
    assert (dst / "a.png.png").read_bytes() == b"edited by hand"
    rows = restore_rows(dst)
    assert rows["a.png"]["status"] == "error" and rows["a.png"]["error"] == (
        "DST/a.png.png was written by a restore whose row records no SHA-256 of it, so an "
        "edit since cannot be told, and it is not what this restore gives: it is left as it "
        "is (--overwrite replaces it)"
    )
    assert rows["b.jpg"]["status"] == "ok"  # the same bytes as before: taken as they are

    forget_output_sha256(dst)
    (dst / "b.jpg.png").write_bytes(b"edited after a skip")
    assert run_cli(*restore_args, "--to-srgb") == 1  # a.png stays an error; b.jpg is skipped
    forget_output_sha256(dst)
    assert run_cli(*restore_args, "--to-srgb", "--format", "jpeg") == 0
    assert (dst / "b.jpg.png").read_bytes() == b"edited after a skip"
    assert (dst / "sub/c.png.png").exists() and (dst / "b.jpg.jpeg").exists()
    rows = restore_rows(dst)
    for name in ("b.jpg", "sub/c.png"):
        assert rows[name]["status"] == "ok"
        assert (
            f"the earlier restored image {name}.png has no SHA-256 recorded to tell whether it "
            "was changed since it was written: left there"
        ) in rows[name]["conversion"]


def test_a_rerun_deletes_only_the_temporary_files_of_what_it_writes_again(
    archive, tiny_model, tmp_path
):
    """DST is a folder of one's own: hidden files named as the restore's temporary ones, of
    an old modification time, stay when the re-run writes nothing at their names (skipped
    images, another --format, no image); the one of an output the re-run writes again goes,
    as the write would replace it."""
    dst = tmp_path / "restored"
    args = ("restore", archive, dst, "--model", tiny_model)
    assert run_cli(*args) == 0
    names = [
        f".a.png.png.{'1' * 32}.tmp",  # of an image restored now, skipped on the re-run
        f".a.png.jpeg.{'2' * 32}.tmp",  # of another --format
        f".b.jpg.png.{'3' * 32}.tmp",  # redone below: its output is gone
        f".d.jpg.{'4' * 32}.tmp",  # of no image of the archive
        f"sub/.c.png.png.{'5' * 32}.tmp",
    ]
    for name in names:
        (dst / name).write_bytes(b"mine")
        os.utime(dst / name, (1.6e9, 1.6e9))
    assert run_cli(*args) == 0
    assert all((dst / name).exists() for name in names)
    assert {r["status"] for r in restore_rows(dst).values()} == {"skipped"}
    (dst / "b.jpg.png").unlink()
    assert run_cli(*args) == 0
    assert [name for name in names if not (dst / name).exists()] == [names[2]]
    assert restore_rows(dst)["b.jpg"]["status"] == "ok"
