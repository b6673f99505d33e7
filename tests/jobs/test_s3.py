"""archive, restore and inspect against a real S3 endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math

import pytest
from conftest import (
    bad_images,
    display_p3_icc,
    encode,
    good_images,
    make_bucket,
    multi_frame_images,
    photo,
    real_world_images,
    run_cli,
)
from PIL import Image

from pipeline.decode import decode_image
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, Metadata, decode_lr_png
from pipeline.manifest import read_manifest
from pipeline.storage import Location

SOURCES = {
    "nested/deeper/rgb.jpg": good_images()["nested/deeper/rgb.jpg"],
    "rgba.png": good_images()["rgba.png"],
    "rotated.jpg": good_images()["rotated.jpg"],
    "bad/truncated.png": bad_images()["bad/truncated.png"],
}


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    make_bucket(s3_endpoint, "photos")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    fs = Location.parse("s3://photos", options).filesystem()
    for rel_path, data in SOURCES.items():
        fs.pipe_file(f"photos/src/{rel_path}", data)
    fs.pipe_file("photos/src-elsewhere/x.png", encode(Image.fromarray(photo(64, 64)), "PNG"))
    return "photos"


def test_archive_restore_inspect_on_s3(ray_cluster, bucket, s3_env, tiny_model, capsys):
    src, archive = f"s3://{bucket}/src", f"s3://{bucket}/archive"
    assert run_cli("archive", src, archive, "--model", tiny_model, "--verify") == 1

    fs = Location.parse(archive).filesystem()
    rows = {
        r["rel_path"]: r
        for r in read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    }
    assert set(rows) == set(SOURCES)  # not src-elsewhere/: a prefix is a folder
    assert rows["bad/truncated.png"]["status"] == "error"
    for rel_path in ("nested/deeper/rgb.jpg", "rgba.png", "rotated.jpg"):
        row = rows[rel_path]
        key = f"{bucket}/archive/lr/{rel_path}.png"
        assert row["status"] == "ok"
        assert row["source_uri"] == f"s3://{bucket}/src/{rel_path}"
        assert row["lr_uri"] == f"s3://{key}"
        assert row["source_sha256"] == hashlib.sha256(SOURCES[rel_path]).hexdigest()
        assert row["source_bytes"] == len(SOURCES[rel_path])
        assert row["lr_bytes"] == fs.size(key)
        lr, header = decode_lr_png(fs.cat_file(key))
        assert (header.width, header.height) == (row["width"], row["height"])
        assert lr.shape[:2] == (math.ceil(row["height"] / 16), math.ceil(row["width"] / 16))
        assert row["bpp"] == pytest.approx(8 * row["lr_bytes"] / (row["width"] * row["height"]))
        assert row["psnr"] > 0 and 0 < row["ssim"] <= 1 and 10 <= row["timestep_mean"] <= 200
    assert rows["rgba.png"]["conversion"] == "RGBA -> RGB, alpha dropped"

    restored = f"s3://{bucket}/restored"
    assert run_cli("restore", archive, restored, "--model", tiny_model, "--format", "webp") == 0
    restore = read_manifest(Location.parse(f"{restored}/manifest"), RESTORE_SCHEMA).to_pylist()
    assert {r["rel_path"] for r in restore} == set(rows) - {"bad/truncated.png"}
    for row in restore:
        assert row["status"] == "ok"
        assert row["psnr"] == pytest.approx(rows[row["rel_path"]]["psnr"], abs=0.5)  # webp
        data = fs.cat_file(row["output_uri"].removeprefix("s3://"))
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "WEBP"
            assert img.size == (rows[row["rel_path"]]["width"], rows[row["rel_path"]]["height"])

    capsys.readouterr()
    assert run_cli("inspect", archive) == 0
    out = capsys.readouterr().out
    assert "images: 4 (error 1, ok 3)" in out and "mean psnr:" in out

    assert run_cli("archive", src, archive, "--model", tiny_model, "--verify") == 1  # re-run
    statuses = read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA)["status"]
    assert sorted(statuses.to_pylist()) == ["error", "skipped", "skipped", "skipped"]


def test_storage_options_json_instead_of_the_environment(
    ray_cluster, bucket, s3_endpoint, tiny_model, monkeypatch
):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    options = json.dumps({"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"})
    archive = f"s3://{bucket}/archive-opts"
    argv = ("archive", f"s3://{bucket}/src/rgba.png", archive, "--model", tiny_model)
    assert run_cli(*argv, "--storage-options", options) == 0
    fs = Location.parse(archive, json.loads(options)).filesystem()
    assert fs.exists(f"{bucket}/archive-opts/lr/rgba.png.png")


def test_missing_bucket_is_bad_usage(bucket, s3_env, tiny_model, capsys):
    assert (
        run_cli("archive", "s3://no-such-bucket/src", "s3://photos/x", "--model", tiny_model) == 2
    )
    assert "no-such-bucket" in capsys.readouterr().err


def test_real_world_files_kept_and_restored_on_s3(ray_cluster, s3_endpoint, s3_env):
    """Camera EXIF, a Display P3 profile, a HEIC, a screenshot below the floor, an animated GIF
    and a text file: archived to S3 with --min-psnr and --keep-failed, restored from S3."""
    make_bucket(s3_endpoint, "phone")
    world = real_world_images()
    sources = {
        name: world[name]
        for name in ("camera/exif.jpg", "colour/p3.png", "phone/photo.heic", "screenshot.png")
    } | {"anim/animated.gif": multi_frame_images()["anim/animated.gif"], "notes.txt": b"hi\n"}
    fs = Location.parse("s3://phone").filesystem()
    for rel_path, data in sources.items():
        fs.pipe_file(f"phone/src/{rel_path}", data)
    archive, restored = "s3://phone/archive", "s3://phone/restored"
    assert run_cli("archive", "s3://phone/src", archive, "--min-psnr", "16", "--keep-failed") == 0
    rows = {
        r["rel_path"]: r
        for r in read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    }
    kept = {"screenshot.png", "anim/animated.gif", "notes.txt"}
    assert {r for r, row in rows.items() if row["status"] == "kept"} == kept
    assert rows["phone/photo.heic"]["metadata"] == "exif,icc"
    for rel_path in kept:
        assert rows[rel_path]["kept_uri"] == f"s3://phone/archive/kept/{rel_path}"
        assert fs.cat_file(f"phone/archive/kept/{rel_path}") == sources[rel_path]

    assert run_cli("restore", archive, restored, "--format", "jpeg") == 0
    for rel_path in kept:
        assert fs.cat_file(f"phone/restored/{rel_path}") == sources[rel_path]
    for rel_path in ("camera/exif.jpg", "colour/p3.png", "phone/photo.heic"):
        data = fs.cat_file(f"phone/restored/{rel_path}.jpeg")
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG"
            assert Metadata.from_info(img.info) == decode_image(sources[rel_path]).metadata
    with Image.open(io.BytesIO(fs.cat_file("phone/restored/colour/p3.png.jpeg"))) as img:
        assert img.info["icc_profile"] == display_p3_icc()


def test_archive_from_an_s3_inventory_report(ray_cluster, bucket, s3_env, tiny_model, capsys):
    """A generated S3 Inventory report (manifest.json + gzipped CSV) names SRC's objects: one
    that exists, one deleted since the report, one outside SRC, one not an image."""
    fs = Location.parse("s3://photos").filesystem()
    keys = ["src/rgba.png", "src/gone.png", "src-elsewhere/x.png", "src/notes.txt"]
    lines = "".join(f'"photos","{k}","{len(SOURCES.get(k[4:], b"1"))}"\n' for k in keys)
    fs.pipe_file("photos/inventory/photos/daily/data/a.csv.gz", gzip.compress(lines.encode()))
    manifest = {
        "sourceBucket": "photos",
        "destinationBucket": "arn:aws:s3:::photos",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "inventory/photos/daily/data/a.csv.gz", "size": 1}],
    }
    report = "photos/inventory/photos/daily/2026-11-30T01-00Z/manifest.json"
    fs.pipe_file(report, json.dumps(manifest).encode())
    archive = f"s3://{bucket}/archive-inventory"
    argv = ("archive", f"s3://{bucket}/src", archive, "--model", tiny_model)
    assert run_cli(*argv, "--inventory", f"s3://{report}") == 1
    rows = {
        r["rel_path"]: r
        for r in read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    }
    assert set(rows) == {"rgba.png", "gone.png"}  # only what the report lists under SRC
    assert rows["rgba.png"]["status"] == "ok"
    assert rows["gone.png"]["error"] == "source file disappeared before it was read"
    assert "inventory=s3://" in capsys.readouterr().err

    assert run_cli(*argv, "--inventory", f"s3://{report}") == 1
    assert read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA)[
        "status"
    ].to_pylist() == ["error", "skipped"]  # by size alone: no ETag, no LastModifiedDate


def test_etag_and_mtime_are_recorded_from_the_listing(ray_cluster, bucket, s3_env, tiny_model):
    archive = f"s3://{bucket}/archive-etag"
    assert run_cli("archive", f"s3://{bucket}/src/rgba.png", archive, "--model", tiny_model) == 0
    (row,) = read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    assert row["source_etag"] == hashlib.md5(SOURCES["rgba.png"]).hexdigest()
    assert row["source_mtime"] is not None
    assert row["written_at"] is not None
