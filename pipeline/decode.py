"""Decode stage of archive: source bytes -> 8-bit RGB pixels, one error row per bad file.

Not Ray's read_images, which stops the whole job on one corrupt file: this stage catches every
per-image failure and turns it into a row with status "error" and a message. The source's
EXIF, ICC profile and XMP come along (Metadata), for the LR PNG to carry. A file that holds
what an LR cannot (bytes after its image, such as a Motion Photo's video; GeoTIFF
georeferencing) is a row with status "kept" and its kept_reason instead, for the write stage to
keep as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import re
import struct
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pillow_heif
import pillow_jxl  # noqa: F401  (registers Pillow's JPEG XL plugin)
from PIL import (
    ExifTags,
    Image,
    ImageCms,
    ImageOps,
    PngImagePlugin,
    TiffTags,
    UnidentifiedImageError,
)

from pipeline.containers import (
    BMP_CALIBRATED,
    BMP_EMBEDDED,
    BMP_LINKED,
    JXL_CONTAINER,
    MAX_TIFF_IFDS,
    MP_ENTRIES,
    bmp_colour_space,
    bmp_end,
    bmp_profile,
    boxes_end,
    foreign_boxes,
    heif_images_not_carried,
    heif_items,
    jxl_animated,
    jxl_metadata_boxes,
    mpo_end,
    tiff_end,
    tiff_exif,
    tiff_samples,
)
from pipeline.exif import EXIF_ORIENTATION, reset_exif_orientation, swap_exif_axes
from pipeline.format import KEPT, MAX_PIXELS, check_rel_path
from pipeline.metadata import (
    COMMENT_KEY,
    EXIF_RAW_KEY,
    IPTC_RAW_KEY,
    JFIF_UNITS,
    METADATA_FIELDS,
    PHOTOSHOP_HEADER,
    PHOTOSHOP_KEY,
    S3_FIELDS,
    XMP_KEY,
    Metadata,
    colour_chunks,
    density_text,
    parse_density,
    raw_exif,
    raw_iptc,
)
from pipeline.rows import NO_PIXELS, error_kind, error_text, to_batch, to_rows
from pipeline.sources import is_image_name
from pipeline.thumbnails import (
    drop_exif_thumbnail,
    drop_photoshop_thumbnails,
    drop_xmp_thumbnails,
    has_exif_thumbnail,
)

pillow_heif.register_heif_opener()  # HEIC/HEIF; Pillow reads AVIF itself

# Pillow itself raises at twice the limit (pipeline/format.py's MAX_PIXELS).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The formats archive reads; a PSD or ICO renamed to .png is an error, not a surprise.
PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF", "JXL")
TIFF_XMP = 700  # the XMP tag of a TIFF file
TIFF_ICC = 34675  # the ICC profile tag of a TIFF file
TIFF_RESOLUTION = (282, 283, 296)  # XResolution, YResolution, ResolutionUnit
TIFF_UNITS = {2: "in", 3: "cm"}  # ResolutionUnit's codes (1: none, an aspect ratio only)
JFIF_UNIT_NAMES = {code: unit for unit, code in JFIF_UNITS.items()}
# A TIFF's blocks of metadata, by what a user knows them as: its IPTC, which an LR does not
# carry, and its Exif and GPS IFDs, which it carries in its EXIF (tiff_exif) where they read.
TIFF_BLOCKS = {33723: "IPTC", 34665: "EXIF", 34853: "GPS"}
# The IFDs a TIFF's EXIF copies (tiff_exif), by the tag that points to each, as a row names
# what it leaves out of them.
TIFF_EXIF_IFDS = {34665: "EXIF", 34853: "GPS", 40965: "EXIF Interoperability"}
# The tags of a TIFF's first IFD that only lay out the pixels the decode reads (Orientation is
# applied): an image restored from the LR lays its pixels out anew, so nothing of them is lost.
# Every other tag is named in the row unless what it holds is carried (not_carried).
TIFF_LAYOUT_TAGS = frozenset(
    {
        254,  # NewSubfileType
        255,  # SubfileType
        256,  # ImageWidth
        257,  # ImageLength
        258,  # BitsPerSample
        259,  # Compression
        262,  # PhotometricInterpretation
        266,  # FillOrder
        273,  # StripOffsets
        274,  # Orientation
        277,  # SamplesPerPixel
        278,  # RowsPerStrip
        279,  # StripByteCounts
        284,  # PlanarConfiguration
        292,  # T4Options
        293,  # T6Options
        317,  # Predictor
        320,  # ColorMap
        322,  # TileWidth
        323,  # TileLength
        324,  # TileOffsets
        325,  # TileByteCounts
        338,  # ExtraSamples
        339,  # SampleFormat
        347,  # JPEGTables
        529,  # YCbCrCoefficients
        530,  # YCbCrSubSampling
        531,  # YCbCrPositioning
        532,  # ReferenceBlackWhite
    }
)
# GeoTIFF's tags, by the names its standard gives them (Pillow's end in "Tag").
GEOTIFF_TAGS = {
    33550: "ModelPixelScale",
    33922: "ModelTiepoint",
    34264: "ModelTransformation",
    34735: "GeoKeyDirectory",
    34736: "GeoDoubleParams",
    34737: "GeoAsciiParams",
}
# The tags of a TIFF's first IFD its EXIF (tiff_exif) leaves out: those that lay out its pixels
# but Orientation (set to 1 as every EXIF's); its resolution, ICC profile and XMP, which travel
# as the density, ICC profile and XMP; GeoTIFF's (such a file is kept as it is); its SubIFDs
# (such a file is no archived image); its IPTC, Photoshop resources and Photoshop's layers
# (ImageSourceData): blocks of their own, which the row names. Every other tag of the first IFD
# describes the photo (Make, Model, DateTime, Artist, Copyright, ImageDescription...) and travels.
TIFF_NOT_EXIF = (
    (TIFF_LAYOUT_TAGS - {274})
    | set(TIFF_RESOLUTION)
    | {TIFF_ICC, TIFF_XMP, 330, 33723, 34377, 37724}
    | set(GEOTIFF_TAGS)
)
XMP_ORIENTATION = re.compile(rb'(tiff:Orientation(?:="|>))[2-8](?=["<])')
SRGB = ImageCms.createProfile("sRGB")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
KEY_ROWS = 256  # rows compared with a colour key at a time
SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
EXIF_HEADERS = (b"II*\x00", b"MM\x00*")
XMP_SEGMENT = b"http://ns.adobe.com/xap/1.0/\x00"
EXTENDED_XMP_SEGMENT = b"http://ns.adobe.com/xmp/extension/\x00"
EXIF_SEGMENT = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# A PNG's chunks of pixels, or of metadata an LR carries (text chunks are looked at apart).
PNG_CARRIED_CHUNKS = ("IHDR", "PLTE", "IDAT", "IEND", "eXIf", "iCCP")
# A GIF's application extensions that say how to animate it, not what it shows.
GIF_ANIMATION_EXTENSIONS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")
# How a GIF's blocks start (gif_blocks): an extension's introducer and label, an image's
# descriptor, the trailer.
GIF_APPLICATION = b"\x21\xff"
GIF_COMMENT = b"\x21\xfe"
GIF_PLAIN_TEXT = b"\x21\x01"
GIF_IMAGE = b"\x2c"
GIF_TRAILER = b"\x3b"
# A WebP's chunks of pixels or animation, or of metadata an LR carries (ICC profile, EXIF, XMP).
WEBP_CHUNKS = ("VP8 ", "VP8L", "VP8X", "ALPH", "ANIM", "ANMF", "ICCP", "EXIF", "XMP ")
TIFF_SUBIFDS = 330  # the tag of a TIFF's further images beside its IFD chain's (a DNG's raw)
# JPEG APPn segments that hold no metadata archive drops: JFIF and its thumbnail extension,
# EXIF and XMP, the ICC profile and an MPO's index, Adobe's colour transform. (APP13 is
# carried when it is Photoshop's, named apart when not.)
JPEG_KEPT_SEGMENTS = {
    "APP0": (b"JFIF", b"JFXX"),
    "APP1": (EXIF_SEGMENT, XMP_SEGMENT),
    "APP2": (b"ICC_PROFILE\x00", b"MPF\x00"),
    "APP14": (b"Adobe",),
}
# nclx code points (ISO/IEC 23091-2) an LR shows right without a profile: BT.709 primaries
# (sRGB's) or unspecified; the sRGB or BT.709 transfer curves (BT.601 and BT.2020's are the
# latter), or unspecified.
SRGB_PRIMARIES = (1, 2)
SRGB_TRANSFERS = (1, 2, 6, 13, 14, 15)
NCLX_PRIMARIES = {9: "BT.2020 primaries", 11: "DCI-P3 primaries", 12: "Display P3 primaries"}
NCLX_TRANSFERS = {
    1: "BT.709 transfer",
    8: "linear transfer",
    13: "sRGB transfer",
    16: "PQ (HDR) transfer",
    18: "HLG (HDR) transfer",
}
# What a kept_reason calls where the image in a file of a format ends (image_end).
IMAGE_ENDS = {
    "GIF": "the GIF's trailer",
    "BMP": "the BMP's data",
    "TIFF": "the TIFF's data",
    "JPEG": "the JPEG's end (a Motion Photo's video, say)",
    "PNG": "the PNG's IEND chunk",
    "WEBP": "the WebP's RIFF chunk",
    "MPO": "the MPO's last image",
    "HEIF": "the HEIF's last box",
    "AVIF": "the AVIF's last box",
    "JXL": "the JPEG XL container's last box",
}
# The formats whose files are ISO base media boxes (a JPEG XL's, when in a container), by name.
BOX_FORMATS = {"HEIF": "HEIF", "AVIF": "AVIF", "JXL": "JPEG XL"}
CANNOT_HOLD = "which an LR cannot hold: kept as it is"  # a kept_reason's end
TIFF_UNKNOWN_MODE = "TIFF: unknown pixel mode"  # open_failures' for samples Pillow does not read
# What the JPEG XL plugin adds to libjxl's errors, advice for libjxl's own developers.
LIBJXL_ADVICE = re.compile(r"\. Please build `libjxl` from source.*", re.DOTALL)
PADDING = b"\x00\xff"  # the bytes some cameras pad a file with after its image


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    conversion: str | None  # what was done to get there, e.g. "RGBA -> RGB, alpha dropped"
    metadata: Metadata = Metadata()  # EXIF and XMP with orientation 1, ICC of `pixels`
    kept_reason: str | None = None  # why the source must be kept as it is, not shrunk
    # What a quality floor must see beside the pixels (pipeline/archive/downscale.py): pixels
    # not fully opaque, whose alpha the LR drops; and of a source of more than 8 bits a
    # sample, the 8-bit levels of the bits its values use (at least 1; 255 for any other),
    # the peak of its psnr: a 12-bit scan in a 16-bit file has 15, and an error of 3 levels
    # in 15 is no 37 dB round trip.
    transparent: bool = False
    levels: float = 255.0


def decode_image(
    data: bytes, max_pixels: int = MAX_PIXELS, drop_thumbnails: bool = False
) -> Decoded:
    """Decode one image file to 8-bit RGB, with the metadata to carry (without its embedded
    thumbnails, with `drop_thumbnails`) and what it holds that an LR cannot (kept_reason); raise
    ValueError with a clear message if it can't."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x MAX_IMAGE_PIXELS; the explicit check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        if img.width * img.height > max_pixels:
            raise ValueError(bomb_message(img.width, img.height, max_pixels))
        steps = []
        frames = getattr(img, "n_frames", 1)
        if img.format == "AVIF":  # Pillow's plugin counts an AVIF's frames, not its images
            frames = max(frames, heif_items(data).images)
        elif img.format == "JXL" and jxl_animated(data):  # Pillow's plugin reads one frame
            raise ValueError(
                "JXL image with an animation (several frames): multi-frame images are not archived"
            )
        if frames > 1 and img.format == "MPO":  # the first is the photo; then previews, depth
            steps.append(f"MPO: first of {frames} images archived, the others not")
        elif frames > 1:
            raise ValueError(
                f"{img.format} image with {frames} frames (animated or multi-page): "
                "multi-frame images are not archived"
            )
        sub_images = tiff_sub_images(img)
        if sub_images:
            raise ValueError(
                f"TIFF image with {sub_images} SubIFD image{'s' * (sub_images > 1)} beside its "
                "first: multi-frame images are not archived"
            )
        sixteen_bit = ";16" in raw_mode(img)
        exif_note = drop_unreadable_exif(img)
        # Read before load(): Pillow's TIFF plugin turns a TIFF as it loads it and drops the tag.
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        tagged = orientation_tagged(img)
        img.load()
        transparent = has_transparency(img)
        exif_note = exif_note or drop_unreadable_exif(img)  # a PNG's eXIf after its pixels
        metadata = source_metadata(img, data)
        dropped = not_carried(img, metadata, data)
        kept = kept_reason(img, data)
        if drop_thumbnails:
            metadata, thumbnails = without_thumbnails(metadata)
            steps += [thumbnails] if thumbnails else []
        if orientation in range(2, 9):
            img = ImageOps.exif_transpose(img)  # turns only what load() has not
            steps.append(f"{'EXIF' if tagged else 'XMP'} orientation {int(orientation)} applied")
            if orientation in range(5, 9):  # turned a quarter: y is x now
                metadata = turned_axes(metadata)
        mode = img.mode
        colour = metadata.png_colour
        img, metadata, icc_note = match_profile(img, metadata)
        if colour and not metadata.png_colour:  # the profile, which overrides them, went too
            dropped.append(f"PNG {', '.join(k.decode() for k, _ in colour_chunks(colour))}")
        metadata, over = metadata.over_limits()
        dropped += over
        # A 16-bit image a profile converted is 8-bit RGB now, and its note says so.
        rgb, converted = to_rgb(img, sixteen_bit and img.mode == mode, transparent)
        deep = sixteen_bit or mode in SIXTEEN_BIT_GRAY_MODES or mode == "I"
        # The bits its values use: 12 of a 12-bit scan's 16 leave 2**4 - 1 8-bit levels. Gray
        # is rounded to 8 bits (4095 -> 16): the bits of its 16-bit values; else truncated.
        if img.mode in SIXTEEN_BIT_GRAY_MODES or img.mode == "I":
            bits = max(0, int(np.asarray(img).max()).bit_length() - 8)
        else:
            bits = int(rgb.max()).bit_length()
        levels = float(max(1, 2**bits - 1)) if deep else 255.0
        uncarried = f"not carried: {', '.join(dropped)}" if dropped else None
        xmp_note = None
        if metadata.xmp and not is_utf8(metadata.xmp):
            xmp_note = "XMP not UTF-8: its invalid bytes carried as U+FFFD"
        notes = (converted, exif_note, icc_note, xmp_note, uncarried)
        steps += [note for note in notes if note]
    except Image.DecompressionBombError:  # Pillow's own check, at twice its limit, came first
        size = claimed_size(data)
        if size and size[0] * size[1] > max_pixels:
            raise ValueError(bomb_message(*size, max_pixels)) from None
        raise ValueError(f"decompression bomb: over the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        failures = open_failures(data)
        why = "".join(f" ({reason})" for reason in failures)
        if TIFF_UNKNOWN_MODE in failures:  # Pillow reads few kinds of TIFF samples: say which
            why += (
                f" (its pixels: {tiff_samples(data)}; convert it to 8 or 16-bit unsigned "
                "integer samples, which archive reads)"
            )
        raise ValueError(f"not a readable {'/'.join(PILLOW_FORMATS)} image{why}") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"corrupt or truncated image: {e}") from None
    except ValueError:
        raise
    except Exception as e:  # Pillow raises assorted errors on malformed files
        said = LIBJXL_ADVICE.sub("", str(e))
        raise ValueError(f"corrupt image: {type(e).__name__}: {said}") from None
    conversion = "; ".join(steps) or None
    return Decoded(
        pixels=rgb,
        conversion=conversion,
        metadata=metadata,
        kept_reason=kept,
        transparent=transparent,
        levels=levels,
    )


