"""Read stage of restore: LR PNG -> LR pixels and the size to restore, checked against the
model; plus the source pixels, when the source is still readable, for psnr/ssim."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.decode import decode_image
from pipeline.format import PERMANENT, TRANSIENT, Region, decode_lr_png
from pipeline.rows import NO_PIXELS, to_batch, to_rows
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
    "error_kind",
)


def read_source(uri: str, options: dict[str, Any]) -> np.ndarray | None:
    """The source image as decoded for archiving, or None when it can't be read any more."""
    try:
        location = Location.parse(uri, options)
        data = location.filesystem().cat_file(location.root)
        return decode_image(data).pixels
    except (OSError, ValueError):
        return None


def read_lr_batch(
    batch: dict[str, np.ndarray],
    *,
    model_id: str,
    region: Region | None,
    options: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Ray Data stage: rows {"lr_uri", "rel_path", "source_uri" ("" when unknown)} -> rows
    with "lr_pixels", the HR size and "source_pixels" (empty when the source is gone), or an
    error row."""
    rows = to_rows(batch)
    for row in rows:
        start = time.perf_counter()
        row.update(status="ok", model_id=model_id, region=None if region is None else region.text)
        row.update(lr_pixels=NO_PIXELS, source_pixels=NO_PIXELS)
        try:
            location = Location.parse(row["lr_uri"], options)
            try:
                data = location.filesystem().cat_file(location.root)
            except FileNotFoundError:
                # transient: a re-run of archive may write it again
                raise OSError(f"LR file {row['lr_uri']} is missing") from None
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
        except ValueError as e:  # the LR file itself, or the region: it would fail again
            row.update(status="error", error=str(e), error_kind=PERMANENT)
        except OSError as e:
            row.update(status="error", error=str(e), error_kind=TRANSIENT)
        row["seconds"] = time.perf_counter() - start
    return to_batch(rows, READ_COLUMNS)
