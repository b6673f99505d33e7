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
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, decode_lr_png
from pipeline.manifest import read_manifest, to_table, write_part
from pipeline.metadata import Metadata, parse_s3_tags
from pipeline.storage import Location, object_tags, user_metadata

SECRETS = ("AKIA-USER-VALUE", "pw-SECRET-VALUE")

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

    # A re-run: the truncated file is a permanent failure, not retried, so nothing new fails.
    assert run_cli("archive", src, archive, "--model", tiny_model, "--verify") == 0
    statuses = read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA)["status"]
    assert sorted(statuses.to_pylist()) == ["error", "skipped", "skipped", "skipped"]

    # Before deleting SRC: every object under it is held as it is now, but the failed one;
    # an object rewritten since (the same size, another ETag) is named too.
    capsys.readouterr()
    assert run_cli("inspect", archive, "--source", src) == 1
    failed = f"  bad/truncated.png: failed: {rows['bad/truncated.png']['error']}"
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"source: {src}: 4 files: 3 archived as they are now, 1 not",
        failed,
    ]
    rotated = SOURCES["rotated.jpg"]
    fs.pipe_file(f"{bucket}/src/rotated.jpg", rotated[::-1])
    try:
        assert run_cli("inspect", archive, "--source", src) == 1
        assert capsys.readouterr().out.splitlines()[-2:] == [
            failed,
            "  rotated.jpg: changed since it was archived: archive SRC again",
        ]
    finally:
        fs.pipe_file(f"{bucket}/src/rotated.jpg", rotated)

    # The fixity check reads every LR back from the bucket; one changed there is named.
    capsys.readouterr()
    assert run_cli("inspect", archive, "--check") == 0
    assert capsys.readouterr().out.endswith(" bytes read: all as recorded\n")
    key = f"{bucket}/archive/lr/rgba.png.png"
    fs.pipe_file(key, fs.cat_file(key)[:-1] + b"\x00")  # one byte rots
    assert run_cli("inspect", archive, "--check") == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  lr/rgba.png.png: not the bytes recorded (the same size, another SHA-256): remove "
        "it, and `tadm archive SRC ARCHIVE` (its options as before) writes it again while SRC "
        "holds the source; or put it back from a copy of the archive"
    )


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


def test_a_dst_bucket_that_does_not_exist_is_bad_usage(
    ray_cluster, small_photos, s3_env, tiny_model, capsys
):
    assert run_cli("archive", small_photos, "s3://no-such-bucket/x", "--model", tiny_model) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tadm archive: error: s3://no-such-bucket/x cannot be written (")


def test_keys_that_would_leave_their_roots_are_error_rows(
    ray_cluster, s3_env, tiny_model, tmp_path
):
    """A source key with an empty segment (in//<tmp>/x/z.png) would have the rel_path
    /<tmp>/x/z.png: archive refuses it as a row. Hand-written manifest rows of the same kind
    are refused by restore: nothing is written outside DST."""
    make_bucket(s3_env, "hostile")
    fs = Location.parse("s3://hostile").filesystem()
    png = encode(Image.fromarray(photo(64, 64)), "PNG")
    escape = f"{tmp_path}/x/z.png"
    fs.pipe_file("hostile/in/ok.png", png)
    fs.pipe_file(f"hostile/in/{escape}", png)  # the key in//tmp/.../x/z.png
    assert run_cli("archive", "s3://hostile/in", "s3://hostile/arch", "--model", tiny_model) == 1
    manifest = Location.parse("s3://hostile/arch/manifest")
    rows = {r["rel_path"]: r for r in read_manifest(manifest, ARCHIVE_SCHEMA).to_pylist()}
    assert rows["ok.png"]["status"] == "ok"
    assert rows[escape]["status"] == "error" and rows[escape]["lr_uri"] is None
    assert rows[escape]["error"] == (
        f'path {escape!r} is absolute (so is the name of an object whose key has "//"): '
        "refused, paths must stay in their root; rename it: under this name it can be neither "
        "archived nor kept"
    )
    assert [p for p in fs.find("hostile/arch/lr")] == ["hostile/arch/lr/ok.png.png"]

    lr = fs.cat_file("hostile/arch/lr/ok.png.png")
    up = "../../up.png"
    fs.pipe_file(f"hostile/arch/lr/{escape}.png", lr)  # where a row for `escape` would read
    fs.pipe_file(f"hostile/arch/lr/{up}.png", lr)
    hostile = [rows["ok.png"] | {"rel_path": p} for p in (escape, up)]
    write_part(manifest, to_table(hostile, ARCHIVE_SCHEMA))
    dst = tmp_path / "d1" / "d2" / "dst"
    assert run_cli("restore", "s3://hostile/arch", dst, "--model", tiny_model) == 1
    restored = read_manifest(Location.parse(str(dst / "manifest")), RESTORE_SCHEMA).to_pylist()
    statuses = {r["rel_path"]: (r["status"], r["error"]) for r in restored}
    assert statuses["ok.png"] == ("ok", None)
    for rel_path in (escape, up):
        status, error = statuses[rel_path]
        assert status == "error" and repr(rel_path) in error and "refused" in error
    assert not (tmp_path / "x").exists() and not (tmp_path / "d1" / "up.png.png").exists()
    assert sorted(p.name for p in dst.iterdir()) == ["manifest", "ok.png.png"]


