"""What the model and write stages of archive and restore share.

`ModelStage` is the base of Downscale and Upscale: one TADM per instance (Ray runs it as an
actor pool, one model per actor), rows grouped into model calls, a failed call turned into error
rows. `write_files` is the body of both write stages: atomic writes, one error row per failure;
`remove_earlier` takes away an image's output of the other kind (LR or kept) a run replaced.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, NamedTuple

import fsspec
import numpy as np
import torch

from pipeline.format import PERMANENT, TRANSIENT
from pipeline.rows import error_kind, error_text, model_calls, to_batch, to_rows
from pipeline.storage import (
    DstFull,
    Location,
    NotAsRecorded,
    check_inside,
    copy_atomic,
    file_sha256,
    no_room,
    write_atomic,
)
from tadm import TADM
from tadm.images import to_images
from tadm.precision import resolve_precision

Row = dict[str, Any]


def model_location(given: str) -> str:
    """A --model as every node of a cluster reads it: a local folder's absolute path, with `~`
    expanded (a relative path names the driver's working folder, which the model actors on
    another node do not run in); a shipped checkpoint's name, a URI, or a path to nothing (which
    load_model names as given) as given."""
    from tadm.hub import shipped_names

    path = os.path.expanduser(given)
    if "://" in given or given in shipped_names() or not os.path.exists(path):
        return given
    return os.path.abspath(path)


def load_model(ref: str, storage_options: dict[str, Any]) -> TADM:
    """TADM from `ref`: a shipped name ("tiny-x16"), a local folder, file:// or s3:// URI (read
    with `storage_options`). Raise ValueError naming `ref` (once) when it does not load."""
    try:
        return TADM.from_pretrained(ref, storage_options=storage_options)
    except (ValueError, OSError) as e:
        named = "model" if ref in str(e) else f"model {ref!r}"
        raise ValueError(f"{named} cannot be loaded: {e}") from None


def inference_model(
    ref: str, storage_options: dict[str, Any], device: torch.device, precision: str | None
) -> TADM:
    """`load_model(ref)` on `device`, for inference in `precision` (None: the device's default,
    fp16 on CUDA and fp32 on a CPU; ValueError when the device does not run it). On a CPU the
    weights are channels-last: the shipped models run 1.2 to 1.5x faster (benchmarks/README.md),
    and an fp32 LR differs from a contiguous run's in at most 0.5% of its pixels, by one level."""
    precision = resolve_precision(precision, device)
    model = load_model(ref, storage_options).to(device).eval().to_precision(precision)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


class ModelStage(ABC):
    """Callable stage: rows whose status is "ok" go through the model, `run` on each group of
    rows one model call takes; the others pass through. A failed call becomes error rows for
    the images it held, and each row's "seconds" gets its share of its call's time.

    Subclasses set `columns` (the output batch's, "precision" among them: what the model ran
    in, on the rows it ran on) and define `size` (rows of the same size can share a call), `run`
    (fill the rows of one call) and, if they need to, `every_row` (values every output row
    carries).
    """

    columns: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        torch_threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = inference_model(model, storage_options, self.device, precision)
        self.model_id = self.model.model_id  # a hash of every weight: compute once

    def every_row(self) -> Row:
        """Values every output row carries, error rows included."""
        return {}

    @abstractmethod
    def size(self, row: Row) -> Hashable:
        """What rows that may share one model call (on a GPU) have in common."""

    @abstractmethod
    def run(self, group: list[Row]) -> None:
        """One model call on `group`, filling its rows."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = to_rows(batch)
        for row in rows:
            row.update(self.every_row())
        ok = [row for row in rows if row["status"] == "ok"]
        for row in ok:
            row["precision"] = self.model.precision
        stack = self.device.type != "cpu"
        for group in model_calls(ok, self.size, stack):
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    self.run(group)
            except Exception as e:  # one failure must not stop the job: it becomes rows
                for row in group:
                    error = f"model failed: {type(e).__name__}: {e}"
                    row.update(status="error", error=error, error_kind=TRANSIENT)
            share = (time.perf_counter() - start) / len(group)
            for row in group:
                row["seconds"] += share
        return to_batch(rows, self.columns)


def restored_images(x_hat: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) float in [0, 1] -> B (H, W, 3) uint8 images, rounded as tadm.images.to_pixels
    rounds; converted in place (x_hat is overwritten), so no second float copy of a large image
    is made."""
    return to_images(x_hat.clamp_(0, 1).mul_(255).round_().to(torch.uint8))


def fail(row: Row, error: str, kind: str) -> None:
    """Make `row` an error row: its quality figures go, as nothing they describe is written."""
    row.update(status="error", error=error, error_kind=kind, psnr=None, ssim=None)


class Earlier(NamedTuple):
    """An output a row's new one replaces: its key under DST, what it is ("LR"), the SHA-256
    recorded of its bytes (None: none recorded), and whether it may be removed only when
    those bytes prove it as written (`proven`): a restore's DST is a user's folder, where a
    file no SHA-256 vouches for may be an edit. The archive's own lr/ and kept/ files without
    a SHA-256 recorded are removed as they are."""

    key: str
    what: str
    sha256: str | None = None
    proven: bool = False


