"""`tadm restore` end to end, with a real local Ray."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, run_cli
from PIL import Image

from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA
from pipeline.manifest import read_manifest
from pipeline.storage import Location

SIZES = {"a.png": (96, 64), "b.jpg": (67, 83), "sub/c.png": (96, 64)}  # rel_path: (W, H)


def restore_rows(dst: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(dst / "manifest")), RESTORE_SCHEMA)
    return {row["rel_path"]: row for row in table.to_pylist()}


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


def test_psnr_of_restore_equals_archive_verify(restored, archive):
    """Both reconstruct from the same LR PNG with the same model."""
    table = read_manifest(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    verify = {r["rel_path"]: r["psnr"] for r in table.to_pylist()}
    rows = restore_rows(restored[1])
    for rel_path in SIZES:
        assert rows[rel_path]["psnr"] == pytest.approx(verify[rel_path])


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
    assert not (dst / "b.jpg.png").exists()


def test_from_lr_pngs_alone_and_with_another_model(archive, tiny_model, other_model, tmp_path):
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
        (["{empty}", "{dst}"], "no input"),
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