def has_transparency(img: Image.Image) -> bool:
    """Whether some pixel of `img` (loaded) is not fully opaque: an alpha channel below its
    maximum, or a palette's or a colour key's transparency (PNG tRNS) that some pixel uses.
    A 16-bit colour key is compared with the 8-bit pixels Pillow keeps of 16-bit RGB, its high
    bytes: where only its low bytes differ, a pixel is taken as transparent."""
    if img.mode in ALPHA_MODES:  # its last band: "A", or "a" of premultiplied modes
        return img.getchannel(img.getbands()[-1]).getextrema()[0] < 255
    if "transparency" not in img.info:
        return False
    if img.mode == "P":
        return img.convert("RGBA").getchannel("A").getextrema()[0] < 255
    key = img.info["transparency"]
    if img.mode == "RGB" and isinstance(key, tuple) and max(key) > 255:  # a 16-bit key
        key = tuple(k >> 8 for k in key)
    values = np.asarray(img)
    for y in range(0, values.shape[0], KEY_ROWS):  # a bounded comparison's worth at a time
        rows = values[y : y + KEY_ROWS] == np.asarray(key)
        if (rows.all(axis=2) if rows.ndim == 3 else rows).any():
            return True
    return False


def open_failures(data: bytes) -> list[str]:
    """Why each of PILLOW_FORMATS whose plugin took `data` for its own then failed to open it
    ("PNG: broken PNG file (bad header checksum in b'iCCP')"), as Pillow says when asked."""
    asked = Image.WARN_POSSIBLE_FORMATS
    Image.WARN_POSSIBLE_FORMATS = True
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            with contextlib.suppress(Exception):
                Image.open(io.BytesIO(data), formats=PILLOW_FORMATS).close()
    finally:
        Image.WARN_POSSIBLE_FORMATS = asked
    failures = [str(w.message).split(" opening failed. ", 1) for w in said]
    return [f"{kind}: {reason}" for kind, reason in (f for f in failures if len(f) == 2)]


