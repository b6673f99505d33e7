"""Where archives live: local paths, file:// and s3:// URIs, with atomic writes.

Every read and write goes through a `Location`, which carries the filesystem protocol, a root
path and explicit storage options. S3 options are resolved once, in the driver, from the
standard AWS_* variables plus `--storage-options`, and then travel with the tasks: Ray workers
never depend on the driver's environment, and pyarrow's S3FileSystem (which ignores
AWS_ENDPOINT_URL) is never used; Ray reads S3 through s3fs wrapped in a pyarrow PyFileSystem.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import stat
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import fsspec
import pyarrow.fs
from fsspec.implementations.local import LocalFileSystem
from s3fs.core import S3_RETRYABLE_ERRORS

from pipeline.format import check_rel_path
from pipeline.metadata import S3_NAMES, s3_header_values, s3_tags_text
from pipeline.rows import error_text

# Storage options logged in clear; every other value, at any depth, is logged as MASK.
PLAIN_OPTIONS = frozenset(
    {
        "endpoint_url",
        "region",
        "region_name",
        "anon",
        "use_ssl",
        "requester_pays",
        "version_aware",
        "default_block_size",
        "default_cache_type",
        "default_fill_cache",
        "max_concurrency",
        "client_kwargs",
        "config_kwargs",
        "s3",
        "addressing_style",
        "signature_version",
        "connect_timeout",
        "read_timeout",
        "max_pool_connections",
        "verify",
    }
)
MASK = "***"
# s3fs's aliases of its credentials, and the variable that gives the same credential: s3fs
# refuses both at once (KeyError), so a job refuses them first, naming the two sources.
CREDENTIAL_ALIASES = {
    "username": ("key", "AWS_ACCESS_KEY_ID"),
    "password": ("secret", "AWS_SECRET_ACCESS_KEY"),
}


def s3_options(storage_options: dict[str, Any]) -> dict[str, Any]:
    """s3fs options from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN and AWS_DEFAULT_REGION; keys given in `storage_options` win. ValueError
    when a credential is given twice (an s3fs alias such as username beside key or beside its
    AWS_* variable), naming the two sources, never the values."""
    env = os.environ
    for alias, (name, variable) in CREDENTIAL_ALIASES.items():
        if alias not in storage_options:
            continue
        if name in storage_options:
            raise ValueError(
                f"the storage options give both {alias!r} and {name!r}, the same credential: "
                "keep one"
            )
        if env.get(variable):
            raise ValueError(
                f"the storage options give {alias!r} and {variable} is set: both give the same "
                f"credential; unset {variable} or pass {name!r} instead of {alias!r}"
            )
    options: dict[str, Any] = {}
    if endpoint := env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = endpoint
    if key := env.get("AWS_ACCESS_KEY_ID"):
        options["key"] = key
    if secret := env.get("AWS_SECRET_ACCESS_KEY"):
        options["secret"] = secret
    if token := env.get("AWS_SESSION_TOKEN"):
        options["token"] = token
    if region := env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"):
        options["client_kwargs"] = {"region_name": region}
    options.update(storage_options)
    return options


def check_s3_options(storage_options: dict[str, Any]) -> None:
    """ValueError unless s3fs takes `storage_options` (with the AWS_* variables): a client is
    made, which needs no network. The message names the problem, never a value."""
    options = s3_options(storage_options)
    try:
        fsspec.filesystem("s3", skip_instance_cache=True, **options).connect()
    except Exception as e:  # whatever s3fs or botocore refuses is a configuration error
        # Their messages name an argument, a profile or a URL; a URL's user is masked.
        message = redact_url(str(e)) if "://" in str(e) else str(e)
        raise ValueError(f"s3fs does not take them: {type(e).__name__}: {message}") from None


@dataclass(frozen=True)
class Location:
    """A tree of objects: `protocol` "file" or "s3", and `root`, a filesystem path (absolute
    local path, or "bucket/prefix" for S3) without a trailing slash."""

    protocol: str
    root: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, uri: str, storage_options: dict[str, Any] | None = None) -> Location:
        """Parse a local path, file:// or s3:// URI; raise ValueError naming a bad one."""
        if not uri:
            raise ValueError("URI is empty: give a local path, file://... or s3://bucket/prefix")
        scheme, sep, rest = uri.partition("://")
        if not sep:
            return cls("file", os.path.abspath(uri).rstrip("/") or "/")
        if scheme == "file":
            if not rest.startswith("/"):
                raise ValueError(f"URI {uri!r}: a file:// URI needs an absolute path")
            return cls("file", os.path.abspath(rest).rstrip("/") or "/")
        if scheme == "s3":
            root = rest.strip("/")
            if not root or root.startswith("."):
                raise ValueError(f"URI {uri!r}: an s3:// URI needs a bucket name")
            if {"", ".", ".."} & set(root.split("/")):
                # S3 keeps them in keys, where a path would not: "s3://b/a/." is not "s3://b/a"
                raise ValueError(
                    f"URI {uri!r}: an s3:// URI must not have empty, '.' or '..' segments"
                )
            return cls("s3", root, s3_options(storage_options or {}))
        raise ValueError(
            f"URI {uri!r}: unsupported scheme {scheme!r} (use a path, file:// or s3://)"
        )

    @property
    def uri(self) -> str:
        return self.uri_of(self.root)

    def uri_of(self, path: str) -> str:
        """The URI users see for a filesystem path: "s3://bucket/key" or a local path."""
        return f"s3://{path}" if self.protocol == "s3" else path

    def path(self, *parts: str) -> str:
        """The filesystem path of `parts` ("/"-separated relative paths) under the root."""
        return posixpath.join(self.root, *parts)

    def join(self, key: str) -> str:
        """The filesystem path of `key` under the root: `key` must pass check_rel_path (a
        ValueError naming it otherwise), so the path never leaves the root."""
        return posixpath.join(self.root, check_rel_path(key))

    def child(self, *parts: str) -> Location:
        return Location(self.protocol, self.path(*parts), self.options)

    def contains(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip("/") + "/")

    def within(self, other: Location) -> bool:
        """This tree is `other` or lies inside it (the same filesystem; local paths compared
        with symlinks resolved)."""
        if self.protocol != other.protocol:
            return False
        if self.protocol == "file":
            real = os.path.realpath(other.root)
            return Location("file", real).contains(os.path.realpath(self.root))
        return other.contains(self.root)

    def filesystem(self) -> fsspec.AbstractFileSystem:
        """A fresh fsspec filesystem: no cached instance, so no stale listing."""
        if self.protocol == "s3":
            return fsspec.filesystem("s3", skip_instance_cache=True, **self.options)
        return fsspec.filesystem("file")

    def arrow_filesystem(self) -> pyarrow.fs.FileSystem:
        """The filesystem for Ray's readers: s3fs wrapped for pyarrow, or the local one."""
        if self.protocol == "s3":
            return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.filesystem()))
        return pyarrow.fs.LocalFileSystem()

    def redacted_options(self) -> dict[str, Any]:
        """The options for logging: only PLAIN_OPTIONS in clear, everything else masked."""
        return redact(self.options)


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the value of every key not in PLAIN_OPTIONS replaced by MASK, nested
    dicts included, and the user and password of an endpoint URL masked."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in PLAIN_OPTIONS:
            out[key] = MASK
        elif isinstance(value, dict):
            out[key] = redact(value)
        elif key == "endpoint_url" and isinstance(value, str):
            out[key] = redact_url(value)
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        else:
            out[key] = MASK
    return out


