"""DST's lease: one job at a time, a dead job's lease taken over, released at the end."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import make_bucket

import pipeline.lease as lease_module
from pipeline.lease import LEASE, DstNotSeen, Fence, Lease, LeaseLost
from pipeline.storage import Location


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.01)


def test_a_second_job_is_refused_naming_the_holder(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    with Lease(dst, "archive") as first:
        record = json.loads((tmp_path / LEASE).read_text())
        assert record["pid"] == first.record["pid"] and record["job"] == "archive"
        with pytest.raises(ValueError, match=r"in use by archive on host .* pid \d+"):
            Lease(dst, "restore").acquire()
    assert not (tmp_path / LEASE).exists()  # released
    with Lease(dst, "restore"):  # free again
        pass


def test_a_lease_without_heartbeat_is_taken_over(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    old = datetime.fromtimestamp(time.time() - lease_module.TIMEOUT_S - 1, timezone.utc)
    (tmp_path / "manifest").mkdir()
    dead = {"job": "archive", "host": "gone", "pid": 1, "token": "x", "heartbeat": old.isoformat()}
    (tmp_path / LEASE).write_text(json.dumps(dead))
    with Lease(dst, "archive") as lease:
        assert json.loads((tmp_path / LEASE).read_text())["token"] == lease.record["token"]


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    (tmp_path / "manifest").mkdir()
    now = datetime.now(timezone.utc).isoformat()
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "heartbeat": now}
    (tmp_path / LEASE).write_text(json.dumps(record))
    with Lease(dst, "archive") as lease:
        assert json.loads((tmp_path / LEASE).read_text())["token"] == lease.record["token"]
    record["pid"] = os.getpid()  # alive: held until the timeout
    (tmp_path / LEASE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="in use"):
        Lease(dst, "archive").acquire()


def test_a_fresh_lease_of_another_host_holds_until_the_timeout(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    (tmp_path / "manifest").mkdir()
    now = datetime.now(timezone.utc).isoformat()
    (tmp_path / LEASE).write_text(json.dumps({"host": "h", "pid": 7, "heartbeat": now}))
    with pytest.raises(ValueError, match="pid 7"):
        Lease(dst, "archive").acquire()


def test_heartbeat_is_rewritten_while_held(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.05)
    dst = Location.parse(str(tmp_path))
    with Lease(dst, "archive"):
        first = json.loads((tmp_path / LEASE).read_text())["heartbeat"]
        deadline = time.monotonic() + 5
        while json.loads((tmp_path / LEASE).read_text())["heartbeat"] == first:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_race_for_a_free_lease_has_one_winner(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    a, b = Lease(dst, "archive"), Lease(dst, "archive")
    write_a = a.write

    def both_write() -> None:  # b writes its lease just after a, within a's settle time
        write_a()
        b.write()

    a.write = both_write
    with pytest.raises(ValueError, match="in use"):
        a.acquire()
    assert json.loads((tmp_path / LEASE).read_text())["token"] == b.record["token"]


class ConnectionLost(Exception):
    """Not an OSError, as botocore's EndpointConnectionError is not."""


def test_the_heartbeat_goes_on_after_the_storage_fails_for_a_while(
    tmp_path: Path, monkeypatch, caplog
):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.02)
    dst = Location.parse(str(tmp_path))
    with Lease(dst, "archive") as lease:
        read, failures, writes = lease.read, [3], []

        def flaky_read() -> dict | None:
            if failures[0]:
                failures[0] -= 1
                raise ConnectionLost("could not connect to the endpoint")
            return read()

        lease.read = flaky_read
        lease.write = lambda: writes.append(1)
        deadline = time.monotonic() + 5
        while not writes:  # a beat after the failures
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert failures == [0] and lease.thread.is_alive()
    assert caplog.text.count("heartbeat failed, trying again: ConnectionLost: could not") == 3


def test_release_leaves_a_lease_it_cannot_reach(tmp_path: Path, caplog):
    dst = Location.parse(str(tmp_path))
    lease = Lease(dst, "archive")
    lease.acquire()

    def lost() -> None:
        raise ConnectionLost("could not connect to the endpoint")

    lease.read = lost
    lease.release()  # does not hide the job's own outcome behind a storage error
    assert "cannot be removed: ConnectionLost" in caplog.text
    assert (tmp_path / LEASE).exists()


def test_a_dst_bucket_that_does_not_exist_is_named(s3_env: str):
    with pytest.raises(ValueError, match=r"s3://no-such-bucket/x cannot be written .*exists"):
        Lease(Location.parse("s3://no-such-bucket/x"), "archive").acquire()