def kept_reason(img: Image.Image, data: bytes) -> str | None:
    """Why the file `data`, opened as `img`, must be kept as it is rather than shrunk: bytes
    after its image (a Motion Photo's video), which no decoder reads, a box beside its image
    that holds something else (a HEIF Motion Photo's), a TIFF's GeoTIFF georeferencing, or a
    TIFF whose end cannot be read (tiff_end), after which such bytes may lie; None when an LR
    holds what matters."""
    if img.format == "TIFF":
        # Georeferencing places the pixels on the earth: a scanned map or an aerial photo
        # restored without it is of no use to GIS software, and an LR cannot hold it.
        geo = ", ".join(name for tag, name in GEOTIFF_TAGS.items() if tag in img.tag_v2)
        if geo:
            return f"GeoTIFF georeferencing ({geo}), {CANNOT_HOLD}"
    if img.format in BOX_FORMATS:
        foreign = foreign_boxes(img.format, data)
        if foreign:
            box = foreign[0]
            return (
                f"a {box.kind!r} box of {box.end - box.start:,} bytes beside the "
                f"{BOX_FORMATS[img.format]}'s image (a Motion Photo's video, say), {CANNOT_HOLD}"
            )
    if img.format == "MPO":
        end = mpo_end(data, img.mpinfo[MP_ENTRIES])
    else:
        end = image_end(data, img.format)
    if end is None and img.format == "TIFF":  # Pillow read its image all the same
        return (
            "a TIFF structure that cannot be followed to its end (an offset past the end of "
            f"the file, or over {MAX_TIFF_IFDS:,} IFDs), so bytes after its data cannot be "
            f"ruled out, {CANNOT_HOLD}"
        )
    if end is None or not data[end:].strip(PADDING):
        return None
    return f"{len(data) - end:,} bytes after {IMAGE_ENDS[img.format]}, {CANNOT_HOLD}"