@pytest.mark.parametrize(
    ("dst", "message"),
    [
        ("s3://photos/archive/lr", "lies in ARCHIVE's lr/ folder"),
        ("s3://photos/archive/lr/nested", "lies in ARCHIVE's lr/ folder"),
        ("s3://photos/archive/manifest", "lies in ARCHIVE's manifest/ folder"),
        ("s3://photos", "holds ARCHIVE"),
        ("s3://photos/archive/", "is ARCHIVE"),
    ],
)
def test_an_s3_dst_that_could_overwrite_the_archive_is_refused(
    dst, message, bucket, s3_env, tiny_model, capsys
):
    assert run_cli("restore", f"s3://{bucket}/archive", dst, "--model", tiny_model) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tadm restore: error: DST ") and message in err[0]


def test_credentials_never_reach_the_log(ray_cluster, bucket, s3_endpoint, tiny_model, capsys):
    """s3fs's aliases username/password work, and the job's settings line masks them."""
    env = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    with pytest.MonkeyPatch.context() as mp:
        for name in env:
            mp.delenv(name, raising=False)
        options = {
            "endpoint_url": s3_endpoint,
            "username": "AKIA-USER-VALUE",
            "password": "pw-SECRET-VALUE",
            "client_kwargs": {"region_name": "us-east-1"},
        }
        archive = f"s3://{bucket}/archive-secrets"
        argv = ("archive", f"s3://{bucket}/src/rgba.png", archive, "--model", tiny_model)
        assert run_cli(*argv, "--storage-options", json.dumps(options)) == 0
    err = capsys.readouterr().err
    settings = next(line for line in err.splitlines() if "storage_options=" in line)
    assert s3_endpoint in settings and "'region_name': 'us-east-1'" in settings
    assert "'username': '***'" in settings and "'password': '***'" in settings
    assert not any(secret in err for secret in SECRETS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"password": "pw-SECRET-VALUE", bad}', "not JSON: Expecting property name"),
        ('["pw-SECRET-VALUE"]', "must be a JSON object {...}, got a JSON list"),
        ('{"username": "AKIA-USER-VALUE"}', "give 'username' and AWS_ACCESS_KEY_ID is set"),
        ('{"password": "pw-SECRET-VALUE"}', "give 'password' and AWS_SECRET_ACCESS_KEY is set"),
        ('{"bogus": "pw-SECRET-VALUE"}', "s3fs does not take them: TypeError"),
    ],
)
def test_bad_storage_options_are_one_line_without_their_values(
    options, message, s3_env, tiny_model, tmp_path, capsys
):
    argv = ("restore", "s3://photos/archive", tmp_path / "out", "--model", tiny_model)
    assert run_cli(*argv, "--storage-options", options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tadm restore: error: argument --storage-options")
    assert message in err[0] and not any(secret in err[0] for secret in SECRETS)


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
    # An object's own headers: a kept copy, and what a restore gives back, carry them; an
    # archived image's user metadata (rclone's mtime, say) rides in its LR.
    headers = {"ContentType": "text/plain; charset=utf-8", "Metadata": {"owner": "team-a"}}
    fs.pipe_file("phone/src/notes.txt", sources["notes.txt"], **headers, Tagging="class=text")
    user = {"mtime": "1700000000.25", "owner": "team-b", "my_key": "kept as named"}
    tags = [("project", "apollo"), ("class", "raw scan")]  # S3 object tags, in S3's form
    tagging = "project=apollo&class=raw%20scan"
    fs.pipe_file("phone/src/camera/exif.jpg", sources["camera/exif.jpg"], Metadata=user)
    fs.pipe_file("phone/src/phone/photo.heic", sources["phone/photo.heic"], Tagging=tagging)
    # More than AWS's 2 KB (an S3-compatible store may hold it): kept in the LR, which any
    # restore reads; a restore to S3 leaves it off, saying so.
    large = {"note": "x" * 2100}
    fs.pipe_file("phone/src/colour/p3.png", sources["colour/p3.png"], Metadata=large)
    archive, restored = "s3://phone/archive", "s3://phone/restored"
    assert run_cli("archive", "s3://phone/src", archive, "--min-psnr", "16", "--keep-failed") == 0
    rows = {
        r["rel_path"]: r
        for r in read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    }
    kept = {"screenshot.png", "anim/animated.gif", "notes.txt"}
    assert {r for r, row in rows.items() if row["status"] == "kept"} == kept
    assert rows["phone/photo.heic"]["metadata"] == "exif,icc,s3_tags"
    assert rows["camera/exif.jpg"]["metadata"] == "exif,s3_metadata"
    heic_lr = fs.cat_file("phone/archive/lr/phone/photo.heic.png")
    assert parse_s3_tags(decode_lr_png(heic_lr)[1].metadata.s3_tags) == tags
    lr_metadata = decode_lr_png(fs.cat_file("phone/archive/lr/camera/exif.jpg.png"))[1].metadata
    assert json.loads(lr_metadata.s3_metadata) == user
    assert rows["colour/p3.png"]["metadata"] == "icc,s3_metadata"
    for rel_path in kept:
        assert rows[rel_path]["kept_uri"] == f"s3://phone/archive/kept/{rel_path}"
        assert fs.cat_file(f"phone/archive/kept/{rel_path}") == sources[rel_path]

    assert run_cli("restore", archive, restored, "--format", "jpeg") == 0
    for rel_path in kept:
        assert fs.cat_file(f"phone/restored/{rel_path}") == sources[rel_path]
    for copy in ("phone/archive/kept/notes.txt", "phone/restored/notes.txt"):
        assert fs.info(copy, refresh=True)["ContentType"] == headers["ContentType"]
        assert user_metadata(fs, copy) == headers["Metadata"]
        assert object_tags(fs, copy) == [("class", "text")]
    for rel_path in ("camera/exif.jpg", "colour/p3.png", "phone/photo.heic"):
        data = fs.cat_file(f"phone/restored/{rel_path}.jpeg")
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG"
            assert Metadata.from_info(img.info) == decode_image(sources[rel_path]).metadata
    assert object_tags(fs, "phone/restored/phone/photo.heic.jpeg") == tags
    assert object_tags(fs, "phone/restored/camera/exif.jpg.jpeg") == []
    assert user_metadata(fs, "phone/restored/camera/exif.jpg.jpeg") == user
    assert user_metadata(fs, "phone/restored/colour/p3.png.jpeg") == {}
    restore = {
        r["rel_path"]: r
        for r in read_manifest(Location.parse(f"{restored}/manifest"), RESTORE_SCHEMA).to_pylist()
    }
    assert restore["camera/exif.jpg"]["metadata"] == "exif,s3_metadata"
    assert restore["phone/photo.heic"]["metadata"] == "exif,icc,s3_tags"
    assert restore["colour/p3.png"]["metadata"] == "icc"
    assert (
        "not carried: S3 user metadata: 2,104 bytes, over S3's 2,048"
        in (restore["colour/p3.png"]["conversion"])
    )
    with Image.open(io.BytesIO(fs.cat_file("phone/restored/colour/p3.png.jpeg"))) as img:
        assert img.info["icc_profile"] == display_p3_icc()


def test_archive_from_an_s3_inventory_report(ray_cluster, bucket, s3_env, tiny_model, capsys):
    """A generated S3 Inventory report (manifest.json + gzipped CSV) names SRC's objects: one
    that exists (twice: two versions of it), one deleted since the report, one outside SRC, one
    not an image, and one that leads out of SRC through a ".." segment."""
    fs = Location.parse("s3://photos").filesystem()
    keys = ["src/rgba.png", "src/gone.png", "src-elsewhere/x.png", "src/notes.txt"]
    keys += ["src/../src-elsewhere/x.png", "src/rgba.png"]
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
    # only what the report lists under SRC
    assert set(rows) == {"rgba.png", "gone.png", "../src-elsewhere/x.png"}
    assert rows["rgba.png"]["status"] == "ok"
    assert rows["gone.png"]["error"] == "source file disappeared before it was read"
    escape = rows["../src-elsewhere/x.png"]
    assert escape["status"] == "error" and 'has an empty, "." or ".." segment' in escape["error"]
    err = capsys.readouterr().err
    assert "inventory=s3://" in err
    assert " images=3 " in err and "archive: 3 images: 1 ok, 2 errors" in err  # one per rel_path

    assert run_cli(*argv, "--inventory", f"s3://{report}") == 1  # gone.png is retried
    table = read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA)
    statuses = dict(zip(table["rel_path"].to_pylist(), table["status"].to_pylist(), strict=True))
    assert statuses["rgba.png"] == "skipped"  # by size alone: no ETag, no LastModifiedDate
    assert statuses["gone.png"] == statuses["../src-elsewhere/x.png"] == "error"


def test_etag_and_mtime_are_recorded_from_the_listing(ray_cluster, bucket, s3_env, tiny_model):
    archive = f"s3://{bucket}/archive-etag"
    assert run_cli("archive", f"s3://{bucket}/src/rgba.png", archive, "--model", tiny_model) == 0
    (row,) = read_manifest(Location.parse(f"{archive}/manifest"), ARCHIVE_SCHEMA).to_pylist()
    assert row["source_etag"] == hashlib.md5(SOURCES["rgba.png"]).hexdigest()
    assert row["source_mtime"] is not None
    assert row["written_at"] is not None
