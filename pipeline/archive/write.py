"""Write stage of archive: LR PNG bytes -> DST/lr/<rel_path>.png, and the row's sizes and
the SHA-256 of the bytes written; a kept source -> DST/kept/<rel_path>, byte for byte. An image
that was kept before and is archived now, or the reverse, loses its earlier output: an archive
holds one output per image."""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.format import (
    ARCHIVE_SCHEMA,
    KEPT,
    PERMANENT,
    TRANSIENT,
    decode_lr_png,
    kept_key,
    lr_key,
)
from pipeline.metadata import S3_FIELDS
from pipeline.rows import nanoseconds, to_batch, to_rows
from pipeline.stage import Copy, Earlier, Row, remove_earlier, write_files
from pipeline.storage import Location, file_sha256, left_out_locally

# What to do when outputs clash as a file and a folder of one name (stage.write_failure)
CLASH = (
    "if two sources clash, rename one; if DST holds a file or folder of its own there, remove "
    "it and run again with --retry-errors"
)


def write_lr(
    batch: dict[str, np.ndarray],
    *,
    dst: Location,
    src: Location,
    prefix: str,
    keep_failed: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data stage: write each ok row's "lr_png" atomically, and copy the source of each
    kept row (at `prefix` + rel_path in `src`) as it is, a chunk at a time, with its
    modification time (and a local source's permission bits); return manifest rows. A copy
    must have the size and SHA-256 the read stage found (a file without an image name, never
    read before, gets them from the copy); one that changed meanwhile is a transient error.
    With `keep_failed`, a permanent failure (a file read but not archivable, or whose LR
    cannot be written, such as a name too long with ".png") is kept too, its error becoming
    its kept_reason; a transient one (I/O, the model) stays an error that a re-run retries."""
    src_fs = src.filesystem()

    def output(row: Row) -> tuple[str, bytes]:
        return lr_key(row["rel_path"]), bytes(row["lr_png"])

    def kept(row: Row) -> tuple[str, Copy]:
        sha256 = row["source_sha256"] if isinstance(row["source_sha256"], str) else None
        source = Copy(
            src_fs,
            prefix + row["rel_path"],
            sha256,
            int(row["source_bytes"]),
            lambda why: f"the source changed while it was archived ({why}): run again",
            TRANSIENT,
        )
        return kept_key(row["rel_path"]), source

    rows = write_files(to_rows(batch), dst, "lr_uri", output, clash=CLASH)
    for row in rows:
        permanent = row["status"] == "error" and row["error_kind"] == PERMANENT
        earlier = str(row.get("outputs") or "").split()
        if permanent and "lr" in earlier:
            # A source archived before that fails now (a truncated copy, bit rot) may be worse
            # than the LR made of it: that LR stays, and the row records it, also when
            # --keep-failed keeps the source as it is now beside it.
            row["error"] += f"; the LR of an earlier version stays at {lr_key(row['rel_path'])}"
            row["outputs"] = ""
            record_earlier_lr(row, dst)
        if permanent and "kept" in earlier and not keep_failed:
            record_earlier_kept(row, dst)  # which stays: no output of this run replaces it
        if keep_failed and permanent:
            row.update(status=KEPT, kept_reason=row["error"], error=None, error_kind=None)
        elif row["status"] != KEPT:  # Ray may have turned a column of None into NaN
            row["kept_reason"] = None

    def listed_mtime(row: Row) -> int | None:  # a local source's own is copied exactly
        return None if src.protocol == "file" else nanoseconds(row.get("source_mtime"))

    rows = write_files(
        rows,
        dst,
        "kept_uri",
        kept,
        KEPT,
        sha_column="source_sha256",
        size_column="source_bytes",
        mtime_of=listed_mtime,
        clash=CLASH,
    )
    for row in rows:
        if row["status"] == "error" and row["kept_reason"]:  # not kept after all: say both
            row["error"] = f"{row['kept_reason']}; not kept either: {row['error']}"
            row["kept_reason"] = None
        notes = []  # what the output leaves out beside what decoding said
        if row["status"] == KEPT:
            row["conversion"] = None  # decoding's, of pixels not archived: the copy is the file
        if row["status"] == KEPT and dst.protocol == "file":
            # A local copy holds the file, not the S3 object's user metadata and tags: of any
            # kept file (one never read, or decoded, too), what its object has is named.
            names = row.get("metadata")  # Ray may have turned a column of None into NaN
            names = names.split(",") if isinstance(names, str) else []
            row["metadata"] = ",".join(n for n in names if n not in S3_FIELDS) or None
            left = left_out_locally(src_fs, prefix + row["rel_path"])
            notes += [left] if left else []
        elif row["status"] in ("ok", KEPT) and row.get("not_read"):  # read_sources' (tags)
            notes.append(row["not_read"])
        if notes:
            said = row["conversion"] if isinstance(row["conversion"], str) else None
            row["conversion"] = "; ".join(filter(None, (said, f"not carried: {', '.join(notes)}")))
    remove_earlier(rows, dst, earlier_output)
    for row in rows:
        if row["status"] == "ok":
            lr_bytes = len(row["lr_png"])
            row["lr_bytes"] = lr_bytes
            row["lr_sha256"] = hashlib.sha256(row["lr_png"]).hexdigest()
            row["bpp"] = 8 * lr_bytes / (row["width"] * row["height"])
            row["compression_ratio"] = row["source_bytes"] / lr_bytes
    return to_batch(rows, ARCHIVE_SCHEMA.names)


def record_earlier_lr(row: Row, dst: Location) -> None:
    """Give the row of a source that fails now (an error row, or a kept one with
    --keep-failed) the record of the LR an earlier version of it left in DST (its URI, size,
    SHA-256, and the image size, scale and model its header names), so that a restore still
    gives that version back; as it is when that LR cannot be read."""
    path = dst.join(lr_key(row["rel_path"]))
    try:
        data = dst.filesystem().cat_file(path)
        header = decode_lr_png(data)[1]
    except (OSError, ValueError):
        return
    row.update(lr_uri=dst.uri_of(path), lr_bytes=len(data))
    row.update(lr_sha256=hashlib.sha256(data).hexdigest(), model_id=header.model_id)
    row.update(width=header.width, height=header.height, scale=header.scale)


def record_earlier_kept(row: Row, dst: Location) -> None:
    """Give an error row the record of the source an earlier run kept in DST (a file kept by
    --keep-failed that a run without it redoes, for another model or a changed source), so
    that a restore still gives it back: its URI, and, when it is not the source as it is now,
    its SHA-256 in place of the source's (the size stays the source's, which tells a re-run
    that the source is unchanged). As it is when that copy cannot be read."""
    fs, path = dst.filesystem(), dst.join(kept_key(row["rel_path"]))
    try:
        sha256 = file_sha256(fs, path)
    except (OSError, ValueError):
        return
    if sha256 == row.get("source_sha256"):
        row["error"] += f"; the source kept earlier stays at {kept_key(row['rel_path'])}"
    else:
        row["error"] += (
            f"; an earlier version of the source, kept, stays at {kept_key(row['rel_path'])} "
            "(this row's source_sha256 is that version's)"
        )
        row["source_sha256"] = sha256
    row["kept_uri"] = dst.uri_of(path)


def earlier_output(row: Row) -> Earlier | None:
    """The earlier output of a row written as the other kind (stage.remove_earlier): the LR of
    an image kept now, the kept source of an image archived now ("outputs": the kinds DST held
    before the run)."""
    earlier = str(row.get("outputs") or "").split()
    if row["status"] == "ok" and "kept" in earlier:
        return Earlier(kept_key(row["rel_path"]), "kept source")
    if row["status"] == KEPT and "lr" in earlier:
        return Earlier(lr_key(row["rel_path"]), "LR")
    return None
