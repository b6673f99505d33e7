"""The archive format: what an archive and a restore write, and how to read it back.

    ARCHIVE/lr/<rel_path>.png       the LR image, a lossless PNG with tadm:* text chunks, and
                                    the source's EXIF, ICC profile and XMP (Metadata)
    ARCHIVE/kept/<rel_path>         a source kept as it was (status "kept"), byte for byte
    ARCHIVE/manifest/part-*.parquet one row per source image (ARCHIVE_SCHEMA)
    DST/<rel_path>.<format>         a restored image
    DST/manifest/part-*.parquet     one row per restored image (RESTORE_SCHEMA)

docs/format.md describes it for users. Stages and jobs take these names from here, never from
each other.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from pipeline.metadata import (
    DENSITY_KEY,
    DENSITY_UNITS,
    EXIF_HEADER,
    JFIF_UNITS,
    PHOTOSHOP_KEY,
    S3_METADATA_KEY,
    S3_TAGS_KEY,
    Metadata,
    held_by,
    jfif_density,
    parse_density,
    parse_s3_metadata,
    parse_s3_tags,
    png_density,
    with_app13,
    with_jfif_unit,
)
from tadm.config import SCALES
from tadm.png import png_bytes

if TYPE_CHECKING:  # storage imports fsspec; the format needs only its type
    from pipeline.storage import Location

LR_DIR = "lr"
KEPT_DIR = "kept"
MANIFEST_DIR = "manifest"
# Marks, embeddings, overrides and isolates: they reorder the text around them.
# Characters a page shows as \u escapes: bidirectional controls, and control characters other
# than tab and newline (an ESC from a terminal colour code would show as a blank box).
HIDDEN_CHARACTERS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
DONE = ("ok", "skipped")  # statuses of an image whose output exists
# A source copied as it was: below the quality floor, or not archivable with --keep-failed.
# Its output exists too, and re-runs skip it; a restore gives it back byte for byte.
KEPT = "kept"
# error_kind of an error row. A permanent failure comes from the input itself (an undecodable
# or unsupported file, a bomb, an image smaller than the scale, a corrupt or foreign LR): a
# re-run would fail again, so it is not retried unless --retry-errors. A transient one (I/O,
# the model) is retried by every re-run; so is a row whose error_kind is null.
PERMANENT = "permanent"
TRANSIENT = "transient"
OUTPUT_FORMATS = ("png", "jpeg", "webp")
QUALITY = 95  # JPEG and WebP: near-transparent to the eye; PNG is lossless
# The kept_reason of an image whose pixels are not all opaque, which a quality floor keeps
# (pipeline/archive/downscale.py): the first of its reasons, so a re-run can tell it
TRANSPARENT_REASON = "transparent pixels, whose alpha an LR drops"
# Decompression-bomb limit on sources and on the size an LR file declares, set deliberately:
# 16384 x 16384 = 268 MP, far above any photo and below what one decode may allocate (~800 MB
# of RGB).
MAX_PIXELS = 16384 * 16384


CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
EMPTY_OR_DOTS = re.compile(r"(?:^|/)\.{0,2}(?:/|\Z)")  # a segment "", "." or ".."


def check_rel_path(rel_path: str) -> str:
    """`rel_path` itself if it is a plain relative path of "/"-separated names, else ValueError
    naming it: every path made from data (a listing, a manifest row, a request) passes here
    before anything is read or written with it, so none leads outside its root."""
    if not isinstance(rel_path, str) or not rel_path:
        problem = "is empty"
    elif rel_path.startswith("/"):
        problem = 'is absolute (so is the name of an object whose key has "//")'
    elif "\\" in rel_path:
        problem = "has a backslash"
    elif CONTROL_CHARACTER.search(rel_path):
        problem = "has a control character"
    elif EMPTY_OR_DOTS.search(rel_path):
        problem = 'has an empty, "." or ".." segment'
    else:
        return rel_path
    raise ValueError(
        f"path {str(rel_path)[:200]!r} {problem}: refused, paths must stay in their root"
    )


def visible(text: str) -> str:
    """`text` with its bidirectional and other control characters shown as \\u escapes, for a
    page to show a name as it is: U+202E would show "photo\\u202egnp.exe" as "photoexe.png"."""
    return HIDDEN_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def is_rel_path(rel_path: str) -> bool:
    """True when check_rel_path takes `rel_path`."""
    try:
        check_rel_path(rel_path)
    except ValueError:
        return False
    return True


def check_apart(archive: Location, out: Location, name: str) -> None:
    """ValueError unless writing into `out` (a restore's DST, a report's OUT_DIR: `name`)
    cannot overwrite `archive`: `out` must not hold ARCHIVE (its tree would cover the
    archive's files) nor lie in ARCHIVE's lr/, kept/ or manifest/. Anywhere else, even inside
    ARCHIVE, is apart."""
    if archive.within(out):
        where = "is" if out == archive else "holds"
        raise ValueError(
            f"{name} {out.uri!r} {where} ARCHIVE {archive.uri!r}: files written there could "
            "overwrite the archive's; choose another folder"
        )
    for folder in (LR_DIR, KEPT_DIR, MANIFEST_DIR):
        if out.within(archive.child(folder)):
            raise ValueError(
                f"{name} {out.uri!r} lies in ARCHIVE's {folder}/ folder: files written there "
                "could overwrite the archive's; choose another folder"
            )


def lr_key(rel_path: str) -> str:
    """Where an image's LR lives under the archive root: "a/b.jpg" -> "lr/a/b.jpg.png"."""
    return f"{LR_DIR}/{rel_path}.png"


def kept_key(rel_path: str) -> str:
    """Where a kept source lives under the archive root: "a/b.jpg" -> "kept/a/b.jpg"."""
    return f"{KEPT_DIR}/{rel_path}"


def output_key(rel_path: str, image_format: str) -> str:
    """Where a restored image goes under DST: "a/b.jpg" -> "a/b.jpg.png"."""
    return f"{rel_path}.{image_format}"


def encode_output(pixels: np.ndarray, image_format: str, metadata: Metadata | None = None) -> bytes:
    """(H, W, 3) uint8 -> the bytes of a restored image in one of OUTPUT_FORMATS, carrying
    what the format holds of `metadata` (held_by) where given. TooLargeForFormat, before
    encoding, for an image over the format's MAX_SIDES."""
    check_sides(pixels.shape[1], pixels.shape[0], image_format)
    out = io.BytesIO()
    options: dict = {} if image_format == "png" else {"quality": QUALITY}
    metadata = held_by(metadata or Metadata(), image_format)
    if metadata.icc:
        options["icc_profile"] = metadata.icc
    if metadata.exif:  # JPEG's APP1 segment starts with "Exif\0\0"; PNG and WebP take either
        options["exif"] = EXIF_HEADER + metadata.exif
    if image_format == "png":
        options["pnginfo"] = metadata.png_chunks()
    elif metadata.xmp:
        options["xmp"] = metadata.xmp
    if image_format == "jpeg" and metadata.comment:
        options["comment"] = metadata.comment
    jfif = None
    if image_format == "png" and metadata.density:  # pHYs: Pillow takes dots per inch
        options["dpi"] = tuple(v * DENSITY_UNITS["in"] for v in png_density(metadata.density))
    elif image_format == "jpeg" and metadata.density:
        jfif = jfif_density(metadata.density)
        options["dpi"] = jfif[:2]
    Image.fromarray(pixels).save(out, format=image_format.upper(), **options)
    data = out.getvalue()
    if jfif is not None and jfif[2] != JFIF_UNITS["in"]:
        data = with_jfif_unit(data, jfif[2])
    if image_format == "jpeg" and metadata.photoshop:
        return with_app13(data, metadata.photoshop)
    return data


# The longest side each output format's encoder writes: libjpeg's JPEG_MAX_DIMENSION, libwebp's
# WEBP_MAX_DIMENSION, PNG's 2^31 - 1 (the spec's).
MAX_SIDES = {"jpeg": 65500, "png": 2**31 - 1, "webp": 16383}


class TooLargeForFormat(ValueError):
    """An image with a side over its output format's MAX_SIDES: it can never be encoded in it."""


def check_sides(
    width: int, height: int, image_format: str, remedy: str = "write it as PNG"
) -> None:
    """TooLargeForFormat, naming the limit and `remedy`, unless a width x height image fits a
    file of `image_format` ("JPEG holds at most 65500 pixels a side, this image is 16x70000:
    write it as PNG")."""
    limit = MAX_SIDES[image_format]
    if max(width, height) > limit:
        raise TooLargeForFormat(
            f"{image_format.upper()} holds at most {limit} pixels a side, this image is "
            f"{width}x{height}: {remedy}"
        )


# ---- manifests -------------------------------------------------------------------------------

# When the job's manifest writer took the row, strictly increasing within a job. Of the rows of
# one rel_path the latest written_at wins (compaction keeps each row's own), so rewriting old
# rows can never put them over newer ones. Null in parts written before the column: oldest.
WRITTEN_AT = pa.timestamp("us", tz="UTC")

# The archive manifest's columns, then `conversion`: what decoding did to reach 8-bit RGB
# ("RGBA -> RGB, alpha dropped", "EXIF orientation 6 applied"), null when nothing.
ARCHIVE_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("rel_path", pa.string()),
        ("status", pa.string()),  # "ok" | "error" | "skipped" (done by an earlier run)
        ("error", pa.string()),
        ("width", pa.int64()),  # source size after EXIF orientation: the size restore gives
        ("height", pa.int64()),
        ("source_bytes", pa.int64()),
        ("source_sha256", pa.string()),
        ("lr_uri", pa.string()),
        ("lr_width", pa.int64()),
        ("lr_height", pa.int64()),
        ("lr_bytes", pa.int64()),
        ("bpp", pa.float64()),  # 8 * lr_bytes / (width * height)
        ("compression_ratio", pa.float64()),  # source_bytes / lr_bytes
        ("scale", pa.int64()),
        ("model_id", pa.string()),
        ("psnr", pa.float64()),  # dB, restored vs source; null unless --verify
        ("ssim", pa.float64()),
        ("timestep_mean", pa.float64()),  # mean TPM time step over tiles; null unless --verify
        ("seconds", pa.float64()),  # decode + model + write time of this image
        ("conversion", pa.string()),
        ("metadata", pa.string()),  # what the LR carries of the source's: "exif,icc,xmp"
        ("kept_uri", pa.string()),  # ARCHIVE/kept/<rel_path> when the source was kept as is
        ("kept_reason", pa.string()),  # why it was kept: below the quality floor, or its error
        ("lr_sha256", pa.string()),  # of the LR file's bytes, hex: restore checks it
        ("error_kind", pa.string()),  # PERMANENT | TRANSIENT for an error; else null
        # The source as listed, for change detection: a re-run redoes an image whose size,
        # or ETag (S3; else modification time), differs from these.
        ("source_mtime", pa.timestamp("us", tz="UTC")),
        ("source_etag", pa.string()),  # S3 ETag without quotes; null for local files
        ("written_at", WRITTEN_AT),
        # What the model ran in: fp32 | fp16 | bf16 (half precision moves a few % of LR pixels
        # by a level: same model_id, not the same bytes); null where the model never ran.
        ("precision", pa.string()),
    ]
)

