"""Write stage of archive: LR PNG bytes -> DST/lr/<rel_path>.png, and the row's sizes and
the SHA-256 of the bytes written."""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.format import ARCHIVE_SCHEMA, lr_key
from pipeline.rows import to_batch, to_rows
from pipeline.stage import Row, write_files
from pipeline.storage import Location


def write_lr(batch: dict[str, np.ndarray], *, dst: Location) -> dict[str, np.ndarray]:
    """Ray Data stage: write each ok row's "lr_png" atomically; return manifest rows."""

    def output(row: Row) -> tuple[str, bytes]:
        return lr_key(row["rel_path"]), bytes(row["lr_png"])

    rows = write_files(to_rows(batch), dst, "lr_uri", output)
    for row in rows:
        if row["status"] == "ok":
            lr_bytes = len(row["lr_png"])
            row["lr_bytes"] = lr_bytes
            row["lr_sha256"] = hashlib.sha256(row["lr_png"]).hexdigest()
            row["bpp"] = 8 * lr_bytes / (row["width"] * row["height"])
            row["compression_ratio"] = row["source_bytes"] / lr_bytes
    return to_batch(rows, ARCHIVE_SCHEMA.names)
