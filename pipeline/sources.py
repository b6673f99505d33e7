"""The images under SRC: which files archive reads, their relative paths, sizes and versions.

A listing is a stream of Arrow tables of LISTING_SCHEMA, never one Python object per file kept:
a local SRC is walked folder by folder (os.scandir), the top-level folders in parallel
threads; an S3 SRC page by page (ListObjectsV2, 1000 keys a page), runs of top-level folders in
parallel threads; small tables are joined (a folder per file is not a table per file); an
inventory (pipeline/inventory.py) is read file by file. Listings hold hidden files too:
`select_images` keeps image files that are not hidden (with --keep-failed, every file), column
by column.

Symbolic links: a link to a file is listed as that file (its size and time); a link to a
folder is not followed, and is listed as one row with an error saying so. So are FIFOs, sockets
and devices, and local names that are not UTF-8 (rel_path then shows the bytes as \\x escapes).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import posixpath
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.buckets import coalesced
from pipeline.format import KEPT_DIR, LR_DIR, MANIFEST_DIR
from pipeline.storage import Location

IMAGE_EXTENSIONS = (
    *(".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"),
    *(".heic", ".heif", ".avif", ".jxl"),
)
IMAGE_NAME = r"\.(" + "|".join(e.lstrip(".") for e in IMAGE_EXTENSIONS) + r")\z"
# A file or folder on the path whose name starts with "." (not a "." or ".." segment: those are
# the plan's error rows): "._IMG.jpg", ".picasa.ini", ".darktable/a.png.xmp".
HIDDEN = r"(^|/)\.([^./]|\.[^/])"
logger = logging.getLogger("tadm")
LISTING_THREADS = 8  # top-level folders (local) or runs of them (S3) listed at once
S3_RANGES = 4 * LISTING_THREADS  # runs of top-level folders an S3 listing is cut into
PAGE_ROWS = 10_000  # rows of a local listing table
SYMLINKED_FOLDER = "symbolic link to a folder, not followed (give its target as its own SRC)"
BROKEN_LINK = "broken symbolic link"
LINK_LOOP = "symbolic link loop"
FOLDER_UNREADABLE = "folder cannot be listed, its files are not archived"
NOT_A_FILE = "not a regular file (a FIFO, socket or device): not read"
FOLDER_MARKER = (
    "an object whose key ends in '/' holds bytes, and no file can have its name: copy it to a "
    "key without the '/' to archive it"
)
NOT_UTF8 = (
    "name is not valid UTF-8 (shown with \\x escapes; a folder's files are not listed): "
    "rename it in UTF-8 to archive it"
)

LISTING_SCHEMA = pa.schema(
    [
        ("rel_path", pa.string()),  # "/"-separated path under SRC, extension kept
        ("size", pa.int64()),  # bytes
        ("mtime", pa.timestamp("us", tz="UTC")),  # modification time
        ("etag", pa.string()),  # S3 ETag without quotes; null for local files
        ("error", pa.string()),  # why it cannot be archived (a symlinked folder); else null
    ]
)


@dataclass(frozen=True)
class SourceFile:
    path: str  # filesystem path, as Location.filesystem() and Ray's reader take it
    rel_path: str  # "/"-separated path under SRC, extension kept: "a/b.jpg"
    size: int  # bytes, from the listing


def image_names(paths: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Which rel_paths a listing takes for images (without --keep-failed), as `select_images` does:
    an image extension (any case), and no hidden file or folder on the path (HIDDEN)."""
    return pc.and_(
        pc.invert(pc.match_substring_regex(paths, HIDDEN)),
        pc.match_substring_regex(paths, IMAGE_NAME, ignore_case=True),
    )