ARCHIVED_NOTE = "when archived: "  # a restore's note of what archiving did to the image
RESTORE_SCHEMA = pa.schema(
    [
        ("lr_uri", pa.string()),
        ("rel_path", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),  # "ok" | "error" | "skipped"
        ("error", pa.string()),
        ("width", pa.int64()),  # size of the written image: the original, or the region's
        ("height", pa.int64()),
        ("region", pa.string()),  # "x,y,w,h" in HR pixels (Region.text), null for the whole image
        ("model_id", pa.string()),
        ("seconds", pa.float64()),
        ("psnr", pa.float64()),  # restored pixels (before a lossy --format) vs the source, if any
        ("ssim", pa.float64()),
        ("metadata", pa.string()),  # what the output carries: "exif,icc,xmp"
        # --to-srgb: "ICC 'Display P3' -> sRGB"; last, ARCHIVED_NOTE and the archive row's
        ("conversion", pa.string()),
        ("error_kind", pa.string()),  # PERMANENT | TRANSIENT for an error; else null
        ("written_at", WRITTEN_AT),
        ("precision", pa.string()),  # what the model ran in, as in ARCHIVE_SCHEMA
        ("output_sha256", pa.string()),  # of the file written (a kept source's are the source's)
        ("lr_sha256", pa.string()),  # of the LR restored from (to read, for an error); else null
    ]
)


