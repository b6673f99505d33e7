"""Write stage of restore: HR pixels -> DST/<rel_path>.<format>, written atomically."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from pipeline.manifest import RESTORE_SCHEMA
from pipeline.rows import to_batch, to_rows
from pipeline.storage import Location, write_atomic

OUTPUT_FORMATS = ("png", "jpeg", "webp")
QUALITY = 95  # JPEG and WebP: near-transparent to the eye; PNG is lossless


def output_key(rel_path: str, image_format: str) -> str:
    """Where a restored image goes under DST: "a/b.jpg" -> "a/b.jpg.png"."""
    return f"{rel_path}.{image_format}"


def encode(pixels: np.ndarray, image_format: str) -> bytes:
    out = io.BytesIO()
    options = {} if image_format == "png" else {"quality": QUALITY}
    Image.fromarray(pixels).save(out, format=image_format.upper(), **options)
    return out.getvalue()


def write_restored(
    batch: dict[str, np.ndarray], *, dst: Location, image_format: str
) -> dict[str, np.ndarray]:
    """Ray Data stage: encode and write each ok row's "restored"; return manifest rows."""
    fs = dst.filesystem()
    rows = to_rows(batch)
    for row in rows:
        if row["status"] != "ok":
            continue
        start = time.perf_counter()
        path = dst.path(output_key(row["rel_path"], image_format))
        try:
            write_atomic(fs, path, encode(row["restored"], image_format))
            row["output_uri"] = dst.uri_of(path)
        except OSError as e:
            row.update(status="error", error=f"cannot write {dst.uri_of(path)}: {e}")
        row["seconds"] += time.perf_counter() - start
    return to_batch(rows, RESTORE_SCHEMA.names)
