"""Read stage of restore: LR PNG -> LR pixels, metadata and the size to restore, checked
against the model; plus the source pixels, when the source is still readable and unchanged,
for psnr/ssim. A kept source is read as it is (and, for a region, decoded, cropped and
encoded here)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from pipeline.decode import Decoded, decode_image
from pipeline.format import (
    KEPT,
    KEPT_DIR,
    LR_DIR,
    MANIFEST_DIR,
    Region,
    check_rel_path,
    decode_lr_png,
    kept_key,
    lr_key,
    output_key,
)
from pipeline.metadata import METADATA_FIELDS, Metadata
from pipeline.restore.write import encode_restored
from pipeline.rows import NO_PIXELS, error_kind, error_text, to_batch, to_rows
from pipeline.sources import is_image_name
from pipeline.stage import Row
from pipeline.storage import Location, read_recorded

READ_COLUMNS = (
    "lr_uri",
    "lr_sha256",
    "rel_path",
    "status",
    "error",
    "width",
    "height",
    "hr_width",
    "hr_height",
    "region",
    "model_id",
    "lr_pixels",
    "source_pixels",
    "source_levels",  # the peak of its psnr: Decoded.levels (pipeline/decode.py)
    *METADATA_FIELDS,  # the LR's Metadata, b"" for none
    "kept_data",  # a kept source's region, encoded; b"" for an LR row or a copy
    "kept_path",  # the kept source to copy as it is (archive's filesystem); "" for none
    "kept_key",  # where kept_data or the copy go under DST
    "earlier",  # the key in DST of an earlier output of the image, to remove; "" if none
    "earlier_sha256",  # the SHA-256 that restore recorded of it; "" if none
    "replaces",  # the SHA-256 a restore recorded of the file now at the output's key; "" if none
    "in_the_way",  # why a file at the output's key that no restore recorded stays; "" if none
    "source_sha256",  # of the source, "" if unknown: a copy of it must have these bytes
    "source_bytes",  # of the source, -1 if unknown
    "source_mtime",  # of the source as archived, for the output (microseconds); NO_TIME: none
    "metadata",
    "conversion",
    "archived",  # the archive row's conversion of the image (ITEM_SCHEMA)
    "seconds",
    "error_kind",
)


def read_source(uri: str, size: int, sha256: str, options: dict[str, Any]) -> Decoded | None:
    """The source image as decoded for archiving, or None when it can't be read any more or
    it is not the file archived (`size` bytes, -1 when unknown, and SHA-256 `sha256`, "" when
    unknown): psnr/ssim against another image would be wrong, and a manifest's source_uri is
    read only when it names the very file the archive took (read_recorded)."""
    if not uri or not sha256:
        return None
    try:
        data = read_recorded(uri, None if size < 0 else size, sha256, options)
        return decode_image(data)
    except Exception:  # a source that no longer decodes is one that is gone: no psnr/ssim
        return None


def read_lr_batch(
    batch: dict[str, np.ndarray],
    *,
    archive: Location,
    model_id: str,
    region: Region | None,
    options: dict[str, Any],
    image_format: str = "png",
    to_srgb: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data stage: rows {"lr_uri", "rel_path", "source_uri", "kept_uri", "source_sha256",
    "lr_sha256" ("" when unknown), "source_bytes" and "lr_bytes" (-1 when unknown), and an
    "error" that makes the row an error row without reading it} -> rows with
    "lr_pixels", the metadata, the HR size and "source_pixels" (empty when the source is gone or
    changed); rows with status "kept" and "kept_data" for a kept source; or an error row. Files
    are read from ARCHIVE/lr/<rel_path>.png or ARCHIVE/kept/<rel_path>, a rel_path checked by
    check_rel_path; an LR file must have the size and SHA-256 its manifest row records."""
    rows = to_rows(batch)
    for row in rows:
        start = time.perf_counter()
        row.update(status="ok", model_id=model_id, region=None if region is None else region.text)
        row.update(lr_pixels=NO_PIXELS, source_pixels=NO_PIXELS, kept_data=b"", kept_path="")
        row["source_levels"] = 255.0
        row["kept_key"] = ""
        row.update(Metadata().row())
        try:
            if row.get("error"):  # the model actor died on it (pipeline/crashes.py): not read
                raise OSError(row["error"])
            check_rel_path(row["rel_path"])
            if row.get("clash"):
                raise ValueError(row["clash"])
            if row.get("kept_uri"):
                read_kept(row, archive, region, image_format, to_srgb)
                row["seconds"] = time.perf_counter() - start
                continue
            check_not_in_manifest(output_key(row["rel_path"], image_format), LR_DIR)
            path = archive.join(lr_key(row["rel_path"]))
            check_in_archive(archive, path, row["lr_uri"])
            try:
                data = archive.filesystem().cat_file(path)
            except FileNotFoundError:
                # transient: a re-run of archive may write it again
                raise OSError(f"LR file {row['lr_uri']} is missing") from None
            check_recorded(data, row)
            lr, header = decode_lr_png(data)
            if header.model_id != model_id:
                raise ValueError(
                    f"LR was made by model {header.model_id}, but the restore model is "
                    f"{model_id}: pass --model with the model that archived it"
                )
            if region is not None:
                region.check_inside(header.width, header.height)
            row.update(lr_pixels=lr, hr_width=header.width, hr_height=header.height)
            row.update(header.metadata.row())
            x, y, w, h = region or (0, 0, header.width, header.height)
            row.update(width=w, height=h)
            source = read_source(
                row["source_uri"], int(row["source_bytes"]), row["source_sha256"], options
            )
            if source is not None and source.pixels.shape[:2] == (header.height, header.width):
                row["source_pixels"] = source.pixels[y : y + h, x : x + w]
                row["source_levels"] = source.levels
        except Exception as e:  # one image must not stop the job: it becomes its row
            row.update(status="error", error=error_text(e), error_kind=error_kind(e))
        row["seconds"] = time.perf_counter() - start
    return to_batch(rows, READ_COLUMNS)