@pytest.mark.parametrize("blocked", ["manifest", ""])
def test_a_file_where_dst_or_its_manifest_folder_must_be_is_named(tmp_path: Path, blocked: str):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / blocked if blocked else tmp_path / "file").write_bytes(b"x")
    dst = Location.parse(str(tmp_path / "dst" if blocked else tmp_path / "file"))
    with pytest.raises(
        ValueError,
        match=r"cannot be written .*: a file stands where a folder of the archive's must be",
    ):
        Lease(dst, "archive").acquire()


def test_a_lease_not_renewed_for_lost_s_or_taken_over_is_lost(tmp_path: Path, monkeypatch):
    """The job stops before another job may take its lease over (TIMEOUT_S), and at once when
    one has."""
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr(lease_module, "LOST_S", 0.3)
    dst = Location.parse(str(tmp_path))
    with Lease(dst, "archive") as lease:

        def failing_write() -> None:
            raise ConnectionLost("could not connect to the endpoint")

        lease.write = failing_write
        lease.check()  # renewed a moment ago
        time.sleep(0.5)
        with pytest.raises(LeaseLost) as lost:
            lease.check()
        assert f"the lease of DST {dst.uri!r} could not be renewed for " in str(lost.value)
        assert str(lost.value).endswith(
            "the job stopped, the rows of the images it did are kept: run it again once no "
            "other job writes DST"
        )
    with Lease(dst, "archive") as lease:
        other = json.loads((tmp_path / LEASE).read_text()) | {"token": "other", "pid": 4121}
        (tmp_path / LEASE).write_text(json.dumps(other))
        deadline = time.monotonic() + 5
        while lease.taken_by is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(LeaseLost, match=r"was taken over by archive on host .* pid 4121"):
            lease.check()
    assert json.loads((tmp_path / LEASE).read_text())["token"] == "other"  # left to its holder


def test_a_fence_stops_a_write_once_another_job_holds_the_lease(tmp_path: Path):
    """What a write stage checks per batch: its job's token, whenever the driver next looks."""
    dst = Location.parse(str(tmp_path))
    with Lease(dst, "archive") as lease:
        fence = lease.fence()
        fence.check()  # its own
        (tmp_path / LEASE).write_text('{"tok')  # half written, or being replaced: go on
        fence.check()
        other = lease.record | {"token": "other", "pid": 4121}
        (tmp_path / LEASE).write_text(json.dumps(other))
        with pytest.raises(LeaseLost, match=r"was taken over by archive on host .* pid 4121"):
            fence.check()


def test_a_fence_in_a_local_dst_without_the_lease_stops_the_write(tmp_path: Path):
    """A node that does not see a local DST (one that joined the cluster after the job's
    node check) finds no lease there, and must not write its own disk."""
    with Lease(Location.parse(str(tmp_path)), "archive") as lease:
        elsewhere = Fence(Location.parse(str(tmp_path / "other-node")), lease.record["token"])
        with pytest.raises(DstNotSeen) as stopped:
            elsewhere.check()
        assert str(stopped.value) == (
            f"DST '{tmp_path / 'other-node'}' is a local path that host {socket.gethostname()} "
            "of the Ray cluster does not see (no lease of this job there; it joined after the "
            "job started, or DST's lease was deleted): it would write its own disk, so the job "
            "stopped, keeping the rows of the images it did. Give s3:// URIs, or a folder every "
            "node mounts at the same path, and run it again"
        )
        lease.fence().check()


def test_a_fence_on_s3_goes_on_without_the_lease(s3_env: str):
    """On S3 every node sees the same DST: a lease deleted by hand is written again by the
    job's heartbeat, and a write goes on meanwhile."""
    make_bucket(s3_env, "fence")
    dst = Location.parse("s3://fence/dst")
    with Lease(dst, "archive") as lease:
        dst.filesystem().rm(dst.path(LEASE))
        lease.fence().check()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_dst_on_a_full_or_read_only_disk_is_named(tmp_path, monkeypatch, code):
    def no_room(*_) -> None:  # as the OS says it, naming the lease's temporary file
        raise OSError(code, os.strerror(code), f"{tmp_path}/manifest/..lease.json.1f2e.tmp")

    monkeypatch.setattr(lease_module, "write_atomic", no_room)
    with pytest.raises(ValueError) as refused:
        Lease(Location.parse(str(tmp_path)), "archive").acquire()
    assert str(refused.value) == (
        f"{tmp_path} cannot be written ([Errno {code}] {os.strerror(code)}): free space on its "
        "disk, or make it writable, or give another DST"
    )
