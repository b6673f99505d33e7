"""Write stage of restore: HR pixels -> DST/<rel_path>.<format> with the source's metadata,
written atomically; a kept source -> DST/<rel_path> as it was. An image restored to another
key than before (the archive kept it then and holds it as an LR now, or the reverse, or another
--format) loses the output an earlier restore gave it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any

import numpy as np

from pipeline.format import (
    ARCHIVED_NOTE,
    KEPT,
    PERMANENT,
    RESTORE_SCHEMA,
    TRANSIENT,
    check_sides,
    encode_output,
    output_key,
)
from pipeline.metadata import (
    S3_NAMES,
    Metadata,
    held_by,
    not_held,
    parse_s3_metadata,
    parse_s3_tags,
    s3_put_metadata,
    s3_put_tags,
)
from pipeline.rows import error_kind, error_text, nanoseconds, to_batch, to_rows
from pipeline.srgb import icc_to_srgb, png_colour_to_srgb
from pipeline.stage import Copy, Earlier, Row, fail, remove_earlier, write_files
from pipeline.storage import Location, file_sha256, left_out_locally

# What to do when outputs clash as a file and a folder of one name (stage.write_failure)
CLASH = (
    "if two outputs clash, restore one of them into another DST (--only); if DST holds a file "
    "or folder of its own there, remove it and run again with --retry-errors"
)


def encode_restored(
    pixels: np.ndarray, image_format: str, metadata: Metadata, srgb: bool
) -> tuple[bytes, str | None, str | None]:
    """A restored image's bytes carrying `metadata`, what it carries ("exif,icc,xmp") and what
    was done: the colour conversion, metadata the format has no place for (or none so big:
    JPEG_LIMITS). With `srgb`, pixels with a profile are converted to sRGB and the profile left
    out, with a PNG's colour chunks, which it overrides; pixels without one are converted as
    their PNG gAMA and cHRM say (pipeline.srgb), and those chunks left out.
    TooLargeForFormat (permanent), before any work, for an image with a side over the format's
    MAX_SIDES."""
    check_sides(pixels.shape[1], pixels.shape[0], image_format, "restore it with --format png")
    notes = []
    if srgb and metadata.icc:
        pixels, converted = icc_to_srgb(pixels, metadata.icc)
        notes.append(converted)
    elif srgb:
        pixels, converted = png_colour_to_srgb(pixels, metadata.png_colour)
        notes.append(converted)
    if srgb:  # sRGB pixels: the profile and the chunks that described the others go
        metadata = dataclasses.replace(metadata, icc=None, png_colour=None)
    held = held_by(metadata, image_format)
    left = not_held(metadata, image_format)
    if no_place := [n for n, why in left.items() if not why]:
        notes.append(f"{image_format} holds no {', '.join(no_place)}: not carried")
    notes += [f"{image_format} holds no {n} {why}: not carried" for n, why in left.items() if why]
    return encode_output(pixels, image_format, held), held.names, "; ".join(notes) or None


def write_restored(
    batch: dict[str, np.ndarray],
    *,
    dst: Location,
    archive: Location,
    image_format: str,
    to_srgb: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data stage: encode and write each ok row's "restored" with its metadata, and each
    kept row's "kept_data" at its "kept_key", or copy its "kept_path" (in `archive`) there a
    chunk at a time, checked against the source's size and SHA-256; return manifest rows,
    with the SHA-256 of each file written. A whole image, or copy, on a local disk gets the
    source's modification time as archived ("source_mtime"); a whole image on S3, the S3 user
    metadata and object tags its LR holds of an S3 source (s3_object_headers), which its
    `metadata` then names, and which the `conversion` of a local file or a region says are not
    carried. An image's `conversion` ends with what archiving did to it (ARCHIVED_NOTE and
    its archive row's)."""
    on_s3 = dst.protocol != "file"

    def headers(row: Row) -> dict[str, Any] | None:
        return row.get("s3_headers") or None

    rows = to_rows(batch)
    for row in rows:
        for name in ("metadata", "conversion"):  # Ray may have turned a column of None into NaN
            if not isinstance(row[name], str):
                row[name] = None
        if row["status"] != "ok":
            continue
        start = time.perf_counter()
        try:
            data, names, conversion = encode_restored(
                row["restored"], image_format, Metadata.from_row(row), to_srgb
            )
            if on_s3 and not is_region(row):
                row["s3_headers"], carried, notes = s3_object_headers(row)
                names = ",".join(filter(None, (names, *carried)))
            else:
                left = [name for field, name in S3_NAMES.items() if row.get(field)]
                holder = "a region" if is_region(row) else "a local file"
                notes = [f"{', '.join(left)} (in the LR only: {holder} holds none)"] if left else []
            carried = f"not carried: {', '.join(notes)}" if notes else None
            archived = row.get("archived")  # as for "conversion"
            archived = ARCHIVED_NOTE + archived if isinstance(archived, str) else None
            conversion = "; ".join(filter(None, (conversion, carried, archived))) or None
            row.update(output_data=data, metadata=names, conversion=conversion)
        except Exception as e:  # one image must not stop the job: it becomes its row
            fail(row, error_text(e), error_kind(e))
        row["seconds"] += time.perf_counter() - start
    archive_fs = archive.filesystem()

    def output(row: Row) -> tuple[str, bytes]:
        return output_key(row["rel_path"], image_format), row["output_data"]

    def kept(row: Row) -> tuple[str, bytes | Copy]:
        if not row["kept_path"]:  # a region, encoded
            return str(row["kept_key"]), bytes(row["kept_data"])
        size = int(row["source_bytes"])
        uri = archive.uri_of(row["kept_path"])
        copy = Copy(
            archive_fs,
            str(row["kept_path"]),
            row["source_sha256"] or None,
            size if size >= 0 else None,
            lambda why: f"kept file {uri} differs from the source it kept ({why})",
            PERMANENT,
        )
        return str(row["kept_key"]), copy

    def source_mtime(row: Row) -> int | None:  # of a whole image; a region is not the image
        return None if is_region(row) else nanoseconds(row.get("source_mtime"))

    leave_changed(rows, dst, image_format)
    leave_others(rows, dst, image_format)
    sha, mtime = "output_sha256", source_mtime
    rows = write_files(
        rows,
        dst,
        "output_uri",
        output,
        sha_column=sha,
        mtime_of=mtime,
        clash=CLASH,
        headers_of=headers,
    )
    rows = write_files(
        rows, dst, "output_uri", kept, KEPT, sha_column=sha, mtime_of=mtime, clash=CLASH
    )
    for row in rows:
        row["lr_sha256"] = row.get("lr_sha256") or None  # "": a kept source's, or not known
        # A kept file copied whole from an S3 archive to a local disk
        if row["status"] == KEPT and row["kept_path"] and not on_s3:
            left = left_out_locally(archive_fs, str(row["kept_path"]))
            if left:
                row["conversion"] = f"not carried: {left}"
    remove_earlier(rows, dst, earlier_output)
    return to_batch(rows, RESTORE_SCHEMA.names)