def image_end(data: bytes, fmt: str) -> int | None:
    """Where the image in the file `data` of Pillow format `fmt` ends: a JPEG's EOI marker, a
    PNG's IEND chunk, a GIF's trailer, the end of a BMP's data (bmp_end), a WebP's RIFF chunk,
    the last of what a TIFF's structure references (tiff_end), the last box of a HEIF, an AVIF
    or a JPEG XL container; None for other formats (a bare JPEG XL codestream's end is not
    read), or when `data` ends first."""
    if fmt == "JPEG":
        return jpeg_end(data)
    if fmt == "PNG":
        at = len(PNG_SIGNATURE)
        while at + 12 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, at)
            at += 12 + length  # length, type, data, CRC
            if kind == b"IEND":
                return at if at <= len(data) else None
        return None
    if fmt == "GIF":
        return next((end for kind, _, end in gif_blocks(data) if kind == GIF_TRAILER), None)
    if fmt == "BMP":
        return bmp_end(data)
    if fmt == "TIFF":
        return tiff_end(data)
    if fmt == "WEBP":  # RIFF's size counts what follows its first 8 bytes
        end = 8 + int.from_bytes(data[4:8], "little")
        return end if end <= len(data) else None
    if fmt in ("HEIF", "AVIF") or (fmt == "JXL" and data.startswith(JXL_CONTAINER)):
        return boxes_end(data)
    return None


def jpeg_end(data: bytes) -> int | None:
    """Where a JPEG's EOI marker ends: its segments followed by their lengths, the
    entropy-coded data after each SOS (a progressive JPEG has several) up to the next marker;
    bytes that are no marker skipped, as libjpeg does. None when `data` ends first."""
    at = 2  # after SOI
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before a marker
            at += 1
        elif marker == 0xD9:  # EOI
            return at + 2
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RST0-7: no length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
            if marker == 0xDA:  # SOS: entropy-coded data to the next marker
                at = entropy_coded_end(data, at)


