"""Read stage of archive: the source files' bytes, read by I/O tasks ahead of the model."""

from __future__ import annotations

import numpy as np

from pipeline.metadata import s3_metadata_text, s3_tags_text
from pipeline.rows import error_text, to_batch, to_rows
from pipeline.sources import is_image_name
from pipeline.storage import Location, read_source

MISSING = "source file disappeared before it was read"
READ_COLUMNS = (
    "rel_path",
    "path",
    "bytes",
    "s3_metadata",
    "s3_tags",
    "not_read",
    "size",
    "mtime",
    "etag",
    "outputs",
    "error",
)


def read_sources(
    batch: dict[str, np.ndarray], *, src: Location, prefix: str
) -> dict[str, np.ndarray]:
    """Ray Data stage: the plan's rows (rel_path, size, mtime, etag, outputs) -> the same with
    "path", "bytes", an S3 object's user metadata and tags ("s3_metadata" and "s3_tags",
    s3_metadata_text's and s3_tags_text's; b"" for none), what of these could not be read
    ("not_read", Read's; "" for nothing), and the ETag of the version read (an object written
    since it was listed is recorded as read); a file gone since it was listed, or that cannot
    be read, gets "error" instead of bytes (a transient failure: a re-run reads it again). A
    file without an image name (listed for --keep-failed) is not read: it is copied as it is by
    the write stage."""
    fs = src.filesystem()
    rows = to_rows(batch)
    for row in rows:
        row["path"] = prefix + row["rel_path"]
        row.update(error="", bytes=b"", s3_metadata=b"", s3_tags=b"", not_read="")
        if not is_image_name(row["rel_path"].rsplit("/", 1)[-1]):
            continue
        try:
            read = read_source(fs, row["path"])  # a FIFO put in its place is not read
        except FileNotFoundError:
            row["error"] = MISSING
        except Exception as e:  # I/O, a name the filesystem refuses, a lost connection
            row["error"] = f"cannot read the source: {error_text(e)}"
        else:
            row.update(bytes=read.data, etag=read.etag or row["etag"])
            row["s3_metadata"] = s3_metadata_text(read.user_metadata) or b""
            row["s3_tags"] = s3_tags_text(read.tags) or b""
            row["not_read"] = read.not_read or ""
    return to_batch(rows, READ_COLUMNS)
