"""Write stage of archive: LR PNG bytes -> DST/lr/<rel_path>.png, and the row's sizes."""

from __future__ import annotations

import time

import numpy as np

from pipeline.manifest import ARCHIVE_SCHEMA
from pipeline.rows import to_batch, to_rows
from pipeline.storage import Location, write_atomic


def lr_key(rel_path: str) -> str:
    """Where an image's LR lives under the archive root: "a/b.jpg" -> "lr/a/b.jpg.png"."""
    return f"lr/{rel_path}.png"


def write_lr(batch: dict[str, np.ndarray], *, dst: Location) -> dict[str, np.ndarray]:
    """Ray Data stage: write each ok row's "lr_png" atomically; return manifest rows."""
    fs = dst.filesystem()
    rows = to_rows(batch)
    for row in rows:
        if row["status"] != "ok":
            continue
        start = time.perf_counter()
        data = bytes(row["lr_png"])
        path = dst.path(lr_key(row["rel_path"]))
        try:
            write_atomic(fs, path, data)
        except OSError as e:
            row.update(status="error", error=f"cannot write {dst.uri_of(path)}: {e}")
        else:
            row["lr_uri"] = dst.uri_of(path)
            row["lr_bytes"] = len(data)
            row["bpp"] = 8 * len(data) / (row["width"] * row["height"])
            row["compression_ratio"] = row["source_bytes"] / len(data)
        row["seconds"] += time.perf_counter() - start
    return to_batch(rows, ARCHIVE_SCHEMA.names)