def entropy_coded_end(data: bytes, at: int) -> int:
    """Where the entropy-coded data from `at` ends: at the first 0xFF followed by neither
    0x00 (a stuffed 0xFF), RST0-7 nor another 0xFF (a fill byte); len(data) if none does."""
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            return len(data)
        following = data[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            at += 2
        elif following == 0xFF:
            at += 1
        else:
            return at


def not_carried(img: Image.Image, metadata: Metadata, data: bytes) -> list[str]:
    """What the source holds beside its pixels that its `metadata` (source_metadata's) does not
    carry, by kind: ["PNG text 'Author'", "PNG gAMA, pHYs"]. `img` is the source as opened
    and loaded, from the file's `data`."""
    kinds = []
    within_limits = metadata.over_limits()[0]
    if img.format in ("JPEG", "MPO"):
        segments = getattr(img, "applist", [])
        if any(m == "APP13" and not d.startswith(PHOTOSHOP_HEADER) for m, d in segments):
            kinds.append("APP13 segment that is no Photoshop 3.0 block")
        uncarried = jpeg_segments_not_carried(segments)
        if uncarried:
            kinds.append(f"JPEG {', '.join(uncarried)}")
        comments = sum(marker == "COM" for marker, _ in segments)
        if comments > 1 and within_limits.comment:  # source_metadata joins them
            kinds.append(f"JPEG COM segments apart ({comments} joined by newlines)")
    elif img.format == "PNG":
        kinds += png_not_carried(img, metadata, data)
    elif img.format == "TIFF":
        kinds += tiff_not_carried(img, metadata, data)
    elif img.format in ("HEIF", "AVIF"):
        # pillow-heif's HEIF image holds libheif's info; Pillow's AVIF plugin reads none of it
        info = img.info if img.format == "HEIF" else heif_items(data).info
        kinds += heif_colour_not_carried(img.format, info, metadata)
        kinds += [f"{img.format} {kind}" for kind in heif_images_not_carried(info)]
    elif img.format == "JXL":
        boxes = [b for b in jxl_metadata_boxes(data) if not (b == "XMP" and metadata.xmp)]
        if boxes:
            kinds.append(f"JPEG XL {', '.join(boxes)}")
    elif img.format == "GIF":
        kinds += gif_not_carried(data, bool(within_limits.comment))
    elif img.format == "BMP":
        kinds += bmp_not_carried(metadata, data)
    elif img.format == "WEBP":
        chunks = [
            repr(kind) for kind in dict.fromkeys(webp_chunks(data)) if kind not in WEBP_CHUNKS
        ]
        if chunks:
            kinds.append(f"WebP chunk{'s' * (len(chunks) > 1)} {some(chunks)}")
    return kinds


def heif_colour_not_carried(fmt: str, info: dict, metadata: Metadata) -> list[str]:
    """A HEIF's or AVIF's colour description (nclx, in the primary image's `info`) when it is
    not sRGB's and no ICC profile says it instead: the LR's pixels are then read as sRGB (a
    Display P3 photo's colours duller, an HDR one's wrong)."""
    nclx = info.get("nclx_profile") or {}
    primaries = nclx.get("color_primaries", 2)
    transfer = nclx.get("transfer_characteristics", 2)
    if metadata.icc or (primaries in SRGB_PRIMARIES and transfer in SRGB_TRANSFERS):
        return []
    said = NCLX_PRIMARIES.get(primaries, f"primaries {primaries}")
    said += ", " + NCLX_TRANSFERS.get(transfer, f"transfer {transfer}")
    return [f"{fmt} colour description (nclx: {said}; the LR's colours read as sRGB)"]


def tiff_not_carried(img: Image.Image, metadata: Metadata, data: bytes) -> list[str]:
    """not_carried's kinds for a TIFF: its blocks not carried (IPTC; the Exif and GPS IFDs
    where its EXIF does not hold them), said first by what they hold, so that no list of
    names hides them; what its EXIF leaves out of the IFDs it copies (tiff_exif: a MakerNote);
    then the tags of its first IFD carried neither in its EXIF nor otherwise (the layout of its
    pixels needs none; its resolution, ICC profile and XMP where carried), and those its EXIF
    leaves out (a broken IFD's second entry of a tag)."""
    made = tiff_exif(data, TIFF_NOT_EXIF)
    held = made if made and metadata.exif else None  # the EXIF source_metadata carries
    carried = set(TIFF_LAYOUT_TAGS) | (held.tags if held else set())
    carried.update(TIFF_RESOLUTION if metadata.density else ())
    carried.update((TIFF_ICC,) if metadata.icc else ())
    carried.update((TIFF_XMP,) if metadata.xmp else ())
    kinds = []
    blocks = [name for tag, name in TIFF_BLOCKS.items() if tag in img.tag_v2 and tag not in carried]
    if blocks:
        kinds.append(f"TIFF {', '.join(blocks)}")
    for pointer, ifd in TIFF_EXIF_IFDS.items():
        tag_names = ExifTags.GPSTAGS if pointer == 34853 else ExifTags.TAGS
        left = held.left_out.get(pointer, ()) if held else ()
        if left:
            kinds.append(f"TIFF {ifd} {some(tag_names.get(tag, str(tag)) for tag in left)}")
    # Named: what neither its EXIF nor anything else carries, and what its EXIF leaves out of
    # its first IFD (a second entry of a tag it carries); its blocks were named above.
    left = set(made.left_out.get(0, ()) if made else ()) - set(TIFF_BLOCKS)
    carried.update(TIFF_BLOCKS)
    names = [tiff_tag_name(tag) for tag in sorted(set(img.tag_v2) - carried | left)]
    if names:
        kinds.append(f"TIFF tags {some(names)}")
    return kinds


def tiff_sub_images(img: Image.Image) -> int:
    """How many images a TIFF holds in SubIFDs (tag 330) beside those of its IFD chain, which
    Pillow counts as frames: a DNG's full-size raw, a pyramid's reduced levels; 0 for any
    other format."""
    if img.format != "TIFF":
        return 0
    return sum(1 for offset in img.tag_v2.get(TIFF_SUBIFDS, ()) if offset)


def tiff_tag_name(tag: int) -> str:
    """A TIFF tag's name: GeoTIFF's, else Pillow's (TiffTags), else its number."""
    name = GEOTIFF_TAGS.get(tag) or TiffTags.lookup(tag).name
    return str(tag) if name == "unknown" else name


def png_not_carried(img: Image.Image, metadata: Metadata, data: bytes) -> list[str]:
    """not_carried's kinds for a PNG: its text chunks other than those carried (and those
    Pillow cannot read), all but the last chunk of a carried keyword (Pillow keeps the last),
    the comment's language tag, and every ancillary chunk that is neither text nor carried
    (tIME, sBIT...; pHYs unless in metres, the density carried; sRGB beside an ICC profile;
    tRNS unless the pixels' note says the alpha went)."""
    kinds = []
    m = metadata
    text = getattr(img, "text", {})
    carried = {XMP_KEY: m.xmp, PHOTOSHOP_KEY: m.photoshop, COMMENT_KEY: m.comment}
    carried[EXIF_RAW_KEY] = m.exif and not img.info.get("exif") and raw_exif(text.get(EXIF_RAW_KEY))
    carried[IPTC_RAW_KEY] = PHOTOSHOP_KEY not in text and raw_iptc(text.get(IPTC_RAW_KEY))
    chunks = list(png_chunks(data))
    keys = sorted(k for k in text if not carried.get(k))
    keys += sorted({k for _, k in chunks if k is not None and k not in text} - set(keys))
    if keys:
        kinds.append(f"PNG text {some(repr(k) for k in keys)}")
    repeated = Counter(key for _, key in chunks if key is not None and carried.get(key))
    for key, n in sorted(repeated.items()):
        if n > 1:
            kinds.append(f"PNG text {key!r} but the last of its {n} chunks")
    comment = text.get(COMMENT_KEY)
    if isinstance(comment, PngImagePlugin.iTXt) and (comment.lang or comment.tkey):
        kinds.append(f"PNG text {COMMENT_KEY!r} language tag")
    skipped = PNG_CARRIED_CHUNKS + ("tRNS",) * (img.mode == "P") + ("pHYs",) * bool(m.density)
    skipped += tuple(kind.decode() for kind, _ in colour_chunks(m.png_colour or b""))
    others = [kind for kind, key in chunks if key is None and kind not in skipped]
    if others:
        kinds.append(f"PNG {some(dict.fromkeys(others))}")
    return kinds


def some(names: Iterable[str], most: int = 50) -> str:
    """ "a, b, c and 2 more": the first `most` names (all of a real file's, a bound for a
    hostile one's), then how many others."""
    names = list(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def gif_blocks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each block of a GIF file after its header and global colour table, in order: how it
    starts (GIF_APPLICATION, GIF_COMMENT, another extension's introducer and label, GIF_IMAGE,
    GIF_TRAILER), where it starts and where it ends; up to the trailer, or the first block that
    does not fit in `data` or bytes that are no block."""
    flags = data[10] if len(data) > 10 else 0
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen, colour table
    while at < len(data):
        start, introducer = at, data[at]
        if introducer == GIF_TRAILER[0]:
            yield GIF_TRAILER, at, at + 1
            return
        if introducer == 0x21 and at + 1 < len(data):  # an extension: label, then sub-blocks
            kind = data[at : at + 2]
            at += 2
        elif introducer == GIF_IMAGE[0] and at + 10 < len(data):  # descriptor, colours, LZW
            kind, flags = GIF_IMAGE, data[at + 9]
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return
        while at < len(data) and data[at]:  # sub-blocks, to the empty one
            at += data[at] + 1
        at += 1
        if at > len(data):
            return
        yield kind, start, at


def gif_not_carried(data: bytes, comment: bool) -> list[str]:
    """not_carried's kinds for a GIF: its application extensions but those that animate it
    (an XMP; Pillow's info keeps the last of them), comments after its image (Pillow reads
    those before it, which are carried, joined by newlines, when the source's `comment` is)
    and plain text extensions (text to draw over the image, which Pillow does not draw)."""
    identifiers, kinds = [], []
    after_image, comments = False, 0
    for kind, start, _ in gif_blocks(data):
        comments += kind == GIF_COMMENT and not after_image and bool(data[start + 2])
        if kind == GIF_APPLICATION and data[start + 2] == 11:  # identifier, authentication
            identifiers.append(data[start + 3 : start + 14])
        elif kind == GIF_COMMENT and after_image and data[start + 2]:  # not an empty one
            kinds.append("GIF comment after the image")
        elif kind == GIF_PLAIN_TEXT:
            kinds.append("GIF plain text extension")
        after_image = after_image or kind == GIF_IMAGE
    if comments > 1 and comment:  # carried as one: Pillow joins them
        kinds.append(f"GIF comments apart ({comments} joined by newlines)")
    names = [
        "XMP" if identifier == b"XMP DataXMP" else repr(identifier.decode("latin-1"))
        for identifier in dict.fromkeys(identifiers)
        if identifier not in GIF_ANIMATION_EXTENSIONS
    ]
    if names:
        kinds.insert(0, f"GIF application extension{'s' * (len(names) > 1)} {', '.join(names)}")
    return list(dict.fromkeys(kinds))


def webp_chunks(data: bytes) -> Iterator[str]:
    """The FourCC of each chunk of a WebP file, in order; up to the end of its RIFF chunk (what
    follows is no part of the image), or the first chunk that does not fit in it."""
    end = min(8 + int.from_bytes(data[4:8], "little"), len(data))
    at = 12  # after "RIFF", its size and "WEBP"
    while at + 8 <= end:
        kind, size = struct.unpack_from("<4sI", data, at)
        if at + 8 + size > end:
            return
        yield kind.decode("latin-1")
        at += 8 + size + size % 2  # a chunk of odd size is padded to an even one


def bmp_icc_profile(data: bytes) -> bytes | None:
    """The ICC profile a BMP's BITMAPV5HEADER embeds (colour space BMP_EMBEDDED), which
    Pillow does not read (bmp_profile); None for none, or one that does not lie in `data`."""
    profile = bmp_profile(data)
    if bmp_colour_space(data) != BMP_EMBEDDED or profile is None or profile[1] > len(data):
        return None
    return data[profile[0] : profile[1]]


def bmp_not_carried(metadata: Metadata, data: bytes) -> list[str]:
    """not_carried's kinds for a BMP: the colour space its header states where no ICC profile
    carried says it: calibrated endpoints and gammas (all 0 say nothing), a linked profile
    (a file name), an embedded profile that does not lie in the file."""
    space = bmp_colour_space(data)
    if space == BMP_CALIBRATED and any(data[74:122]):  # 3 endpoints of 3 numbers, 3 gammas
        return ["BMP calibrated colour endpoints"]
    if space == BMP_LINKED:
        return ["BMP linked ICC profile"]
    if space == BMP_EMBEDDED and not metadata.icc:
        return ["BMP ICC profile"]
    return []


def png_chunks(data: bytes) -> Iterator[tuple[str, str | None]]:
    """The type of each chunk of a PNG file, in order, and a text chunk's keyword (None for
    other chunks); up to IEND (what follows it is no part of the image), or the first chunk
    that does not fit in `data`."""
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if at + 12 + length > len(data) or kind == b"IEND":
            return
        keyword = None
        if kind in PNG_TEXT_CHUNKS:  # a keyword is 1 to 79 bytes, then NUL
            keyword = data[at + 8 : at + 8 + min(length, 80)].split(b"\x00", 1)[0]
            keyword = keyword.decode("latin-1")
        yield kind.decode("latin-1"), keyword
        at += 12 + length


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def jpeg_segments_not_carried(segments: list[tuple[str, bytes]]) -> list[str]:
    """The kinds of a JPEG's APPn segments (Pillow's applist) that hold metadata archive does
    not carry, once each, by marker: ["APP11 (JUMBF)", "APP12", "extended XMP"]; and the EXIF
    segments but the first, the XMP segments but the last (Pillow reads one of each). APP13
    is not_carried's own."""
    markers, extended_xmp, exif, xmp = set(), False, [], []
    for marker, data in segments:
        if not marker.startswith("APP") or marker == "APP13":
            continue
        if marker == "APP1" and data.startswith(EXTENDED_XMP_SEGMENT):
            extended_xmp = True
        elif not data.startswith(JPEG_KEPT_SEGMENTS.get(marker, ())):
            jumbf = marker == "APP11" and data.startswith(b"JP")  # ISO 19566-5: C2PA lives here
            markers.add((int(marker[3:]), f"{marker} (JUMBF)" if jumbf else marker))
        if marker == "APP1" and data.startswith(EXIF_SEGMENT):
            exif.append(data)
        elif marker == "APP1" and data.startswith(XMP_SEGMENT):
            xmp.append(data)
    kinds = [name for _, name in sorted(markers)] + (["extended XMP"] if extended_xmp else [])
    # Only those that hold something the one read does not (an empty or same one: nothing).
    if any(d not in (exif[0], EXIF_SEGMENT) for d in exif[1:]):
        kinds.append("EXIF segments after the first")
    if any(d not in (xmp[-1], XMP_SEGMENT) for d in xmp[:-1]):
        kinds.append("XMP segments before the last")
    return kinds


def drop_unreadable_exif(img: Image.Image) -> str | None:
    """Take an EXIF that cannot be read (no TIFF structure, or its first IFD cut short) out of
    `img`'s info, so that nothing reads an orientation from it (the XMP's still counts), and
    say so: "EXIF unreadable (not a TIFF structure), dropped"; None when its EXIF is readable
    or it has none (a TIFF's EXIF is made of its own tags: tiff_exif)."""
    if img.format == "TIFF":
        return None
    exif = Metadata.from_info(img.info).exif
    if not exif or reset_exif_orientation(exif) is not None:
        return None
    del img.info["exif"]
    img._exif = None  # Pillow's JPEG plugin read it while opening: read again, from the XMP
    why = "its first IFD cut short" if exif[:4] in EXIF_HEADERS else "not a TIFF structure"
    return f"EXIF unreadable ({why}), dropped"


def turned_axes(metadata: Metadata) -> Metadata:
    """`metadata` of pixels turned a quarter: its density's and EXIF's x and y swapped."""
    density = metadata.density
    if density:
        x, y, unit = parse_density(density)
        density = density_text(y, x, unit)
    exif = metadata.exif and swap_exif_axes(metadata.exif)
    return dataclasses.replace(metadata, density=density, exif=exif)


def without_thumbnails(metadata: Metadata) -> tuple[Metadata, str | None]:
    """`metadata` without the EXIF's, Photoshop resources' and XMP's embedded thumbnails, and
    what went: "thumbnails dropped: EXIF 12804 bytes, XMP 5120 bytes" (None for nothing)."""
    exif = metadata.exif and drop_exif_thumbnail(metadata.exif)
    photoshop = metadata.photoshop and drop_photoshop_thumbnails(metadata.photoshop)
    xmp = metadata.xmp and drop_xmp_thumbnails(metadata.xmp)
    saved = [
        f"{name} {len(before) - len(after)} bytes"
        for name, before, after in (
            ("EXIF", metadata.exif, exif),
            ("Photoshop", metadata.photoshop, photoshop),
            ("XMP", metadata.xmp, xmp),
        )
        if before and after is not None and len(after) < len(before)
    ]
    note = f"thumbnails dropped: {', '.join(saved)}" if saved else None
    if exif and exif == metadata.exif and has_exif_thumbnail(exif):
        kept = "EXIF thumbnail kept: other EXIF data lies after it"
        note = f"{note}; {kept}" if note else kept
    if not saved:
        return metadata, note
    stripped = dataclasses.replace(metadata, exif=exif, photoshop=photoshop or None, xmp=xmp)
    return stripped, note


def orientation_tagged(img: Image.Image) -> bool:
    """Whether the image's EXIF (a TIFF's own tags; a PNG's EXIF_RAW_KEY text when it has no
    eXIf) has an orientation: Pillow's getexif() takes one from the XMP when it has none, and
    that is the XMP's."""
    if img.format == "TIFF":
        return EXIF_ORIENTATION in img.tag_v2
    exif = Image.Exif()
    exif.load(img.info.get("exif") or raw_exif(img.info.get(EXIF_RAW_KEY)) or b"")
    return EXIF_ORIENTATION in exif


def source_metadata(img: Image.Image, data: bytes) -> Metadata:
    """The EXIF, ICC profile and XMP of a source, orientation set to 1 (the pixels archived
    are turned already; an EXIF that is no TIFF structure is left out); a JPEG's Photoshop
    image resources (its APP13 segments joined) and comment, a GIF's comment, a PNG's
    Photoshop and Comment text; a BMP's ICC profile, read from the file's `data`; the pixel
    density it states (source_density)."""
    info = dict(img.info)
    if img.format == "TIFF":
        # A TIFF's EXIF is made of its own tags (tiff_exif); one that holds nothing but an
        # orientation, which the pixels have applied, is none. Its XMP comes from its tag,
        # unwrapped as Pillow does for info["xmp"], where load() strips tiff:Orientation.
        made = tiff_exif(data, TIFF_NOT_EXIF)
        info["exif"] = made.exif if made and made.tags - {EXIF_ORIENTATION} else None
        xmp = img.tag_v2.get(TIFF_XMP)
        info["xmp"] = xmp[0] if isinstance(xmp, tuple) and len(xmp) == 1 else xmp
    metadata = Metadata.from_info(info)
    exif = metadata.exif and reset_exif_orientation(metadata.exif)
    xmp = metadata.xmp and XMP_ORIENTATION.sub(rb"\g<1>1", metadata.xmp)
    metadata = dataclasses.replace(metadata, exif=exif, xmp=xmp, density=source_density(img))
    if img.format in ("JPEG", "MPO"):
        segments = getattr(img, "applist", [])
        photoshop = b"".join(
            data[len(PHOTOSHOP_HEADER) :]
            for marker, data in segments
            if marker == "APP13" and data.startswith(PHOTOSHOP_HEADER)
        )
        comment = b"\n".join(data for marker, data in segments if marker == "COM")
        metadata = dataclasses.replace(
            metadata, photoshop=photoshop or None, comment=comment or None
        )
    elif img.format == "GIF":
        metadata = dataclasses.replace(metadata, comment=img.info.get("comment") or None)
    elif img.format == "BMP":
        metadata = dataclasses.replace(metadata, icc=bmp_icc_profile(data))
    return metadata


def source_density(img: Image.Image) -> bytes | None:
    """The pixel density a source states, as Metadata's density: a JPEG's JFIF header (its
    EXIF's travels in the EXIF), a PNG's or BMP's pixels per metre, a TIFF's resolution in
    inches or centimetres; None where it states none, or an aspect ratio only."""
    info = img.info
    if img.format in ("JPEG", "MPO"):
        unit = JFIF_UNIT_NAMES.get(info.get("jfif_unit"))
        return density_text(*info["jfif_density"], unit) if unit else None
    if img.format == "PNG" and "dpi" in info:  # Pillow's, of pixels per metre * 0.0254
        return density_text(*(round(v / 0.0254) for v in info["dpi"]), "m")
    if img.format == "BMP" and "dpi" in info:  # Pillow's, of pixels per metre / 39.3701
        ppm = [round(v * 39.3701) for v in info["dpi"]]
        return density_text(*ppm, "m") if max(ppm) <= 2**31 - 1 else None  # signed numbers
    if img.format == "TIFF":
        tags = img.tag_v2
        unit = TIFF_UNITS.get(tags.get(296, 2))  # the standard's default unit is the inch
        try:
            return density_text(float(tags[282]), float(tags[283]), unit) if unit else None
        except (KeyError, TypeError, ValueError):  # missing, or not one number
            return None
    return None


def match_profile(img: Image.Image, metadata: Metadata) -> tuple[Image.Image, Metadata, str | None]:
    """Keep an RGB ICC profile with RGB pixels. A CMYK or gray profile cannot describe the RGB
    pixels archived: such an image is converted to sRGB through its profile instead. A profile
    that cannot be read or does not fit the pixels is dropped. Returns the image, the metadata
    to keep and a note on what was done."""
    if metadata.icc is None:
        return img, metadata, None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(metadata.icc))
        space = profile.profile.xcolor_space.strip()
    except (OSError, ImageCms.PyCMSError) as e:
        return img, replace_icc(metadata), f"ICC profile unreadable ({e}), dropped"
    modes = {"RGB": ("RGB", "RGBA", "RGBX", "P", "PA"), "CMYK": ("CMYK",), "GRAY": ("L",)}
    mode = img.mode
    if space == "GRAY" and mode in SIXTEEN_BIT_GRAY_MODES:  # the profile converts 8-bit gray
        img = Image.fromarray(gray_to_8_bit(img))
        mode = f"{mode} 16-bit grayscale"
    if img.mode not in modes.get(space, ()):
        return img, replace_icc(metadata), f"{space} ICC profile of {img.mode} pixels dropped"
    if space == "RGB":
        return img, metadata, None
    try:
        rgb = ImageCms.profileToProfile(img, profile, SRGB, outputMode="RGB")
    except ImageCms.PyCMSError as e:
        return img, replace_icc(metadata), f"{space} ICC profile unusable ({e}), dropped"
    description = ImageCms.getProfileDescription(profile).strip()
    metadata = dataclasses.replace(replace_icc(metadata), png_colour=None)  # sRGB pixels now
    return rgb, metadata, f"{mode} -> sRGB through ICC profile {description!r}"


