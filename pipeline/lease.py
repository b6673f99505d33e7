"""One job at a time per DST: a lease file, DST/manifest/.lease.json.

    {"job": "archive", "host": "node-3", "pid": 4121, "token": "9f2c...",
     "started": "2026-12-02T10:00:00+00:00", "heartbeat": "2026-12-02T10:41:20+00:00"}

A job writes it before anything else and rewrites `heartbeat` every HEARTBEAT_S seconds from a
thread; a second job into the same DST finds a live lease and stops with a ValueError naming
the holder (exit status 2). A lease whose heartbeat is older than TIMEOUT_S belongs to a job
that died (kill -9, a lost node) and is taken over; so is, at once, the lease of a job on this
host whose process is gone. Both jobs may race for a free lease: each
writes its own, waits SETTLE_S and reads it back, and the one whose token is not there stops.
A job whose heartbeat has not been written for LOST_S (the storage out of reach), or whose
lease another job holds now, has lost it: `check` raises LeaseLost, and the job stops at its
next batch (pipeline/job.py), before another may take over unless a batch takes over a beat.
Its write stages hold a `Fence`, the lease's token: each batch reads the lease before writing
into DST and raises LeaseLost when another job's token is there, so that a job taken over
stops writing within a batch, whenever its driver next looks; in a local DST where no lease is,
the node does not see the driver's folder, and the batch raises DstNotSeen.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline.format import MANIFEST_DIR
from pipeline.rows import error_text
from pipeline.storage import Location, no_room, write_atomic

LEASE = f"{MANIFEST_DIR}/.lease.json"
HEARTBEAT_S = 15.0
TIMEOUT_S = 120.0  # no heartbeat for this long: the holder is gone
SETTLE_S = 0.5
LOST_S = TIMEOUT_S - HEARTBEAT_S  # no heartbeat written for this long: the lease is lost

logger = logging.getLogger("tadm")


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Lease:
    """The lease of `dst` for one job: `acquire`, then `release` (or use as a context
    manager); a thread keeps its heartbeat while held."""

    def __init__(self, dst: Location, job: str) -> None:
        self.dst = dst
        self.path = dst.path(LEASE)
        self.fs = dst.filesystem()
        self.record: dict[str, Any] = {
            "job": job,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "started": now_text(),
            "heartbeat": now_text(),
        }
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.renewed = time.monotonic()  # when the heartbeat was last written
        self.acquired_at = 0.0  # time.time() as `acquire` began
        self.stopped_since: float | None = None  # when the job whose lease it took over started
        self.taken_by: str | None = None  # the job that took the lease over, once one has

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except (FileNotFoundError, NotADirectoryError):  # no lease, or no folder for one
            return None
        except ValueError:  # unreadable: treated as a dead job's
            return {}

    def write(self) -> None:
        self.record["heartbeat"] = now_text()
        write_atomic(self.fs, self.path, json.dumps(self.record).encode())

    def acquire(self) -> None:
        """Take the lease, or raise ValueError naming the job that holds it, or saying that
        DST cannot be written at all (no such bucket, no right to write, a file in the way, a
        disk full or read-only)."""
        self.acquired_at = time.time()
        held = self.read()
        if held:
            age = time.time() - heartbeat_time(held)
            gone = gone_here(held)
            if running(held):
                raise ValueError(busy(self.dst, held, age))
            self.stopped_since = record_time(held, "started")
            logger.info(
                "lease: taking over %s from %s (%s)",
                self.dst.uri_of(self.path),
                holder(held),
                "its process is gone" if gone else f"no heartbeat for {age:.0f} s",
            )
        try:
            self.write()
            self.renewed = time.monotonic()
        except (FileNotFoundError, PermissionError) as e:  # no such bucket, or no right to write
            raise ValueError(
                f"{self.dst.uri} cannot be written ({error_text(e)}): check that it exists and "
                "that these credentials may write to it"
            ) from None
        except (NotADirectoryError, FileExistsError) as e:  # a file where a folder must be
            raise ValueError(
                f"{self.dst.uri} cannot be written ({error_text(e)}): a file stands where a "
                f"folder of the {self.record['job']}'s must be; give another DST, or move the file"
            ) from None
        except OSError as e:
            if not no_room(e):
                raise
            raise ValueError(  # the error, not the name of the lease's temporary file
                f"{self.dst.uri} cannot be written ([Errno {e.errno}] {e.strerror}): free space "
                "on its disk, or make it writable, or give another DST"
            ) from None
        time.sleep(SETTLE_S)
        won = self.read()
        if not won or won.get("token") != self.record["token"]:
            raise ValueError(busy(self.dst, won or {}, 0.0))
        self.thread = threading.Thread(target=self.beat, daemon=True, name="tadm-lease")
        self.thread.start()

    def beat(self) -> None:
        """Rewrite the heartbeat every HEARTBEAT_S seconds until released or taken over. A
        failed read or write (storage unreachable for a while) is logged and the next beat
        tries again; after LOST_S without one, `check` says the lease is lost."""
        while not self.stop.wait(HEARTBEAT_S):
            try:
                held = self.read()
                if held and held.get("token") != self.record["token"]:
                    self.taken_by = holder(held)
                    logger.error("lease: %s was taken over by %s", self.dst.uri, self.taken_by)
                    return
                self.write()
                self.renewed = time.monotonic()
            except Exception as e:  # s3fs raises more than OSError for a lost connection
                logger.warning("lease: heartbeat failed, trying again: %s", error_text(e))

    def fence(self) -> Fence:
        return Fence(self.dst, self.record["token"])

    def check(self) -> None:
        """LeaseLost when another job holds the lease now, or when no heartbeat has been
        written for LOST_S: another job may take it over at TIMEOUT_S."""
        if self.taken_by is not None:
            raise LeaseLost(f"the lease of DST {self.dst.uri!r} was taken over by {self.taken_by}")
        silent = time.monotonic() - self.renewed
        if silent > LOST_S:
            raise LeaseLost(
                f"the lease of DST {self.dst.uri!r} could not be renewed for {silent:.0f} s "
                f"(the storage out of reach?): another job may take it over after "
                f"{TIMEOUT_S:.0f} s"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this job's; when the
        storage cannot be reached, leave it (a later job takes it over) and log why."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        try:
            held = self.read()
            if held and held.get("token") == self.record["token"]:
                self.fs.rm(self.path)
        except Exception as e:
            logger.warning("lease: %s cannot be removed: %s", self.dst.uri, error_text(e))


@dataclass(frozen=True)
class Fence:
    """What a write stage checks before each batch it writes into `dst` (in Ray workers, so
    picklable): that no other job's `token` is in the lease."""

    dst: Location
    token: str

    def check(self) -> None:
        """LeaseLost when the lease holds another job's token. DstNotSeen when a local DST has
        no lease where this runs: the job wrote it before any task, and rewrites it in place
        (os.replace), so this node does not see the driver's folder (a node that joined the
        Ray cluster after check_nodes, say) and would write its own disk. Otherwise a lease that
        cannot be read now, or none on S3, stops nothing: the job's own heartbeat rewrites it,
        and its driver stops the job when it cannot (Lease.check)."""
        try:
            held = json.loads(self.dst.filesystem().cat_file(self.dst.path(LEASE)))
        except (FileNotFoundError, NotADirectoryError):
            if self.dst.protocol == "file":
                raise DstNotSeen(self.dst.uri, socket.gethostname()) from None
            return
        except Exception:  # s3fs raises more than OSError; ValueError: half a JSON object
            return
        if isinstance(held, dict) and held.get("token") not in (None, self.token):
            raise LeaseLost(f"the lease of DST {self.dst.uri!r} was taken over by {holder(held)}")