def secrets(options: dict[str, Any]) -> set[str]:
    """The texts `redact` masks in `options`: every string value of a key not in PLAIN_OPTIONS
    (nested dicts included) and the user and password of an endpoint URL; what must not appear
    in a log."""
    found: set[str] = set()
    for key, value in options.items():
        if key not in PLAIN_OPTIONS:
            found |= strings(value)
        elif isinstance(value, dict):
            found |= secrets(value)
        elif key == "endpoint_url" and isinstance(value, str):
            parts = urllib.parse.urlsplit(value)
            found |= {part for part in (parts.username, parts.password) if part}
    return {text for text in found if text}


def strings(value: Any) -> set[str]:
    """The strings in `value`, in nested dicts and lists too."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(strings(item) for item in value))
    return set()


def redact_url(url: str) -> str:
    """`url` with any user:password@ replaced by MASK@."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


TEMP = r"\.[^/]+\.[0-9a-f]{32}\.tmp"  # write_atomic's temporary files' names
TEMP_NAME = re.compile(rf"^{TEMP}\Z")
TEMP_PATH = rf"(^|/){TEMP}\z"  # a "/"-separated path to one, for Arrow
TEMP_NAME_BYTES = 64  # of the final name, in a temporary one
COPY_CHUNK = 8 * 2**20  # bytes a copy holds at a time
STALE_TEMP_S = 600  # a temporary file lives for one write; one this old belongs to a dead job
# A file's mtime and time.time() may differ by a clock tick: a temporary file this much older
# than a job's lease was not written by that job.
CLOCK_MARGIN_S = 1.0
# A local write that fails so fails for every file after it: the disk (or the user's quota)
# is full, or it is read-only.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def no_room(e: BaseException) -> bool:
    """Whether `e` says that the disk written takes no more files (NO_ROOM)."""
    return getattr(e, "errno", None) in NO_ROOM