# ---- the LR file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LrHeader:
    """The LR PNG's text chunks: tadm:width, tadm:height (the HR size to restore), tadm:scale
    and tadm:model_id (the model that wrote the file, and must restore it); and the source's
    metadata (eXIf, iCCP, XMP chunks; its density in tadm:density, an S3 source's user
    metadata in tadm:s3-metadata, its object tags in tadm:s3-tags)."""

    width: int  # HR width to restore
    height: int  # HR height to restore
    scale: int  # 16 or 32
    model_id: str  # TADM.model_id of the model that wrote the file
    metadata: Metadata = Metadata()  # the source's EXIF, ICC profile and XMP


def encode_lr_png(lr: np.ndarray, header: LrHeader) -> bytes:
    """(h, w, 3) uint8 -> PNG bytes carrying the tadm:* chunks and the metadata; without
    metadata, the same bytes as a PNG of the pixels and the tadm:* chunks alone."""
    text = {
        "tadm:width": str(header.width),
        "tadm:height": str(header.height),
        "tadm:scale": str(header.scale),
        "tadm:model_id": header.model_id,
    }
    m = header.metadata
    if m.density:
        text[DENSITY_KEY] = m.density.decode()
    if m.s3_metadata:
        text[S3_METADATA_KEY] = m.s3_metadata.decode("ascii")
    if m.s3_tags:
        text[S3_TAGS_KEY] = m.s3_tags.decode("ascii")
    return png_bytes(lr, text, chunks=m.png_chunks(), icc_profile=m.icc, exif=m.exif)