class DstNotSeen(RuntimeError):
    """A write task found no lease in a local DST (Fence.check): the node it runs on does not
    see the folder the job's driver writes; nothing was written there."""

    def __init__(self, uri: str, host: str) -> None:
        super().__init__(uri, host)  # as Ray makes it again from its args on the driver

    def __str__(self) -> str:
        uri, host = self.args
        return (
            f"DST {uri!r} is a local path that host {host} of the Ray cluster does not see (no "
            "lease of this job there; it joined after the job started, or DST's lease was "
            "deleted): it would write its own disk, so the job stopped, keeping the rows of "
            "the images it did. Give s3:// URIs, or a folder every node mounts at the same "
            "path, and run it again"
        )


class LeaseLost(RuntimeError):
    """A job lost DST's lease (Lease.check): it stops, keeping the rows of the images it did,
    without compacting the manifest, which another job may be writing."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}; the job stopped, the rows of the images it did are kept: "
            "run it again once no other job writes DST"
        )


def gone_here(record: dict[str, Any]) -> bool:
    """The holder ran on this host and its process no longer exists."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def running(record: dict[str, Any]) -> bool:
    """The holder of the lease `record` may run still: its heartbeat is under TIMEOUT_S old
    and its process is not known to be gone."""
    return time.time() - heartbeat_time(record) < TIMEOUT_S and not gone_here(record)


def heartbeat_time(record: dict[str, Any]) -> float:
    return record_time(record, "heartbeat") or 0.0


def record_time(record: dict[str, Any], key: str) -> float | None:
    """A lease record's time `key` ("started", "heartbeat") as time.time() gives it; None when
    it has none that reads."""
    try:
        return datetime.fromisoformat(record[key]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def holder(record: dict[str, Any]) -> str:
    job, host, pid = record.get("job", "a job"), record.get("host", "?"), record.get("pid", "?")
    return f"{job} on host {host} pid {pid} started {record.get('started', '?')}"


def unfinished(dst: Location) -> str | None:
    """What DST's lease says, where one is: a job runs there now, or stopped before it
    finished (killed, say), so its manifest may lack images; None where none is."""
    held = Lease(dst, "inspect").read()
    if held is None:
        return None
    age = time.time() - heartbeat_time(held)
    if gone_here(held):
        state = "its process is gone: it stopped before it finished"
    elif age >= TIMEOUT_S:
        state = f"no heartbeat for {age:.0f} s: it stopped before it finished"
    else:
        state = f"heartbeat {age:.0f} s ago: it runs now, or stopped before it finished"
    return (
        f"lease: {holder(held)} ({state}); the images it has not archived, --source SRC names, "
        "and running it again finishes them"
    )


def busy(dst: Location, record: dict[str, Any], age: float) -> str:
    return (
        f"DST {dst.uri!r} is in use by {holder(record)} (heartbeat {age:.0f} s ago): wait for it "
        f"to finish; a lease without heartbeat for {TIMEOUT_S:.0f} s is taken over"
    )