def is_image_name(name: str) -> bool:
    """An image extension (any case), and not a hidden file such as "._x.jpg" or ".x.tmp"."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def unchanged(listed: pa.Table, rows: pa.Table) -> pa.Array:
    """Whether each listed file (LISTING_SCHEMA's size, mtime and etag) is the one its
    manifest row (source_bytes, source_mtime, source_etag) was made from: the same size, and
    the same ETag where the listing has one, else the same modification time (a row written
    before those columns: the size alone). The skip rule of a re-run; null for a null row."""
    etag_same = pc.or_kleene(
        pc.is_null(rows["source_etag"]), pc.equal(listed["etag"], rows["source_etag"])
    )
    mtime_same = pc.or_kleene(
        pc.is_null(rows["source_mtime"]), pc.equal(listed["mtime"], rows["source_mtime"])
    )
    same = pc.fill_null(pc.if_else(pc.is_valid(listed["etag"]), etag_same, mtime_same), True)
    return pc.and_kleene(pc.equal(listed["size"], rows["source_bytes"]), same)


def rel_prefix(src: Location, single_file: bool) -> str:
    """What to strip from a path to get its rel_path: the folder, with its trailing "/"."""
    folder = posixpath.dirname(src.root) if single_file else src.root
    return folder.rstrip("/") + "/"


def listing_table(columns: dict[str, list[Any]]) -> pa.Table:
    """LISTING_SCHEMA's table of the columns given (the others null)."""
    n = len(next(iter(columns.values())))
    arrays = [
        pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in LISTING_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=LISTING_SCHEMA)


# A manifest part file (pipeline/manifest.py's part_name) in a folder's manifest/: that folder
# may be an archive inside SRC.
MANIFEST_PART = rf"^(?P<folder>(?:.*/)?){MANIFEST_DIR}/part-[0-9]{{20}}-[0-9a-f]{{8}}\.parquet\z"


@dataclass
class NotImages:
    """What a listing held that is no image file or is hidden, left out (without
    --keep-failed); and the folders (rel_path with "/", "" for SRC) whose manifest/ holds a
    part file, with the rel_path of one: the archive plan leaves out those that are archives."""

    count: int = 0
    examples: list[str] = field(default_factory=list)  # the first few rel_paths
    manifests: dict[str, str] = field(default_factory=dict)

    def add(self, rel_paths: pa.ChunkedArray | pa.Array) -> None:
        self.count += len(rel_paths)
        self.examples += rel_paths.slice(0, 3 - len(self.examples)).to_pylist()

    def add_manifests(self, rel_paths: pa.ChunkedArray | pa.Array) -> None:
        parts = rel_paths.filter(pc.match_substring_regex(rel_paths, MANIFEST_PART))
        for rel_path in parts.to_pylist():
            folder = rel_path[: -len(posixpath.basename(rel_path))][: -len(MANIFEST_DIR) - 1]
            self.manifests.setdefault(folder, rel_path)


def select_images(
    table: pa.Table,
    exclude: str | None = None,
    every_file: bool = False,
    not_images: NotImages | None = None,
) -> pa.Table:
    """Rows of image files (by extension, any case) not hidden, and error rows not hidden;
    with `every_file`, every row, hidden or not. Either way, not those in the folders an
    archive writes (lr/, kept/, manifest/, with their hidden temporaries) under the rel_path
    folder `exclude` (an archive inside SRC: the other files there are SRC's). Files left out
    for their name alone are added to `not_images`, and the folders of manifest parts among
    those not in `exclude`'s to its `manifests`."""
    paths = table["rel_path"]
    keep = pc.is_valid(paths)
    if exclude is not None:
        base = exclude.rstrip("/") + "/" if exclude.strip("/") else ""
        for folder in (LR_DIR, KEPT_DIR, MANIFEST_DIR):
            written = pc.or_(
                pc.starts_with(paths, f"{base}{folder}/"), pc.equal(paths, f"{base}{folder}")
            )
            keep = pc.and_(keep, pc.invert(written))
    if not_images is not None:
        not_images.add_manifests(paths.filter(keep))
    if not every_file:
        image = pc.and_(
            pc.invert(pc.match_substring_regex(paths, HIDDEN)),
            pc.or_(
                pc.is_valid(table["error"]),
                pc.match_substring_regex(paths, IMAGE_NAME, ignore_case=True),
            ),
        )
        if not_images is not None:
            not_images.add(paths.filter(pc.and_(keep, pc.invert(image))))
        keep = pc.and_(keep, image)
    return table.filter(keep)


def scan(
    src: Location,
    exclude: Location | None = None,
    every_file: bool = False,
    not_images: NotImages | None = None,
) -> tuple[Iterator[pa.Table], str]:
    """The listing of SRC as tables of LISTING_SCHEMA (images only, or with `every_file` any
    file; unsorted), and the prefix that rel paths are relative to. SRC may also be a single
    image. Files under `exclude` (an archive written inside SRC) are left out. A missing local
    folder lists nothing."""
    fs = src.filesystem()
    single_file = fs.isfile(src.root)
    if single_file and src.protocol == "s3" and has_objects_under(fs, src.root):
        size = int(fs.info(src.root)["size"])
        if size:  # a folder marker without "/" (some tools make them) holds nothing to lose
            logger.warning(
                "SRC %s is an object (%d bytes) and a folder: the folder's files are archived, "
                "not the object; archive the folder above to take both",
                src.uri,
                size,
            )
        single_file = False
    prefix = rel_prefix(src, single_file)
    excluded = excluded_folder(src, prefix, exclude)
    if single_file:
        info = fs.info(src.root)
        pages: Iterator[pa.Table] = iter([one_file(src, info, prefix)])
    elif src.protocol == "s3":
        pages = walk_s3(fs, src.root)
    else:
        pages = walk_local(src.root)
    pages = coalesced(pages, PAGE_ROWS)
    return (select_images(page, excluded, every_file, not_images) for page in pages), prefix


def excluded_folder(src: Location, prefix: str, exclude: Location | None) -> str | None:
    """The rel_path of `exclude` when it lies inside SRC (local paths compared with symlinks
    resolved), else None."""
    if exclude is None or not exclude.within(src):
        return None
    if src.protocol == "file":
        real_src, real = os.path.realpath(src.root), os.path.realpath(exclude.root)
        return real[len(real_src) :].lstrip("/")
    return exclude.root[len(prefix) :]


def list_sources(
    src: Location, exclude: Location | None = None, every_file: bool = False
) -> tuple[list[SourceFile], str]:
    """Every image file (with `every_file`, any file) under `src` as objects, sorted by
    rel_path, and the prefix: for the small folders of training data and benchmarks (an
    archive job keeps tables, see `scan`). Listing errors (symlinked folders) are left out."""
    pages, prefix = scan(src, exclude, every_file)
    table = pa.concat_tables([LISTING_SCHEMA.empty_table(), *pages])
    table = table.filter(pc.is_null(table["error"]))
    table = table.take(pc.sort_indices(table, [("rel_path", "ascending")]))
    return [
        SourceFile(path=prefix + rel_path, rel_path=rel_path, size=size)
        for rel_path, size in zip(
            table["rel_path"].to_pylist(), table["size"].to_pylist(), strict=True
        )
    ], prefix


def one_file(src: Location, info: dict[str, Any], prefix: str) -> pa.Table:
    mtime = info.get("LastModified") if src.protocol == "s3" else None
    etag = info.get("ETag", "").strip('"') or None if src.protocol == "s3" else None
    if src.protocol == "file":
        mtime = os.stat(src.root).st_mtime_ns // 1000
    return listing_table(
        {
            "rel_path": [src.root[len(prefix) :]],
            "size": [int(info["size"])],
            "mtime": [mtime],
            "etag": [etag],
        }
    )


def in_threads(tasks: Iterable[Callable[[], Iterator[pa.Table]]]) -> Iterator[pa.Table]:
    """The tables of every task, each run in a thread (LISTING_THREADS at once, the next
    started as one ends), as they come; a task's exception is raised here."""
    tasks = iter(tasks)
    out: queue.Queue = queue.Queue(maxsize=2 * LISTING_THREADS)
    done = object()
    stop = threading.Event()

    def run(task: Callable[[], Iterator[pa.Table]]) -> None:
        try:
            for table in task():
                if stop.is_set():
                    return
                out.put(table)
        except BaseException as e:  # handed to the consumer
            out.put(e)
        finally:
            out.put(done)

    with ThreadPoolExecutor(LISTING_THREADS) as pool:
        left = 0
        for task in itertools.islice(tasks, LISTING_THREADS):
            pool.submit(run, task)
            left += 1
        try:
            while left:
                item = out.get()
                if item is done:
                    left -= 1
                    task = next(tasks, None)
                    if task is not None and not stop.is_set():
                        pool.submit(run, task)
                        left += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            while left:  # let blocked producers finish
                left -= out.get() is done


# ---- local folders ---------------------------------------------------------------------------


def walk_local(root: str) -> Iterator[pa.Table]:
    """Tables of the files under `root`: its own files here, each top-level folder's tree in a
    thread. A missing folder lists nothing."""
    if not os.path.isdir(root):
        return
    folders: list[str] = []
    rows = Rows()
    scan_folder(root, root, rows, folders)
    yield from rows.tables(final=True)
    yield from in_threads(lambda f=f: walk_tree(root, f) for f in folders)


class Rows:
    """Columns of listing rows, cut into tables of PAGE_ROWS rows as they come (a folder of
    millions of files is held as tables, not as Python objects)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {"rel_path": [], "size": [], "mtime": [], "error": []}
        self.cut: list[pa.Table] = []

    def add(self, rel_path: str, size: int | None, mtime: int | None, error: str | None) -> None:
        for name, value in zip(self.columns, (rel_path, size, mtime, error), strict=True):
            self.columns[name].append(value)
        if len(self.columns["rel_path"]) >= PAGE_ROWS:
            self.cut.append(listing_table(self.columns))
            self.columns = {name: [] for name in self.columns}

    def tables(self, final: bool = False) -> Iterator[pa.Table]:
        """The tables cut so far, and with `final` the rows left."""
        yield from self.cut
        self.cut = []
        if final and self.columns["rel_path"]:
            yield listing_table(self.columns)
            self.columns = {name: [] for name in self.columns}


def walk_tree(root: str, top: str) -> Iterator[pa.Table]:
    rows, stack = Rows(), [top]
    while stack:
        scan_folder(root, stack.pop(), rows, stack)
        yield from rows.tables()
    yield from rows.tables(final=True)


def scan_folder(root: str, folder: str, rows: Rows, folders: list[str]) -> None:
    """Add `folder`'s files to `rows` and its subfolders to `folders`, hidden ones too.
    A name that cannot be looked at (a symbolic link loop, a path too long) is a row with its
    error, and so is a subfolder that cannot be listed (no permission): one bad entry must not
    stop the listing. `root` itself must be listable (OSError)."""
    start = len(root.rstrip("/")) + 1
    try:
        entries = os.scandir(folder)
    except OSError as e:
        if folder == root:
            raise
        rows.add(folder[start:], None, None, f"{FOLDER_UNREADABLE}: {e.strerror or e}")
        return
    with entries:
        for entry in entries:
            rel_path = entry.path[start:]
            try:
                if not utf8(rel_path):
                    rows.add(
                        os.fsencode(rel_path).decode("utf-8", "backslashreplace"),
                        None,
                        None,
                        NOT_UTF8,
                    )
                elif entry.is_symlink():
                    if entry.is_dir():
                        rows.add(rel_path, None, None, SYMLINKED_FOLDER)
                    elif entry.is_file():
                        info = entry.stat()
                        rows.add(rel_path, info.st_size, info.st_mtime_ns // 1000, None)
                    else:
                        rows.add(rel_path, None, None, link_error(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    rows.add(rel_path, info.st_size, info.st_mtime_ns // 1000, None)
                else:
                    rows.add(rel_path, None, None, NOT_A_FILE)
            except FileNotFoundError:  # removed while listed
                continue
            except OSError as e:
                why = LINK_LOOP if e.errno == errno.ELOOP else f"cannot be looked at: {e.strerror}"
                rows.add(rel_path, None, None, why)


def link_error(path: str) -> str:
    """Why the symbolic link `path`, to neither a file nor a folder, is not read."""
    try:
        os.stat(path)
    except OSError as e:
        return LINK_LOOP if e.errno == errno.ELOOP else BROKEN_LINK
    return NOT_A_FILE  # a FIFO, socket or device


def utf8(name: str) -> bool:
    """Whether a name os.scandir gave is UTF-8 (else it holds surrogate escapes of its bytes)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- S3 --------------------------------------------------------------------------------------


def walk_s3(fs: Any, root: str) -> Iterator[pa.Table]:
    """Tables of the objects under the S3 folder `root` ("bucket/prefix"), a page of up to
    1000 keys each: the top level with a delimiter, which names its folders; then the keys
    in those folders, without one, in up to S3_RANGES runs of consecutive folders listed in
    threads. So a listing takes a request per 1000 keys (and per 1000 folders), however the
    keys are spread over folders (photos/<id>/original.jpg has a folder per image)."""
    bucket, _, key = root.partition("/")
    prefix = f"{key}/" if key else ""
    folders: list[str] = []
    for page in list_pages(fs, bucket, prefix, delimiter="/"):
        folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        yield page_table(page.get("Contents", []), len(prefix))
    starts = folders[:: -(-len(folders) // S3_RANGES)] if folders else []
    yield from in_threads(
        lambda first=first, end=end: folder_run(fs, bucket, prefix, first, end)
        for first, end in itertools.zip_longest(starts, starts[1:])
    )


def folder_run(
    fs: Any, bucket: str, prefix: str, first: str, end: str | None
) -> Iterator[pa.Table]:
    """Tables of the keys in the top-level folders from `first` up to `end` (None: the last)
    under `prefix`. Folders are listed in key order and no folder name holds "/", so their
    keys are the keys from `first` up to `end` that hold a "/" after `prefix` (the others
    are top-level objects between two folders' names, walk_s3's own)."""
    for page in list_pages(fs, bucket, prefix, start_after=first[:-1]):
        contents = page.get("Contents", [])
        keys = [
            c
            for c in contents
            if first <= c["Key"]
            and (end is None or c["Key"] < end)
            and "/" in c["Key"][len(prefix) :]
        ]
        yield page_table(keys, len(prefix))
        if end is not None and contents and contents[-1]["Key"] >= end:
            return


def list_pages(
    fs: Any, bucket: str, prefix: str, delimiter: str = "", start_after: str = ""
) -> Iterator[dict]:
    """The ListObjectsV2 responses under `prefix` (after the key `start_after`), a page at a
    time."""
    kwargs = {"Bucket": bucket, "Prefix": prefix, "Delimiter": delimiter}
    if start_after:
        kwargs["StartAfter"] = start_after
    while True:
        page = fs.call_s3("list_objects_v2", **kwargs)
        yield page
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def page_table(contents: list[dict], start: int) -> pa.Table:
    """A ListObjectsV2 page's `contents` as a listing table, keys without their first `start`
    characters. Folder markers, keys ending in "/", are left out, unless they hold bytes: no
    file can have such a name, so they are error rows."""
    objects = [
        c for c in contents if not c["Key"].endswith("/") or (c["Size"] and len(c["Key"]) > start)
    ]
    return listing_table(
        {
            "rel_path": [c["Key"][start:] for c in objects],
            "size": [c["Size"] for c in objects],
            "mtime": [c["LastModified"] for c in objects],
            "etag": [c.get("ETag", "").strip('"') or None for c in objects],
            "error": [FOLDER_MARKER if c["Key"].endswith("/") else None for c in objects],
        }
    )


def has_objects_under(fs: Any, root: str) -> bool:
    """Whether the S3 folder `root` ("bucket/key") holds any object ("bucket/key/...")."""
    bucket, _, key = root.partition("/")
    page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{key}/", MaxKeys=1)
    return bool(page.get("KeyCount"))


def walk(location: Location) -> Iterator[pa.Table]:
    """Every file under a folder, hidden ones too, as listing tables: outputs in DST."""
    if location.protocol == "s3":
        return coalesced(walk_s3(location.filesystem(), location.root), PAGE_ROWS)
    return coalesced(walk_local(location.root), PAGE_ROWS)