class TooManyPixels(ValueError):
    """An LR file whose PNG size, or declared size to restore, is over MAX_PIXELS."""


def decode_lr_png(data: bytes) -> tuple[np.ndarray, LrHeader]:
    """PNG bytes -> ((h, w, 3) uint8, header); ValueError if it is not a TADM LR file, and
    TooManyPixels, before any image is allocated, if the PNG or the size it declares (the one a
    restore allocates) is over MAX_PIXELS, the limit archive puts on sources."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x MAX_IMAGE_PIXELS; the explicit check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
                check_pixels("the LR PNG is", img.width, img.height)
                # tEXt chunks before the pixel data are read by open(); our files put them there.
                declared = (img.info.get("tadm:width"), img.info.get("tadm:height"))
                if all(isinstance(v, str) and v.isdigit() for v in declared):
                    check_pixels("it declares", *(int(v) for v in declared))
                img.load()
                text = dict(img.text)
                metadata = Metadata.from_info(img.info)
                pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:  # Pillow's own check, at twice the limit, came first
        check_pixels("the LR PNG is", *struct.unpack(">II", data[16:24]))  # IHDR's size
        raise
    except UnidentifiedImageError:  # its message names a BytesIO object, nothing of the file
        raise ValueError("corrupt LR PNG: not a PNG file") from None
    except TooManyPixels:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # ValueError: "Truncated gAMA chunk"...
        raise ValueError(f"corrupt LR PNG: {e}") from None
    # The Metadata fields the LR holds in text chunks of its own, each checked as it parses.
    for key, name, parse in (
        (DENSITY_KEY, "density", parse_density),
        (S3_METADATA_KEY, "s3_metadata", parse_s3_metadata),
        (S3_TAGS_KEY, "s3_tags", parse_s3_tags),
    ):
        if key in text:
            value = text[key].encode("utf-8")
            try:
                parse(value)
            except ValueError as e:
                raise ValueError(f"corrupt LR PNG: {e}") from None
            metadata = dataclasses.replace(metadata, **{name: value})
    try:
        header = LrHeader(
            width=int(text["tadm:width"]),
            height=int(text["tadm:height"]),
            scale=int(text["tadm:scale"]),
            model_id=text["tadm:model_id"],
            metadata=metadata,
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a TADM LR PNG: missing or bad text chunk {e}") from None
    check_header(header, pixels.shape[1], pixels.shape[0])
    check_lr_metadata(text, metadata)
    return pixels, header


def check_lr_metadata(text: dict[str, str], metadata: Metadata) -> None:
    """ValueError unless the LR's Photoshop resources and comment are ones archive writes: a
    raw profile that reads, blocks within CARRY_LIMITS (a restore writes them into files that
    must read back too)."""
    if text.get(PHOTOSHOP_KEY) is not None and metadata.photoshop is None:
        raise ValueError(f"corrupt LR PNG: its {PHOTOSHOP_KEY!r} chunk is no raw profile")
    _, over = Metadata(photoshop=metadata.photoshop, comment=metadata.comment).over_limits()
    if over:
        raise ValueError(f"corrupt LR PNG: {over[0]}")


def check_pixels(what: str, width: int, height: int) -> None:
    """TooManyPixels unless width x height is at most MAX_PIXELS."""
    if width * height > MAX_PIXELS:
        raise TooManyPixels(
            f"{what} {width}x{height} = {width * height} pixels, over the limit of {MAX_PIXELS}"
        )


def check_header(header: LrHeader, lr_width: int, lr_height: int) -> None:
    """ValueError unless the header is one archive writes for an LR of lr_width x lr_height:
    a known scale, a size to restore within MAX_PIXELS that the LR is 1/scale of."""
    width, height, scale = header.width, header.height, header.scale
    if scale not in SCALES:
        raise ValueError(f"not a TADM LR PNG: tadm:scale is {scale}, not one of {SCALES}")
    if width < 1 or height < 1:
        raise ValueError(f"not a TADM LR PNG: it declares a {width}x{height} image")
    check_pixels("it declares", width, height)
    expected = (math.ceil(width / scale), math.ceil(height / scale))
    if (lr_width, lr_height) != expected:
        raise ValueError(
            f"LR PNG is {lr_width}x{lr_height}, but a {width}x{height} image at x{scale} "
            f"gives {expected[0]}x{expected[1]}"
        )


# ---- regions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A window of an HR image in HR pixels: left x, top y, width w, height h. Unpacks as
    (x, y, w, h), the tuple TADM.upscale takes. ValueError unless x, y >= 0 and w, h >= 1."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.w < 1 or self.h < 1:
            raise ValueError(f"region {self.text} needs X, Y >= 0 and W, H >= 1")

    @classmethod
    def parse(cls, text: str) -> Region:
        """Region of the text "X,Y,W,H" (four integers); ValueError naming a bad text."""
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"region must be X,Y,W,H (four integers), got {text!r}") from None
        return cls(x, y, w, h)

    @property
    def text(self) -> str:
        """The text "x,y,w,h", as manifests record it."""
        return f"{self.x},{self.y},{self.w},{self.h}"

    def __iter__(self) -> Iterator[int]:
        return iter((self.x, self.y, self.w, self.h))

    def check_inside(self, width: int, height: int) -> None:
        """ValueError unless the region lies inside a width x height image."""
        if self.x + self.w > width or self.y + self.h > height:
            raise ValueError(f"region {self.text} is not inside the {width}x{height} image")