class DstFull(RuntimeError):
    """A file of the job could not be written into DST because its disk takes no more
    (no_room): every file after it would fail too, so the job stops. Its message says which
    file failed, and how."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}: DST's disk takes no more files: free space on it, or make it "
            "writable, and run the job again, which does the images not done yet"
        )


def read_recorded(uri: str, size: int | None, sha256: str, options: dict[str, Any]) -> bytes:
    """The bytes of the file at `uri` (a manifest's source_uri) while it is the file the
    manifest recorded: a regular file of `size` bytes (None: not recorded) whose SHA-256 is
    `sha256`. Nothing else is read, as a manifest is data: its URI may name a FIFO, a device
    or a file larger than memory. A ValueError says why not."""
    try:
        location = Location.parse(uri, options)
        fs = location.filesystem()
        info = fs.info(location.root)
        if info.get("type") != "file":
            raise ValueError(f"source {uri} is not a regular file")
        if size is not None and info.get("size") != size:
            raise ValueError(f"source {uri} changed since it was archived (its size)")
        data = fs.cat_file(location.root)
    except OSError as e:
        raise ValueError(f"source {uri} cannot be read: {e}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"source {uri} changed since it was archived")
    return data


def stale_temps(
    fs: fsspec.AbstractFileSystem, root: str, since: float | None, before: float
) -> list[str]:
    """The temporary files of write_atomic that a stopped job left under `root` on a local
    disk: those last written over STALE_TEMP_S ago, or, where the stopped job is known (the
    lease taken over from it), between `since`, when it started, and `before`, when the job
    now holding the lease took it (no other job writes there meanwhile). A file of another's
    named so (a kept source) may be among them: the caller leaves those a manifest records."""
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(root):
        return []
    found, now = [], time.time()
    for directory, _, names in os.walk(root):
        for name in filter(TEMP_NAME.match, names):
            path = os.path.join(directory, name)
            try:
                mtime = os.path.getmtime(path)
            except FileNotFoundError:  # removed meanwhile
                continue
            stopped = since is not None and since - CLOCK_MARGIN_S <= mtime
            if now - mtime > STALE_TEMP_S or (stopped and mtime < before - CLOCK_MARGIN_S):
                found.append(path)
    return found


def temp_stem(name: str) -> str:
    """What of the name of the file it becomes a temporary file's name holds: its first
    TEMP_NAME_BYTES only, as a long name must not fail for its temporary."""
    return os.fsencode(name)[:TEMP_NAME_BYTES].decode(errors="ignore")


def temp_target(name: str) -> str:
    """temp_stem of the file a temporary file (its name matches TEMP_NAME) becomes."""
    return name[1 : -len(f".{uuid.UUID(int=0).hex}.tmp")]


def check_inside(root: str, path: str) -> None:
    """OSError unless local `path` stays in the folder `root` with symlinks resolved: a link
    planted in a folder on the way (DST/lr/sub -> /elsewhere) must not take a write or a
    removal outside the root. The deepest part of `path` that exists is resolved, so nothing
    is created before the check."""
    existing = path
    while existing != root and not os.path.lexists(existing) and existing != "/":
        existing = os.path.dirname(existing)
    if not Location("file", existing).within(Location("file", root)):
        raise OSError(
            f"{existing} leads outside {root} (to {os.path.realpath(existing)}) through a "
            "symbolic link: remove the link"
        )


@contextlib.contextmanager
def local_temp(
    path: str, root: str | None, mode: int | None = None, mtime_ns: int | None = None
) -> Iterator[BinaryIO]:
    """A file to write whose bytes become the local file `path` only when the block ends
    without an exception: they go to a hidden temporary file beside `path`, which os.replace
    renames into place; a job killed in between leaves only that hidden ".*.tmp" file, never
    a truncated `path` (the next run deletes it: stale_temps). With `root`, `path`
    must stay in it (check_inside); with `mode` and `mtime_ns`, the file has these permission
    bits and modification time when it appears."""
    directory, name = os.path.split(path)
    if root is not None:
        check_inside(root, directory)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{temp_stem(name)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        if mode is not None:
            os.chmod(tmp, mode)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(
    fs: fsspec.AbstractFileSystem,
    path: str,
    data: bytes,
    root: str | None = None,
    mtime_ns: int | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Write `data` so that `path` is never seen half-written: on S3 a single PUT (or a
    completed multipart upload) is atomic, with the `headers` given (its arguments: "Metadata",
    the user metadata, "Tagging", the object tags); on a local disk, through local_temp (with
    `root`, a local `path` must stay in it; with `mtime_ns`, its modification time: S3 has none
    to set)."""
    if isinstance(fs, LocalFileSystem):
        with local_temp(path, root, mtime_ns=mtime_ns) as f:
            f.write(data)
    else:
        fs.pipe_file(path, data, **(headers or {}))


def s3_object(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    """The S3 object at `path` as boto's calls name it: Bucket, Key, and a versioned path's
    VersionId."""
    bucket, key, version = fs.split_path(path)
    return {"Bucket": bucket, "Key": key} | ({"VersionId": version} if version else {})


def user_metadata(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    """The user metadata (x-amz-meta-*, names without that prefix, as S3 gives them) of the S3
    object at `path`, in a HEAD of its own: a listing or GET through s3fs does not give it
    (and s3fs's own `metadata` turns each "_" of a name into "-"). Nothing for a local file."""
    if isinstance(fs, LocalFileSystem):
        return {}
    return dict(fs.call_s3("head_object", **s3_object(fs, path)).get("Metadata") or {})


def object_tags(fs: fsspec.AbstractFileSystem, path: str) -> list[tuple[str, str]]:
    """The tags of the S3 object at `path`, in the order S3 gives them."""
    tagging = fs.call_s3("get_object_tagging", **s3_object(fs, path))
    return [(tag["Key"], tag["Value"]) for tag in tagging.get("TagSet") or ()]


def tag_count(fs: fsspec.AbstractFileSystem, path: str, empty: bool) -> int:
    """How many tags the S3 object at `path` has: a GET gives their number (a HEAD does not),
    here a GET of its first byte, or of the whole of an `empty` one, which has none."""
    first = {} if empty else {"Range": "bytes=0-0"}
    response = fs.call_s3("get_object", **s3_object(fs, path), **first)
    response["Body"].close()
    return int(response.get("TagCount") or 0)


def left_out_locally(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """What a local copy of the file at `path` leaves out of it: an S3 object's user metadata
    and tags, where it has any ("S3 user metadata, S3 object tags (a local file holds none)"),
    or that they could not be read; None for a local file, or an object without them."""
    if isinstance(fs, LocalFileSystem):
        return None
    try:
        head = fs.call_s3("head_object", **s3_object(fs, path))
        tags = tag_count(fs, path, head.get("ContentLength") == 0)
        left = [S3_NAMES["s3_metadata"]] if head.get("Metadata") else []
        left += [S3_NAMES["s3_tags"]] if tags else []
    except Exception as e:  # the copy is made: this only names what it lacks
        return f"S3 user metadata and object tags, if any (reading them failed: {error_text(e)})"
    return f"{', '.join(left)} (a local file holds none)" if left else None


def object_headers(source_fs: fsspec.AbstractFileSystem, source: str, f: Any) -> dict[str, Any]:
    """What an S3 copy of the S3 object `source` (open as `f`) carries of it beside its bytes:
    its Content-Type, user metadata and tags (read only when it has some: a policy may refuse
    s3:GetObjectTagging, which then fails the copy of an object that has tags, saying so,
    rather than lose them). Nothing for a local source."""
    if isinstance(source_fs, LocalFileSystem):
        return {}
    details = getattr(f, "details", None) or {}
    count = tag_count(source_fs, source, details.get("size") == 0)
    try:
        tags = object_tags(source_fs, source) if count else []
    except PermissionError:
        raise PermissionError(
            f"reading the source's {count} S3 object tags was refused (s3:GetObjectTagging "
            "reads them): a copy would lose them"
        ) from None
    headers = {
        # What DST's store refuses (over its size limit, say) fails the copy, which says why.
        "Metadata": s3_header_values(user_metadata(source_fs, source)),
        "Tagging": (s3_tags_text(tags) or b"").decode(),
        "ContentType": details.get("ContentType"),
    }
    return {k: v for k, v in headers.items() if v}


@contextlib.contextmanager
def open_file(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[BinaryIO]:
    """The file at `path`, open to read; a local one only while it is a regular file (a FIFO
    put in its place would block the job forever: NotAsRecorded says so)."""
    if not isinstance(fs, LocalFileSystem):
        with fs.open(path, "rb") as f:
            yield f
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAsRecorded("it is not a regular file")
        yield f


@dataclass(frozen=True)
class Read:
    """A file's bytes as read_source read them, with, for an S3 object, its user metadata
    (x-amz-meta-*, names without that prefix, as S3 gives them), ETag (without quotes) and
    tags (object_tags) of that same version; {}, None and [] for a local file. `not_read` names
    what could not be read beside the bytes (tags whose reading was refused)."""

    data: bytes
    user_metadata: dict[str, str]
    etag: str | None
    tags: list[tuple[str, str]]
    not_read: str | None = None


def read_source(fs: fsspec.AbstractFileSystem, path: str) -> Read:
    """The file at `path`, read whole: a local one through open_file (only while it is a
    regular file), an S3 object in one GET, whose response gives its user metadata and ETag
    too (s3fs's cat_file asks for its size in a HEAD first, and a second HEAD would be needed
    for its user metadata, which may be another version's); its tags in a request of their own
    when it has any (the GET gives their number). s3fs retries the request, not the reading of
    its body: a body cut short (a connection lost) is read again, up to s3fs's `retries` times
    in all."""
    if isinstance(fs, LocalFileSystem):
        with open_file(fs, path) as f:
            return Read(f.read(), {}, None, [])
    attempts = 1
    while True:
        response = fs.call_s3("get_object", **s3_object(fs, path))
        body = response["Body"]
        try:
            data = fsspec.asyn.sync(fs.loop, body.read)
            break
        except S3_RETRYABLE_ERRORS:
            if attempts >= fs.retries:
                raise
            attempts += 1
        finally:
            body.close()
    etag = response.get("ETag", "").strip('"') or None
    user, count = dict(response.get("Metadata") or {}), response.get("TagCount")
    try:
        return Read(data, user, etag, object_tags(fs, path) if count else [])
    except PermissionError:  # a policy that grants s3:GetObject, not s3:GetObjectTagging
        refused = f"{count}: reading them was refused; s3:GetObjectTagging reads them"
        return Read(data, user, etag, [], f"{S3_NAMES['s3_tags']} ({refused})")


def version(fs: fsspec.AbstractFileSystem, path: str, f: BinaryIO) -> tuple[Any, ...]:
    """What changes when the open file `f` at `path` is written: a local file's size and
    modification time, an S3 object's size and ETag."""
    if isinstance(fs, LocalFileSystem):
        found = os.fstat(f.fileno())
        return found.st_size, found.st_mtime_ns
    fs.invalidate_cache(path)
    info = fs.info(path)
    return info["size"], info.get("ETag")


def file_sha256(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The SHA-256 of a file of any size, read COPY_CHUNK bytes at a time."""
    digest = hashlib.sha256()
    with open_file(fs, path) as f:
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class NotAsRecorded(ValueError):
    """The file read is not the one recorded: its size or SHA-256 differs, it was written to
    while it was read, or it is not a regular file."""


def copy_atomic(
    source_fs: fsspec.AbstractFileSystem,
    source: str,
    fs: fsspec.AbstractFileSystem,
    path: str,
    sha256: str | None = None,
    size: int | None = None,
    root: str | None = None,
    mtime_ns: int | None = None,
) -> tuple[int, str]:
    """Copy the file `source` of `source_fs` to `path` as write_atomic writes, COPY_CHUNK
    bytes at a time, so that a file of any size takes that much memory; return its size and
    SHA-256. With `sha256` (and `size`), only those bytes are copied: for others nothing is
    written and NotAsRecorded says what was found; a source longer than `size` is read no
    further; one written while it was copied (its size, and modification time or ETag, differ
    after), or that is not a regular file, too. A local copy has the modification time
    `mtime_ns`, or else a local source's, and a local source's permission bits, as `cp -p`
    copies them. On S3 the parts are uploaded without a commit, and completed only when the
    whole file is there and right (aborted otherwise); an S3 source's Content-Type, user
    metadata (x-amz-meta-*) and tags go with it (object_headers)."""
    digest, copied = hashlib.sha256(), 0

    def pump(f: BinaryIO, out: BinaryIO) -> None:
        nonlocal copied
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
            copied += len(chunk)
            if size is not None and copied > size:
                raise NotAsRecorded(f"it has more than the {size} bytes recorded")
            out.write(chunk)
        if size is not None and copied != size:
            raise NotAsRecorded(f"it has {copied} bytes, not the {size} recorded")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise NotAsRecorded(f"its SHA-256 is {digest.hexdigest()}, not the one recorded")
        if version(source_fs, source, f) != before:
            raise NotAsRecorded("it was written to while it was copied")

    with open_file(source_fs, source) as f:
        before = version(source_fs, source, f)
        if isinstance(fs, LocalFileSystem):
            mode = None
            if isinstance(source_fs, LocalFileSystem):  # as `cp -p` copies
                found = os.fstat(f.fileno())
                mode = found.st_mode & 0o777  # no set-user-ID bit in an archive
                mtime_ns = found.st_mtime_ns if mtime_ns is None else mtime_ns
            with local_temp(path, root, mode, mtime_ns) as out:
                pump(f, out)
        else:
            headers = object_headers(source_fs, source, f)
            upload = fs.open(path, "wb", autocommit=False, **headers)
            try:
                try:
                    pump(f, upload)
                finally:
                    upload.close()  # uploads the last part; nothing is visible before commit
            except BaseException:
                upload.discard()
                raise
            if copied:
                upload.commit()
            else:  # s3fs commits an empty upload with a PUT that leaves the headers out
                upload.discard()
                write_atomic(fs, path, b"", headers=headers)
    return copied, digest.hexdigest()