def replace_icc(metadata: Metadata) -> Metadata:
    """`metadata` without its ICC profile."""
    return dataclasses.replace(metadata, icc=None)


def claimed_size(data: bytes) -> tuple[int, int] | None:
    """The size the header of `data` claims, read by the plugin Image.open picks but without the
    bomb check Image.open makes after it; None where the plugin checks while opening (a GIF
    frame reaching past its screen)."""
    Image.init()
    for fmt in PILLOW_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept and not accept(data[:16]):
            continue
        try:
            return factory(io.BytesIO(data), None).size
        except Image.DecompressionBombError:
            return None
        except Exception:  # not this format after all: Image.open tries the next one too
            continue
    return None


def bomb_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
        f"the limit of {max_pixels}"
    )


def raw_mode(img: Image.Image) -> str:
    """The decoder's raw mode ("RGB;16B" for a 16-bit PNG), or "" when not known."""
    if not img.tile:
        return ""
    args = img.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def to_rgb(img: Image.Image, sixteen_bit: bool, transparent: bool) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 RGB from any Pillow mode, and a note on what was converted: ", alpha
    dropped" where some pixel was `transparent` (has_transparency), an alpha channel or a
    colour key; an alpha channel opaque throughout loses nothing, and its note says so."""
    rgb, note = converted_to_rgb(img, sixteen_bit)
    if transparent:  # of an alpha channel, or of a colour key
        note = f"{note or f'{img.mode} -> RGB'}, alpha dropped"
    elif img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        note = f"{note}, its alpha opaque throughout"
    return rgb, note


def converted_to_rgb(img: Image.Image, sixteen_bit: bool) -> tuple[np.ndarray, str | None]:
    """to_rgb, but for what the note says of transparency."""
    mode = img.mode
    if mode == "I":  # 32-bit signed integers: a 16-bit range is scaled as 16-bit, no other
        values = np.asarray(img)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise ValueError(
                f"unsupported image: 32-bit integer pixels (mode I) with values from {low} "
                f"to {high}, outside 0-65535"
            )
    if mode in SIXTEEN_BIT_GRAY_MODES or mode == "I":
        gray = gray_to_8_bit(img)
        bits = 32 if mode == "I" and not sixteen_bit else 16
        return np.repeat(gray[:, :, None], 3, axis=2), f"{mode} {bits}-bit grayscale -> 8-bit RGB"
    if mode == "F":
        raise ValueError("unsupported image: 32-bit floating-point pixels (mode F)")
    if mode == "RGB":
        note = "16-bit RGB -> 8-bit RGB" if sixteen_bit else None
        return np.asarray(img, dtype=np.uint8), note
    note = f"{mode} -> RGB"
    if sixteen_bit:
        note = f"16-bit {note}"
    try:
        rgb = img.convert("RGB")
    except ValueError as e:
        raise ValueError(f"unsupported image: cannot convert mode {mode} to RGB ({e})") from None
    return np.asarray(rgb, dtype=np.uint8), note


def gray_to_8_bit(img: Image.Image) -> np.ndarray:
    """The 0..65535 values of a 16-bit gray image as 0..255: Pillow's convert("L") clips
    them at 255 instead."""
    gray = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
    return np.round(gray).astype(np.uint8)


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    prefix: str,
    uri_prefix: str,
    scale: int,
    max_pixels: int,
    drop_thumbnails: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data stage: {"path", "bytes", "s3_metadata", "s3_tags", "not_read", "size", "mtime",
    "etag", "outputs", "error"} (read_sources' rows) -> one row per file with its pixels,
    metadata and the bytes of its Metadata (METADATA_FIELDS, b"" for none; an S3 object's user
    metadata and tags, S3_FIELDS, among them); or its error, or status "kept" and its
    kept_reason, without pixels (decode_image's kept_reason); "outputs" (the kinds of output
    DST holds for the image) and "not_read" (what was not read beside its bytes) pass through
    to the write stage.

    `prefix` is stripped from each path to give rel_path; `uri_prefix` ("s3://" or "")
    turns a path into source_uri; its mtime as listed and the ETag of the version read are
    recorded, and the size and SHA-256 of the bytes read (a file not read, which has no image
    name, has its listed size and no SHA-256 until the write stage copies it). With
    `drop_thumbnails`, the metadata carried leaves out the source's embedded thumbnails
    (pipeline/thumbnails.py).
    """
    rows = []
    for source in to_rows(batch):
        start = time.perf_counter()
        path = source["path"]
        data = bytes(source["bytes"])
        row = {
            "source_uri": uri_prefix + path,
            "rel_path": path[len(prefix) :],
            "status": "ok",
            "kept_reason": None,
            "source_bytes": len(data),
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "source_mtime": source.get("mtime"),
            "source_etag": source.get("etag"),
            "outputs": source.get("outputs") or "",
            "not_read": source.get("not_read") or "",
            "pixels": NO_PIXELS,
            "transparent": False,
            "levels": 255.0,
            **Metadata().row(),
        }
        try:
            check_rel_path(row["rel_path"])
            if not is_image_name(row["rel_path"].rsplit("/", 1)[-1]):
                row.update(source_bytes=source["size"], source_sha256=None)
                raise ValueError("not an image file: only images are archived")
            if source.get("error"):  # not read: gone since it was listed, or I/O failed
                row.update(source_bytes=source["size"], source_sha256=None)
                raise OSError(source["error"])
            decoded = decode_image(data, max_pixels, drop_thumbnails)
            height, width = decoded.pixels.shape[:2]
            row.update(width=width, height=height, conversion=decoded.conversion)
            s3 = {name: bytes(source.get(name) or b"") or None for name in S3_FIELDS}
            m = dataclasses.replace(decoded.metadata, **s3)
            row.update(metadata=m.names, **m.row())
            if decoded.kept_reason:  # the write stage copies the source as it is
                row.update(status=KEPT, kept_reason=decoded.kept_reason)
            elif width < scale or height < scale:
                raise ValueError(f"image is {width}x{height}, smaller than the scale {scale}")
            else:
                row.update(pixels=decoded.pixels, transparent=decoded.transparent)
                row["levels"] = decoded.levels
        except Exception as e:  # one image must not stop the job: it becomes its row
            row.update(status="error", error=error_text(e), error_kind=error_kind(e))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return to_batch(rows, DECODE_COLUMNS)


DECODE_COLUMNS = (
    "source_uri",
    "rel_path",
    "status",
    "error",
    "kept_reason",
    "width",
    "height",
    "source_bytes",
    "source_sha256",
    "conversion",
    "metadata",
    *METADATA_FIELDS,  # a row's Metadata, b"" for none
    "source_mtime",
    "source_etag",
    "outputs",
    "not_read",  # read_sources', for the write stage to name
    "pixels",
    "transparent",  # Decoded's, for a quality floor
    "levels",
    "seconds",
    "error_kind",
)
