"""Location parsing, option resolution and atomic writes, locally and on a real S3 endpoint."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import CuttingProxy, make_bucket

from pipeline.storage import (
    CLOCK_MARGIN_S,
    COPY_CHUNK,
    STALE_TEMP_S,
    Location,
    NotAsRecorded,
    check_inside,
    check_s3_options,
    copy_atomic,
    object_tags,
    read_recorded,
    s3_options,
    secrets,
    stale_temps,
    user_metadata,
    write_atomic,
)

SECRETS = ("AKIA-USER-VALUE", "pw-SECRET-VALUE", "nested-SECRET-VALUE", "url-SECRET-VALUE")


def test_local_paths_and_file_uris_are_absolute(tmp_path: Path):
    assert Location.parse(str(tmp_path / "a/")) == Location("file", str(tmp_path / "a"))
    assert Location.parse(f"file://{tmp_path}/a") == Location("file", str(tmp_path / "a"))
    relative = Location.parse("some/dir")
    assert relative.root == os.path.join(os.getcwd(), "some/dir")
    assert relative.uri == relative.root


def test_s3_uris():
    location = Location.parse("s3://bucket/pre/fix/", {"anon": True})
    assert (location.protocol, location.root) == ("s3", "bucket/pre/fix")
    assert location.uri == "s3://bucket/pre/fix"
    assert location.path("lr", "a/b.jpg.png") == "bucket/pre/fix/lr/a/b.jpg.png"
    assert location.uri_of(location.path("x")) == "s3://bucket/pre/fix/x"
    assert location.options["anon"] is True


@pytest.mark.parametrize(
    "uri", ["s3://arch/h1/.", "s3://arch/h1/x/..", "s3://arch//h1", "s3://b/./x"]
)
def test_s3_uris_with_dot_or_empty_segments_are_refused(uri: str):
    """S3 keeps "." and ".." in keys: "s3://arch/h1/." would be another tree than
    "s3://arch/h1", past the checks that keep DST out of ARCHIVE."""
    with pytest.raises(ValueError, match="must not have empty, '.' or '..' segments"):
        Location.parse(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("http://host/x", "unsupported scheme 'http'"),
        ("s3://", "needs a bucket"),
        ("file://relative/path", "absolute path"),
    ],
)
def test_bad_uris_are_value_errors_naming_the_uri(uri: str, message: str):
    with pytest.raises(ValueError, match=message):
        Location.parse(uri)


def test_contains_is_path_aware():
    root = Location("file", "/data/photos")
    assert root.contains("/data/photos/a.jpg")
    assert not root.contains("/data/photos2/a.jpg")


@pytest.mark.parametrize("root", ["/data/dst", "/"])
def test_join_keeps_every_key_under_the_root(root: str):
    location = Location("file", root)
    assert location.join("a/b.jpg.png") == f"{root.rstrip('/')}/a/b.jpg.png"
    for key in ("../x.png", "/tmp/x.png", "a//b", "lr//tmp/x/z.png.png", "a/./b", "a\\b", ""):
        with pytest.raises(ValueError, match="refused"):
            location.join(key)
    assert Location("s3", "b/p").join("lr/a.png") == "b/p/lr/a.png"


def test_within_compares_trees_and_resolves_local_symlinks(tmp_path: Path):
    archive = Location.parse(str(tmp_path / "archive"))
    (tmp_path / "archive" / "lr").mkdir(parents=True)
    assert archive.within(archive) and archive.child("lr").within(archive)
    assert not archive.within(archive.child("lr"))
    assert not Location.parse(str(tmp_path / "archive2")).within(archive)
    (tmp_path / "alias").symlink_to(tmp_path / "archive" / "lr")
    assert Location.parse(str(tmp_path / "alias" / "x")).within(archive.child("lr"))
    s3 = Location("s3", "b/archive")
    assert Location("s3", "b/archive/lr").within(s3) and not Location("s3", "b/other").within(s3)
    assert not Location("file", "b/archive/lr").within(s3)


def test_only_harmless_options_are_logged_in_clear():
    options = {
        "endpoint_url": "http://me:url-SECRET-VALUE@127.0.0.1:9000",
        "username": "AKIA-USER-VALUE",
        "password": "pw-SECRET-VALUE",
        "anon": False,
        "use_ssl": True,
        "client_kwargs": {
            "region_name": "eu-west-3",
            "aws_secret_access_key": "nested-SECRET-VALUE",
        },
        "config_kwargs": {"s3": {"addressing_style": "path"}},
        "new_option_of_a_later_s3fs": "anything",
    }
    redacted = Location.parse("s3://b", options).redacted_options()
    assert redacted == {
        "endpoint_url": "http://***@127.0.0.1:9000",
        "username": "***",
        "password": "***",
        "anon": False,
        "use_ssl": True,
        "client_kwargs": {"region_name": "eu-west-3", "aws_secret_access_key": "***"},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
        "new_option_of_a_later_s3fs": "***",
    } | {k: "***" for k in ("key", "secret", "token") if k in redacted}
    assert not any(secret in repr(redacted) for secret in SECRETS)
    # What a crashed job's log must not show: exactly the texts masked above.
    assert secrets(options) == {
        "me",
        "url-SECRET-VALUE",
        "AKIA-USER-VALUE",
        "pw-SECRET-VALUE",
        "nested-SECRET-VALUE",
        "anything",
    }


@pytest.mark.parametrize(
    ("options", "variable", "message"),
    [
        ({"username": "AKIA-USER-VALUE"}, "AWS_ACCESS_KEY_ID", "'username' and AWS_ACCESS_KEY_ID"),
        ({"password": "pw-SECRET-VALUE"}, "AWS_SECRET_ACCESS_KEY", "'password' and AWS_SECRET_"),
        ({"username": "AKIA-USER-VALUE", "key": "pw-SECRET-VALUE"}, None, "'username' and 'key'"),
    ],
)
def test_a_credential_given_twice_is_named_without_its_values(
    options, variable, message, monkeypatch
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    if variable:
        monkeypatch.setenv(variable, "env-SECRET-VALUE")
    for check in (s3_options, check_s3_options):
        with pytest.raises(ValueError, match=message) as e:
            check(options)
        assert not any(secret in str(e.value) for secret in (*SECRETS, "env-SECRET-VALUE"))


def test_options_s3fs_does_not_take_are_a_value_error(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    check_s3_options({"anon": True, "endpoint_url": "http://127.0.0.1:9"})  # no network needed
    with pytest.raises(ValueError, match="s3fs does not take them: TypeError: .*'bogus'"):
        check_s3_options({"bogus": "pw-SECRET-VALUE"})
    with pytest.raises(ValueError, match="Invalid endpoint") as e:
        check_s3_options({"endpoint_url": "url-SECRET-VALUE"})
    assert "does not take them" in str(e.value)


def test_s3_options_come_from_the_environment_and_explicit_ones_win(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1234")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    options = s3_options({"key": "other"})
    assert options["endpoint_url"] == "http://127.0.0.1:1234"
    assert options["key"] == "other" and options["secret"] == "secret"
    assert options["client_kwargs"] == {"region_name": "eu-west-3"}
    redacted = Location.parse("s3://b", {"key": "other"}).redacted_options()
    assert redacted["key"] == "***" and redacted["secret"] == "***"


def test_local_atomic_write_leaves_no_temporary(tmp_path: Path):
    location = Location.parse(str(tmp_path))
    path = location.path("deep/er/file.png")
    write_atomic(location.filesystem(), path, b"first")
    write_atomic(location.filesystem(), path, b"second")
    assert Path(path).read_bytes() == b"second"
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["file.png"]


def test_a_symlink_planted_in_dst_takes_no_write_or_removal_outside(tmp_path: Path):
    dst, elsewhere = tmp_path / "dst", tmp_path / "elsewhere"
    (dst / "lr").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "victim.png").write_bytes(b"not the archive's")
    (dst / "lr" / "sub").symlink_to(elsewhere)
    (dst / "lr" / "gone").symlink_to(tmp_path / "nowhere")  # dangling: still outside
    location = Location.parse(str(dst))
    fs = location.filesystem()
    for key in ("lr/sub/a.png", "lr/sub/deeper/a.png", "lr/gone/a.png"):
        with pytest.raises(OSError, match="leads outside .* through a symbolic link"):
            write_atomic(fs, location.join(key), b"lr", root=location.root)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.png"]  # nothing created
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(OSError, match="through a symbolic link"):
        check_inside(location.root, str(dst / "lr" / "sub"))
    # A root that is itself a link is fine: its own target is inside it.
    link = tmp_path / "link"
    link.symlink_to(dst)
    write_atomic(fs, str(link / "lr" / "b.png"), b"lr", root=str(link))
    assert (dst / "lr" / "b.png").read_bytes() == b"lr"


def test_s3_round_trip_through_the_moto_server(s3_env: str):
    make_bucket(s3_env, "storage-test")
    location = Location.parse("s3://storage-test/prefix")
    fs = location.filesystem()
    write_atomic(fs, location.path("a/b.bin"), b"payload")
    assert location.filesystem().cat_file("storage-test/prefix/a/b.bin") == b"payload"
    arrow = location.arrow_filesystem()
    with arrow.open_input_file("storage-test/prefix/a/b.bin") as f:
        assert f.read() == b"payload"


def test_a_copy_goes_a_chunk_at_a_time_and_only_with_the_bytes_recorded(tmp_path: Path):
    source = tmp_path / "video.mp4"
    data = os.urandom(2 * COPY_CHUNK + 5)  # three chunks, the last one short
    source.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    location = Location.parse(str(tmp_path / "dst"))
    fs, path = location.filesystem(), location.path("kept/video.mp4")
    assert copy_atomic(fs, str(source), fs, path, sha256, len(data)) == (len(data), sha256)
    assert Path(path).read_bytes() == data
    assert copy_atomic(fs, str(source), fs, path) == (len(data), sha256)  # any bytes
    source.write_bytes(data[:-1] + b"x")  # changed since it was recorded
    with pytest.raises(NotAsRecorded, match="its SHA-256 is [0-9a-f]{64}, not the one recorded"):
        copy_atomic(fs, str(source), fs, path, sha256, len(data))
    with pytest.raises(NotAsRecorded, match=f"has {len(data)} bytes, not the {len(data) + 1} "):
        copy_atomic(fs, str(source), fs, path, None, len(data) + 1)
    with pytest.raises(NotAsRecorded, match="more than the 10 bytes recorded"):
        copy_atomic(fs, str(source), fs, path, None, 10)  # read no further than that
    with pytest.raises(NotAsRecorded, match="it is not a regular file"):
        copy_atomic(fs, "/dev/zero", fs, path, None, 10)  # endless
    assert Path(path).read_bytes() == data  # the copy made before stays whole
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["video.mp4"]


def test_a_local_copy_keeps_the_permission_bits_and_modification_time(tmp_path: Path):
    source = tmp_path / "private.mov"
    source.write_bytes(b"clip")
    os.chmod(source, 0o4640)  # a set-user-ID bit is not copied
    os.utime(source, ns=(1_500_000_000_123_456_789,) * 2)
    fs = Location.parse(str(tmp_path)).filesystem()
    copy_atomic(fs, str(source), fs, str(tmp_path / "copy.mov"))
    copied = (tmp_path / "copy.mov").stat()
    assert (copied.st_mode & 0o7777, copied.st_mtime_ns) == (0o640, 1_500_000_000_123_456_789)
    copy_atomic(fs, str(source), fs, str(tmp_path / "dated.mov"), mtime_ns=10**18)
    assert (tmp_path / "dated.mov").stat().st_mtime_ns == 10**18
    write_atomic(fs, str(tmp_path / "image.png"), b"png", mtime_ns=10**18)
    assert (tmp_path / "image.png").stat().st_mtime_ns == 10**18


def test_a_copy_refuses_a_fifo_and_a_file_written_while_it_is_copied(tmp_path: Path):
    """A listed file replaced by a FIFO would block the job forever; one rewritten in place
    (same size, no SHA-256 recorded: a file without an image name) would be a torn copy."""
    fs = Location.parse(str(tmp_path)).filesystem()
    os.mkfifo(tmp_path / "a.txt")
    with pytest.raises(NotAsRecorded, match="it is not a regular file"):
        copy_atomic(fs, str(tmp_path / "a.txt"), fs, str(tmp_path / "copy.txt"))
    source = tmp_path / "torn.bin"
    source.write_bytes(bytes(32 * 2**20))
    stop = threading.Event()

    def rewrite() -> None:  # dd conv=notrunc, over and over
        fd = os.open(source, os.O_WRONLY)
        while not stop.is_set():
            os.pwrite(fd, b"B" * 4096, 0)
        os.close(fd)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        with pytest.raises(NotAsRecorded, match="it was written to while it was copied"):
            copy_atomic(fs, str(source), fs, str(tmp_path / "copy.bin"))
    finally:
        stop.set()
        writer.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "torn.bin"]


def test_a_copy_holds_a_chunk_at_a_time_whatever_the_files_size(tmp_path: Path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        f.truncate(8 * COPY_CHUNK)  # 64 MiB of zeros, sparse on disk
    fs = Location.parse(str(tmp_path)).filesystem()
    tracemalloc.start()
    try:
        copy_atomic(fs, str(source), fs, str(tmp_path / "copy.bin"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * COPY_CHUNK
    assert os.path.getsize(tmp_path / "copy.bin") == 8 * COPY_CHUNK


def test_an_s3_copy_is_committed_only_when_whole_and_right(s3_env: str, tmp_path: Path):
    import boto3

    make_bucket(s3_env, "copy-test")
    source = tmp_path / "big.bin"
    data = os.urandom(COPY_CHUNK + 7)  # more than one part of the upload
    source.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    location = Location.parse("s3://copy-test/dst")
    fs, local = location.filesystem(), Location.parse(str(tmp_path)).filesystem()
    path = location.path("kept/big.bin")
    assert copy_atomic(local, str(source), fs, path, sha256, len(data)) == (len(data), sha256)
    assert fs.cat_file(path) == data
    fs.invalidate_cache()
    with pytest.raises(NotAsRecorded):
        copy_atomic(local, str(source), fs, location.path("kept/other.bin"), "0" * 64)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    copy_atomic(local, str(empty), fs, location.path("kept/empty.bin"))
    fs.invalidate_cache()
    assert sorted(fs.ls(location.path("kept"))) == [path, location.path("kept/empty.bin")]
    assert fs.cat_file(location.path("kept/empty.bin")) == b""
    client = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    assert client.list_multipart_uploads(Bucket="copy-test").get("Uploads", []) == []


def test_an_s3_copy_carries_the_tags_of_an_object_that_has_any(s3_env: str, monkeypatch):
    """Its tags are read only when a GET says it has some: a policy that refuses
    s3:GetObjectTagging copies an object without tags as before, and fails the copy of one
    with tags, saying so, rather than lose them."""
    make_bucket(s3_env, "copy-tags")
    fs = Location.parse("s3://copy-tags").filesystem()
    fs.pipe_file("copy-tags/src/plain.mp4", b"a video")
    fs.pipe_file("copy-tags/src/tagged.mp4", b"a video", Tagging="project=apollo&class=raw")
    empty = {"Tagging": "class=empty", "Metadata": {"owner": "team-a"}}  # s3fs's empty upload
    fs.pipe_file("copy-tags/src/empty.txt", b"", **empty)  # would leave these out
    proxy = CuttingProxy(s3_env, cuts=0, refuse_tags=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    refusing = Location.parse("s3://copy-tags").filesystem()
    copy_atomic(refusing, "copy-tags/src/plain.mp4", refusing, "copy-tags/dst/plain.mp4")
    assert fs.cat_file("copy-tags/dst/plain.mp4") == b"a video"
    why = "reading the source's 2 S3 object tags was refused (s3:GetObjectTagging reads them)"
    with pytest.raises(PermissionError, match=re.escape(f"{why}: a copy would lose them")):
        copy_atomic(refusing, "copy-tags/src/tagged.mp4", refusing, "copy-tags/dst/tagged.mp4")
    assert not fs.exists("copy-tags/dst/tagged.mp4")
    for name in ("tagged.mp4", "empty.txt"):
        copy_atomic(fs, f"copy-tags/src/{name}", fs, f"copy-tags/dst/{name}")
        assert object_tags(fs, f"copy-tags/dst/{name}") == object_tags(fs, f"copy-tags/src/{name}")
    assert object_tags(fs, "copy-tags/dst/tagged.mp4") == [("project", "apollo"), ("class", "raw")]
    assert user_metadata(fs, "copy-tags/dst/empty.txt") == {"owner": "team-a"}


def test_a_recorded_source_is_read_only_while_it_is_the_file_recorded(tmp_path: Path):
    """A manifest is data: its source_uri may name a FIFO (reading blocks), a device (endless)
    or another file; only a regular file of the recorded size and SHA-256 is read whole."""
    data = b"the source"
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "a.png").write_bytes(data)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    assert read_recorded(str(tmp_path / "a.png"), len(data), sha, {}) == data
    assert read_recorded(f"file://{tmp_path}/a.png", None, sha, {}) == data
    for uri, size, message in [
        (tmp_path / "fifo", len(data), "is not a regular file"),
        (tmp_path / "zero", len(data), "is not a regular file"),
        (tmp_path, len(data), "is not a regular file"),
        (tmp_path / "a.png", len(data) + 1, "changed since it was archived (its size)"),
        (tmp_path / "gone.png", len(data), "cannot be read: "),
    ]:
        with pytest.raises(ValueError, match=rf"^source {uri} {re.escape(message)}"):
            read_recorded(str(uri), size, sha, {})
    (tmp_path / "a.png").write_bytes(b"the-source")  # same size, other bytes
    with pytest.raises(ValueError, match="changed since it was archived$"):
        read_recorded(str(tmp_path / "a.png"), len(data), sha, {})


def test_temporary_files_of_a_stopped_job_are_found(tmp_path: Path):
    """Those over STALE_TEMP_S old, and those written while the job whose lease was taken over
    ran; not those of the job holding the lease, nor others' files older than that job."""
    location = Location.parse(str(tmp_path))
    fs = location.filesystem()
    write_atomic(fs, location.path("lr/a.png"), b"done")
    now = time.time()
    since, taken = now - 100, now - 10  # the stopped job started; the lease was taken over
    ages = {
        "old": now - STALE_TEMP_S - 1,
        "stopped": since + 50,  # written while the stopped job ran
        "before": since - CLOCK_MARGIN_S - 5,  # before it: another's, a kept source say
        "holder": taken + 1,  # by the job holding the lease
    }
    paths = {}
    for n, (name, mtime) in enumerate(ages.items()):
        paths[name] = tmp_path / "lr" / "sub" / f".{name}.png.{str(n) * 32}.tmp"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_bytes(b"partial")
        os.utime(paths[name], (mtime, mtime))
    other = tmp_path / "lr" / ".notes.tmp"  # not write_atomic's
    other.write_bytes(b"notes")
    os.utime(other, (ages["old"], ages["old"]))
    found = set(stale_temps(fs, location.root, since, taken))
    assert found == {str(paths["old"]), str(paths["stopped"])}
    assert set(stale_temps(fs, location.root, None, taken)) == {str(paths["old"])}
    assert stale_temps(fs, str(tmp_path / "missing"), since, taken) == []
