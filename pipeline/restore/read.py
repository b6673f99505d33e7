"""Read stage of restore: LR PNG -> LR pixels and the size to restore, checked against the
model; plus the source pixels, when the source is still readable, for psnr/ssim."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from pipeline.decode import decode_image
from pipeline.format import Region, check_rel_path, decode_lr_png, lr_key
from pipeline.rows import NO_PIXELS, error_text, to_batch, to_rows
from pipeline.storage import Location

READ_COLUMNS = (
    "lr_uri",
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
    "seconds",
)


def read_source(uri: str, options: dict[str, Any]) -> np.ndarray | None:
    """The source image as decoded for archiving, or None when it can't be read any more."""
    try:
        location = Location.parse(uri, options)
        data = location.filesystem().cat_file(location.root)
        return decode_image(data).pixels
    except Exception:  # a source that no longer decodes is one that is gone: no psnr/ssim
        return None


def read_lr_batch(
    batch: dict[str, np.ndarray],
    *,
    archive: Location,
    model_id: str,
    region: Region | None,
    options: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Ray Data stage: rows {"lr_uri", "rel_path", "source_uri" ("" when unknown), "lr_bytes"
    and "lr_sha256" (from the archive manifest; -1 and "" when unknown)} -> rows with
    "lr_pixels", the HR size and "source_pixels" (empty when the source is gone), or an error
    row. The LR is read from ARCHIVE/lr/<rel_path>.png, a rel_path checked by check_rel_path."""
    rows = to_rows(batch)
    for row in rows:
        start = time.perf_counter()
        row.update(status="ok", model_id=model_id, region=None if region is None else region.text)
        row.update(lr_pixels=NO_PIXELS, source_pixels=NO_PIXELS)
        try:
            path = archive.join(lr_key(check_rel_path(row["rel_path"])))
            try:
                data = archive.filesystem().cat_file(path)
            except FileNotFoundError:
                raise ValueError(f"LR file {row['lr_uri']} is missing") from None
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
            x, y, w, h = region or (0, 0, header.width, header.height)
            row.update(width=w, height=h)
            source = read_source(row["source_uri"], options) if row["source_uri"] else None
            if source is not None and source.shape[:2] == (header.height, header.width):
                row["source_pixels"] = source[y : y + h, x : x + w]
        except Exception as e:  # one image must not stop the job: it becomes its row
            row.update(status="error", error=error_text(e))
        row["seconds"] = time.perf_counter() - start
    return to_batch(rows, READ_COLUMNS)


def check_recorded(data: bytes, row: dict[str, Any]) -> None:
    """ValueError unless the LR file's bytes are those the archive manifest recorded: its size
    (lr_bytes, -1 when unknown) and SHA-256 (lr_sha256, "" when unknown)."""
    expected_bytes, expected_sha256 = int(row["lr_bytes"]), row["lr_sha256"]
    if expected_bytes >= 0 and len(data) != expected_bytes:
        raise ValueError(
            f"LR file {row['lr_uri']} has {len(data)} bytes, the archive manifest says "
            f"{expected_bytes}: it changed since it was archived"
        )
    if expected_sha256:
        found = hashlib.sha256(data).hexdigest()
        if found != expected_sha256:
            raise ValueError(
                f"LR file {row['lr_uri']} has SHA-256 {found}, the archive manifest says "
                f"{expected_sha256}: it changed since it was archived"
            )