# What a restore to S3 puts of each of S3_FIELDS an LR holds: the S3 PUT argument, and what S3
# takes of it, with a note of what it does not.
S3_PUTS = {
    "s3_metadata": ("Metadata", lambda text: s3_put_metadata(parse_s3_metadata(text))),
    "s3_tags": ("Tagging", lambda text: s3_put_tags(parse_s3_tags(text))),
}


def s3_object_headers(row: Row) -> tuple[dict[str, Any], list[str], list[str]]:
    """The S3 PUT arguments with which a whole image restored to S3 carries what its LR holds
    of its S3 source object (S3_PUTS: "Metadata", the user metadata, and "Tagging", the tags);
    the names of those it carries; and notes of those S3 does not take, which stay in the
    LR."""
    headers, carried, notes = {}, [], []
    for field, (argument, put) in S3_PUTS.items():
        if not row.get(field):
            continue
        value, note = put(bytes(row[field]))
        if note:
            notes.append(note)
        else:
            headers[argument] = value
            carried.append(field)
    return headers, carried, notes


def is_region(row: Row) -> bool:
    """Whether the row restores a region of its image (Ray may turn a column of None into
    NaN)."""
    return isinstance(row.get("region"), str)


def leave_changed(rows: list[Row], dst: Location, image_format: str) -> None:
    """Make a transient error of each row whose output would replace a file a restore wrote
    and someone changed since: its bytes are not the SHA-256 that restore recorded
    ("replaces"; "" for none). --overwrite replaces it."""
    fs = dst.filesystem()
    for row in rows:
        recorded = row.get("replaces")
        if row["status"] not in ("ok", KEPT) or not isinstance(recorded, str) or not recorded:
            continue
        key = (
            output_key(row["rel_path"], image_format) if row["status"] == "ok" else row["kept_key"]
        )
        try:
            changed = file_sha256(fs, dst.join(key)) != recorded
        except FileNotFoundError:
            continue
        except (OSError, ValueError):  # a folder or a FIFO in its place
            changed = True
        if changed:
            error = (
                f"DST/{key} was changed since a restore wrote it: it is left as it is "
                "(--overwrite replaces it)"
            )
            fail(row, error, TRANSIENT)


def leave_others(rows: list[Row], dst: Location, image_format: str) -> None:
    """Make a transient error of each row whose output would replace a file that no restore
    recorded ("in_the_way", which says so), unless that file holds the very bytes this row
    writes: what a restore killed before recording it wrote, taken as it is (a re-run
    writes it again). A kept source's copy is compared by its recorded SHA-256."""
    fs = dst.filesystem()
    for row in rows:
        why = row.get("in_the_way")
        if row["status"] not in ("ok", KEPT) or not isinstance(why, str) or not why:
            continue
        if row["status"] == "ok":
            key = output_key(row["rel_path"], image_format)
            expected = hashlib.sha256(row["output_data"]).hexdigest()
        else:
            key, data = str(row["kept_key"]), bytes(row["kept_data"])
            expected = (
                row["source_sha256"] if row["kept_path"] else hashlib.sha256(data).hexdigest()
            )
        path = dst.join(key)
        if dst.protocol == "file" and os.path.islink(path):  # no restore writes a link
            fail(row, why, TRANSIENT)
            continue
        try:
            same = bool(expected) and file_sha256(fs, path) == expected
        except FileNotFoundError:  # gone since the plan: the way is clear
            continue
        except (OSError, ValueError):  # a folder or a FIFO in its place
            same = False
        if not same:
            fail(row, why, TRANSIENT)


def earlier_output(row: Row) -> Earlier | None:
    """The output an earlier restore gave the image, which this row's replaces under another
    key (stage.remove_earlier): "earlier" is its key in DST ("" for none), and
    "earlier_sha256" the SHA-256 that restore recorded of the file (restore/plan.py; "":
    none). A file whose bytes are not those stays, and so does one with no SHA-256 recorded,
    and a copy whose bytes are not the source's any more."""
    key = row.get("earlier")
    if row["status"] not in ("ok", KEPT) or not isinstance(key, str) or not key:
        return None
    sha256 = row.get("earlier_sha256") or None
    if key == row["rel_path"]:  # the copy of a kept source: its bytes are the source's
        sha256 = sha256 or row.get("source_sha256") or None
        return Earlier(key, "copy of the kept source", sha256, proven=True)
    return Earlier(key, "restored image", sha256, proven=True)