def remove_earlier(
    rows: list[Row], dst: Location, earlier: Callable[[Row], Earlier | None]
) -> None:
    """Remove the earlier output of each row written now under another key (`earlier(row)`,
    or None). One whose bytes are not its `sha256`, or that must be `proven` and has none,
    stays, and the row's conversion says so. A removal that fails makes the row a transient
    error, for a re-run to finish."""
    fs = dst.filesystem()
    for row in rows:
        found = earlier(row)
        if found is None:
            continue
        key, what, sha256, proven = found
        try:
            path = dst.join(key)  # join refuses a key that would leave dst
            if dst.protocol == "file":
                check_inside(dst.root, os.path.dirname(path))
            note = f"the earlier {what} {key} was changed since it was written: left there"
            if dst.protocol == "file" and os.path.islink(path):
                changed = True  # no job writes a link: someone put it there
            elif sha256:
                changed = file_sha256(fs, path) != sha256
            else:
                changed = proven and fs.exists(path)
                note = (
                    f"the earlier {what} {key} has no SHA-256 recorded to tell whether it was "
                    "changed since it was written: left there"
                )
            if changed:
                row["conversion"] = "; ".join(filter(None, [row.get("conversion"), note]))
                continue
            fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as e:
            error = f"cannot remove the earlier {what} {dst.uri_of(dst.path(key))}: "
            error += error_text(e)
            fail(row, error, TRANSIENT)


def write_failure(e: Exception, path: str, protocol: str, clash: str) -> tuple[str, str]:
    """The error_kind of a failed write and what to add to its message: a name longer than the
    filesystem holds (a local file name over its limit, an S3 key over 1024 bytes) fails on
    every run (permanent); so does a local file where a folder must be, or the reverse (the
    outputs of two names such as "a.png" and "a.png.png/b.png", or a file left in DST): what is
    in the way, then `clash`, what to do; any other failure is I/O a re-run may get past
    (transient)."""
    code = getattr(e, "errno", None)
    if code == errno.ENAMETOOLONG and protocol == "s3":
        key = os.fsencode(path.partition("/")[2])
        return PERMANENT, f" (the key is {len(key)} bytes; S3 allows 1024): rename the source"
    if code == errno.ENAMETOOLONG:
        name = os.fsencode(os.path.basename(path))
        return PERMANENT, (
            f" (the name is {len(name)} bytes with its suffix; this filesystem allows fewer, "
            "most allow 255): rename the source"
        )
    if code in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR) and protocol == "file":
        return PERMANENT, f" ({in_the_way(path)}: a file and a folder of one name): {clash}"
    return TRANSIENT, ""


def in_the_way(path: str) -> str:
    """What stops the local file `path` from being written: a folder of its name, or the file
    that stands where one of its folders must be."""
    if os.path.isdir(path):
        return f"{path} is a folder"
    folder = os.path.dirname(path)
    while folder != os.path.dirname(folder) and not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    return f"{folder} is a file, where a folder must be"


class Copy(NamedTuple):
    """A file to copy as it is, for `write_files`, where others give the bytes to write: its
    filesystem and path, the SHA-256 and size it must have (None: any; storage.copy_atomic),
    and, for a file that has others, what to say and the error_kind."""

    fs: fsspec.AbstractFileSystem
    path: str
    sha256: str | None
    size: int | None
    changed: Callable[[str], str]  # what differs -> the error
    kind: str


def write_files(
    rows: list[Row],
    dst: Location,
    uri_column: str,
    output: Callable[[Row], tuple[str, bytes | Copy]],
    status: str = "ok",
    sha_column: str | None = None,
    size_column: str | None = None,
    mtime_of: Callable[[Row], int | None] | None = None,
    *,
    clash: str,
    headers_of: Callable[[Row], dict[str, Any] | None] | None = None,
) -> list[Row]:
    """Write the file of each row with `status` atomically: `output(row)` gives its key under
    `dst` (checked by Location.join: a key that would leave `dst` is never written) and its
    bytes, or the file to copy. The row gets the file's URI in `uri_column`, and its SHA-256
    and size in `sha_column` and `size_column` if given; or status "error" saying why, when
    the key is refused, or encoding, copying or writing fails (`fail`). The time, encoding
    included, is added to its "seconds". A local file gets the modification time
    `mtime_of(row)` (nanoseconds since the epoch; None: now, or a copied file's), an S3 one
    written from bytes the S3 PUT arguments `headers_of(row)` (write_atomic's headers).
    `clash`: what to do when a file and a folder of one name clash (write_failure). DstFull,
    stopping the job, when DST's disk takes no more files (full, or read-only)."""
    fs = dst.filesystem()
    for row in rows:
        if row["status"] != status:
            continue
        start = time.perf_counter()
        try:
            key, data = output(row)
            path = dst.join(key)
        except Exception as e:  # one image must not stop the job: it becomes its row
            fail(row, f"cannot write: {error_text(e)}", error_kind(e))
        else:
            mtime_ns = None if mtime_of is None else mtime_of(row)
            try:
                if isinstance(data, Copy):
                    size, sha256 = copy_atomic(
                        data.fs, data.path, fs, path, data.sha256, data.size, dst.root, mtime_ns
                    )
                else:
                    headers = None if headers_of is None else headers_of(row)
                    write_atomic(fs, path, data, dst.root, mtime_ns, headers)
                    size, sha256 = len(data), sha_column and hashlib.sha256(data).hexdigest()
                row[uri_column] = dst.uri_of(path)
                if sha_column:
                    row[sha_column] = sha256
                if size_column:
                    row[size_column] = size
            except NotAsRecorded as e:
                assert isinstance(data, Copy)
                fail(row, data.changed(str(e)), data.kind)
            except Exception as e:
                if no_room(e):  # so would every file after it
                    raise DstFull(f"cannot write {dst.uri_of(path)}: {error_text(e)}") from e
                kind, hint = write_failure(e, path, dst.protocol, clash)
                fail(row, f"cannot write {dst.uri_of(path)}: {error_text(e)}{hint}", kind)
        row["seconds"] += time.perf_counter() - start
    return rows