def check_recorded(data: bytes, row: dict[str, Any]) -> None:
    """ValueError unless the LR file's bytes are those the archive manifest recorded: its size
    (lr_bytes, -1 or absent when unknown) and SHA-256 (lr_sha256, "" or absent when unknown);
    then lr_sha256 is the SHA-256 of `data`, the LR restored from."""
    expected_bytes, expected_sha256 = int(row.get("lr_bytes", -1)), row.get("lr_sha256", "")
    if expected_bytes >= 0 and len(data) != expected_bytes:
        raise ValueError(
            f"LR file {row['lr_uri']} has {len(data)} bytes, the archive manifest says "
            f"{expected_bytes}: it changed since it was archived"
        )
    found = hashlib.sha256(data).hexdigest()
    if expected_sha256 and found != expected_sha256:
        raise ValueError(
            f"LR file {row['lr_uri']} has SHA-256 {found}, the archive manifest says "
            f"{expected_sha256}: it changed since it was archived"
        )
    row["lr_sha256"] = found


def read_kept(
    row: Row, archive: Location, region: Region | None, image_format: str, to_srgb: bool
) -> None:
    """Fill a kept source's row: the file to copy to DST/<rel_path> as it is (the write stage
    copies it a chunk at a time, checked against the source's size and SHA-256); with a
    region, that window of the decoded image, encoded as a restored one. ValueError when it
    is not a regular file, changed or (for a region) is not a readable image; OSError
    (transient) when it is missing."""
    path = archive.join(kept_key(row["rel_path"]))
    check_in_archive(archive, path, row["kept_uri"])
    fs = archive.filesystem()
    try:
        kind = fs.info(path)["type"]
    except FileNotFoundError:
        raise OSError(
            f"kept file {row['kept_uri']} is missing, and the archive holds no other copy of "
            f"the source: put it back from a backup (`tadm inspect {archive.uri} --check` "
            "lists what else is missing) and run the restore again"
        ) from None
    if kind != "file":
        raise ValueError(f"kept file {row['kept_uri']} is not a regular file")
    key = str(row["rel_path"])
    row["status"] = KEPT
    if region is not None:
        if not is_image_name(key.rsplit("/", 1)[-1]):  # a video may be larger than memory
            raise ValueError("kept file cannot be decoded for --region: not an image file")
        data = fs.cat_file(path)
        if row["source_sha256"] and hashlib.sha256(data).hexdigest() != row["source_sha256"]:
            raise ValueError(f"kept file {row['kept_uri']} differs from the source it kept")
        try:
            decoded = decode_image(data)
        except ValueError as e:
            raise ValueError(f"kept file cannot be decoded for --region: {e}") from None
        height, width = decoded.pixels.shape[:2]
        region.check_inside(width, height)
        x, y, w, h = region
        window = np.ascontiguousarray(decoded.pixels[y : y + h, x : x + w])
        data, names, conversion = encode_restored(window, image_format, decoded.metadata, to_srgb)
        key = output_key(key, image_format)
        row.update(width=w, height=h, metadata=names, conversion=conversion, kept_data=data)
    else:
        row["kept_path"] = path
    check_not_in_manifest(key, KEPT_DIR)
    row["kept_key"] = key


def check_in_archive(archive: Location, path: str, uri: str) -> None:
    """ValueError unless the file at `path` (`uri`) of a local ARCHIVE lies in it with
    symbolic links resolved: restore reads no file outside ARCHIVE that a link in it (planted,
    or made by hand) leads to, and copies none into DST."""
    if archive.protocol == "file" and not Location("file", path).within(archive):
        raise ValueError(
            f"{uri} leads outside ARCHIVE {archive.uri} through a symbolic link, which restore "
            "does not follow: put the file itself in its place"
        )


def check_not_in_manifest(key: str, tree: str) -> None:
    """ValueError unless DST/<key> lies outside DST's manifest/ folder, where readers of the
    restore manifest would take it for a part of it (as a case-insensitive store names it)."""
    top = key.split("/", 1)[0]
    if top.casefold() == MANIFEST_DIR:
        raise ValueError(
            f"{key!r} would be written into DST's {top}/ folder, which holds the restore "
            f"manifest: copy ARCHIVE/{tree}/{top}/ into a folder's {tree}/ and restore that"
        )
