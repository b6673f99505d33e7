"""Write stage of restore: HR pixels -> DST/<rel_path>.<format> with the source's metadata,
written atomically; a kept source -> DST/<rel_path> as it was. An image the archive kept before
and holds as an LR now, or the reverse, loses the output an earlier restore gave it."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
from PIL import Image, ImageCms

from pipeline.format import (
    KEPT,
    RESTORE_SCHEMA,
    Metadata,
    check_sides,
    encode_output,
    held_by,
    not_held,
    output_key,
)
from pipeline.rows import error_kind, error_text, to_batch, to_rows
from pipeline.stage import Earlier, Row, fail, remove_earlier, write_files
from pipeline.storage import Location

SRGB = ImageCms.createProfile("sRGB")


def to_srgb(pixels: np.ndarray, icc: bytes) -> tuple[np.ndarray, str]:
    """Pixels in the colour space of the ICC profile `icc` -> sRGB (LittleCMS, perceptual
    intent), and the note "ICC '<description>' -> sRGB"; ValueError for an unusable profile."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.profileToProfile(Image.fromarray(pixels), profile, SRGB, outputMode="RGB")
        description = ImageCms.getProfileDescription(profile).strip()
    except (OSError, ImageCms.PyCMSError) as e:
        raise ValueError(f"--to-srgb: the image's ICC profile is unusable: {e}") from None
    return np.asarray(srgb, dtype=np.uint8), f"ICC {description!r} -> sRGB"


def encode_restored(
    pixels: np.ndarray, image_format: str, metadata: Metadata, srgb: bool
) -> tuple[bytes, str | None, str | None]:
    """A restored image's bytes carrying `metadata`, what it carries ("exif,icc,xmp") and what
    was done: the colour conversion, metadata the format has no place for (or none so big:
    JPEG_LIMITS). With `srgb`, pixels with a profile are converted to sRGB and the profile left
    out; pixels without one are taken as sRGB already. TooLargeForFormat (permanent), before
    any work, for an image with a side over the format's MAX_SIDES."""
    check_sides(pixels.shape[1], pixels.shape[0], image_format, "restore it with --format png")
    notes = []
    if srgb and metadata.icc:
        pixels, converted = to_srgb(pixels, metadata.icc)
        metadata = dataclasses.replace(metadata, icc=None)
        notes.append(converted)
    elif srgb:
        notes.append("no ICC profile: taken as sRGB")
    held = held_by(metadata, image_format)
    left = not_held(metadata, image_format)
    if no_place := [n for n, why in left.items() if not why]:
        notes.append(f"{image_format} holds no {', '.join(no_place)}: not carried")
    notes += [f"{image_format} holds no {n} {why}: not carried" for n, why in left.items() if why]
    return encode_output(pixels, image_format, held), held.names, "; ".join(notes) or None


def write_restored(
    batch: dict[str, np.ndarray], *, dst: Location, image_format: str, to_srgb: bool = False
) -> dict[str, np.ndarray]:
    """Ray Data stage: encode and write each ok row's "restored" with its metadata, and each
    kept row's "kept_data" at its "kept_key"; return manifest rows."""
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
            row.update(output_data=data, metadata=names, conversion=conversion)
        except Exception as e:  # one image must not stop the job: it becomes its row
            fail(row, error_text(e), error_kind(e))
        row["seconds"] += time.perf_counter() - start

    def output(row: Row) -> tuple[str, bytes]:
        return output_key(row["rel_path"], image_format), row["output_data"]

    def kept(row: Row) -> tuple[str, bytes]:
        return str(row["kept_key"]), bytes(row["kept_data"])

    rows = write_files(rows, dst, "output_uri", output)
    rows = write_files(rows, dst, "output_uri", kept, status=KEPT)
    remove_earlier(rows, dst, earlier_output)
    return to_batch(rows, RESTORE_SCHEMA.names)


def earlier_output(row: Row) -> Earlier | None:
    """An earlier restore's output of the image as the other kind, which this row's replaces
    (stage.remove_earlier): "earlier" is its key in DST ("" for none), "earlier_at" when that
    restore recorded it, in microseconds (restore/plan.py; -1 or none: unknown): a file
    changed after stays, and so does a copy whose bytes are not the source's any more."""
    key = row.get("earlier")
    if row["status"] not in ("ok", KEPT) or not isinstance(key, str) or not key:
        return None
    at = row.get("earlier_at")
    written_at = at / 1e6 if isinstance(at, (int, np.integer)) and at >= 0 else None
    if row["status"] == "ok":  # the copy of a kept source: its bytes are the source's
        sha256 = row.get("source_sha256")
        return Earlier(key, "copy of the kept source", written_at, sha256 or None)
    return Earlier(key, "restored image", written_at)
