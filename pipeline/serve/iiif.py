"""IIIF Image API 3.0 (https://iiif.io/api/image/3.0/) over the tile service: parsing the
request URL's parameters and writing an image's info.json. Plain Python, no Ray.

    GET /iiif/<id>/info.json
    GET /iiif/<id>/<region>/<size>/<rotation>/<quality>.<format>

`id` is an image's rel_path, URL-encoded ("a/b.jpg" -> "a%2Fb.jpg"). Compliance level 1, plus
the features in EXTRA_FEATURES:

    region    full | square | x,y,w,h | pct:x,y,w,h   (clipped to the image; 400 if outside)
    size      max | w, | ,h | w,h | !w,h | pct:n, each with a leading ^ to allow upscaling
    rotation  n or !n (mirrored first), n in 0, 90, 180, 270; other angles 501
    quality   default | color; gray, bitonal 501
    format    jpg | png | webp; tif, gif, pdf, jp2 501

A request whose output is no larger than the LR's resolution of its region (output width <=
ceil(region width / scale), the same for height) is made from the LR PNG alone: the DFRM's
output is a real image, 16x or 32x smaller, so thumbnails and zoomed-out tiles cost no model
call whatever their region. Every other request restores its HR region: what it costs follows
its region, not its size, so such regions (and upscaled sizes) over the server's
max_region_pixels are 413. info.json offers the LR's sizes, and tiles at the scale factors whose
tiles are either made from the LR or have a region that fits.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.format import MAX_SIDES, Region
from pipeline.serve.tiles import TileError, View

TILE_WIDTH = 512  # HR-region side of a full-resolution tile, halved until it fits the limit
FORMATS = {"jpg": "jpeg", "png": "png", "webp": "webp"}  # IIIF format -> encode_output's
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
UNSUPPORTED_FORMATS = ("tif", "gif", "pdf", "jp2")
QUALITIES = ("default", "color")  # the same image: restored images are in colour
UNSUPPORTED_QUALITIES = ("gray", "bitonal")
EXTRA_FEATURES = [
    "mirroring",
    "regionByPct",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByPct",
    "sizeUpscaling",
]  # beyond level 1, which has regionByPx, regionSquare, sizeByW/H/Wh, cors, baseUriRedirect
CONTEXT = "http://iiif.io/api/image/3/context.json"
INT = re.compile(r"[0-9]{1,9}")  # up to 999,999,999 px
DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def number(text: str, what: str, decimal: bool = False) -> float:
    """A non-negative integer (or decimal) written as IIIF does: digits and at most one dot."""
    if not (DECIMAL if decimal else INT).fullmatch(text):
        kind = "a non-negative number" if decimal else "a non-negative integer"
        raise TileError(400, f"{what} {text!r} is not {kind}")
    return float(text) if decimal else int(text)


def parse_region(text: str, width: int, height: int) -> Region:
    """The IIIF region of a width x height image as HR pixels, clipped to the image."""
    if text == "full":
        return Region(0, 0, width, height)
    if text == "square":
        side = min(width, height)
        return Region((width - side) // 2, (height - side) // 2, side, side)
    pct = text.startswith("pct:")
    parts = text[4:].split(",") if pct else text.split(",")
    if len(parts) != 4:
        raise TileError(
            400, f"region {text!r} must be full, square, x,y,w,h or pct:x,y,w,h (IIIF 3.0)"
        )
    x, y, w, h = (number(p, f"region {text!r}: value", decimal=pct) for p in parts)
    if pct:  # percentages of the image's size, rounded to whole pixels
        x1, y1 = round((x + w) * width / 100), round((y + h) * height / 100)
        x, y = round(x * width / 100), round(y * height / 100)
        w, h = x1 - x, y1 - y
    if w <= 0 or h <= 0 or x >= width or y >= height:
        raise TileError(400, f"region {text!r} is empty or outside the {width}x{height} image")
    x, y = int(x), int(y)
    return Region(x, y, int(min(w, width - x)), int(min(h, height - y)))


def parse_size(text: str, w: int, h: int) -> tuple[int, int]:
    """The output (width, height) of a w x h region; larger than it only with a leading ^."""
    upscale = text.startswith("^")
    spec = text[1:] if upscale else text
    confined = spec.startswith("!")
    if spec == "max":
        return w, h
    if spec.startswith("pct:"):
        n = number(spec[4:], f"size {text!r}: percentage", decimal=True)
        size = (round(w * n / 100), round(h * n / 100))
    else:
        parts = spec[1:].split(",") if confined else spec.split(",")
        if len(parts) != 2 or parts == ["", ""] or (confined and "" in parts):
            raise TileError(
                400, f"size {text!r} must be max, w,, ,h, w,h, !w,h or pct:n (IIIF 3.0)"
            )
        sw, sh = (None if p == "" else number(p, f"size {text!r}: value") for p in parts)
        if confined:  # the largest size of the region's shape that fits in sw x sh
            factor = min(sw / w, sh / h) if upscale else min(sw / w, sh / h, 1.0)
            size = (round(w * factor), round(h * factor))
        elif sw is None:
            size = (round(w * sh / h), sh)
        elif sh is None:
            size = (sw, round(h * sw / w))
        else:
            size = (sw, sh)
    out_w, out_h = int(size[0]), int(size[1])
    if out_w < 1 or out_h < 1:
        raise TileError(400, f"size {text!r} of a {w}x{h} region is empty")
    if not upscale and (out_w > w or out_h > h):
        raise TileError(
            400, f"size {text!r} is larger than the {w}x{h} region: prefix it with ^ to upscale"
        )
    return out_w, out_h


def parse_rotation(text: str) -> tuple[bool, int]:
    """(mirror, clockwise degrees in 0, 90, 180, 270) of the IIIF rotation `text`."""
    mirror = text.startswith("!")
    what = f"rotation {text!r}: angle" if mirror else "rotation"
    angle = number(text[1:] if mirror else text, what, decimal=True)
    if angle > 360:
        raise TileError(400, f"rotation {text!r} must be between 0 and 360")
    if angle % 90:
        raise TileError(501, f"rotation {text!r} is not supported: use 0, 90, 180 or 270")
    return mirror, int(angle) % 360


def parse_quality_format(text: str) -> str:
    """The encode_output format of the IIIF `<quality>.<format>` text."""
    quality, dot, extension = text.rpartition(".")
    if not dot or quality not in (*QUALITIES, *UNSUPPORTED_QUALITIES):
        raise TileError(400, f"{text!r} must be <quality>.<format>, quality default or color")
    if quality in UNSUPPORTED_QUALITIES:
        raise TileError(501, f"quality {quality!r} is not supported: use default or color")
    if extension in UNSUPPORTED_FORMATS:
        raise TileError(501, f"format {extension!r} is not supported: use jpg, png or webp")
    if extension not in FORMATS:
        raise TileError(400, f"format {extension!r} is not an image format: use jpg, png or webp")
    return FORMATS[extension]


def parse_view(
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    width: int,
    height: int,
    max_pixels: int,
    scale: int,
) -> View:
    """The View of a width x height image, archived at `scale`, that an IIIF image request asks
    for, made from the LR where its output is no larger than the LR's resolution of its region:
    TileError 400 for a malformed or impossible parameter or an output side over the format's
    limit, 501 for an unsupported parameter, 413 for an output over `max_pixels`."""
    image_format = parse_quality_format(quality_format)
    mirror, degrees = parse_rotation(rotation)
    hr = parse_region(region, width, height)
    out_w, out_h = parse_size(size, hr.w, hr.h)
    if max(out_w, out_h) > MAX_SIDES[image_format]:
        raise TileError(
            400,
            f"size {out_w}x{out_h} is over the {image_format.upper()} limit of "
            f"{MAX_SIDES[image_format]} pixels a side: ask for a smaller size or another format",
        )
    if out_w * out_h > max_pixels:
        raise TileError(
            413,
            f"size {out_w}x{out_h} is over this server's limit of {max_pixels} pixels: "
            "ask for a smaller size",
        )
    from_lr = out_w <= math.ceil(hr.w / scale) and out_h <= math.ceil(hr.h / scale)
    return View(hr, (out_w, out_h), mirror, degrees, image_format, from_lr)


def tiling(width: int, height: int, max_pixels: int, scale: int) -> tuple[int, list[int]]:
    """(tile width, scale factors) of a width x height image archived at `scale`: square tiles
    whose HR region is at most `max_pixels`. Below `scale`, the factors (1, 2, 4, ...) whose
    tiles are restored: while one tile does not cover the image and its region fits
    `max_pixels`. From `scale` on, tiles are made from the LR, whatever their region: `scale`,
    then doubling until one tile covers the image."""
    tile = TILE_WIDTH
    while tile > 1 and tile * tile > max_pixels:
        tile //= 2
    factors = [1]
    f = 2
    while f < scale and tile * f // 2 < max(width, height) and (tile * f) ** 2 <= max_pixels:
        factors.append(f)
        f *= 2
    factors.append(scale)
    while tile * factors[-1] < max(width, height):
        factors.append(2 * factors[-1])
    return tile, factors


def lr_sizes(width: int, height: int, scale: int, tile: int) -> list[tuple[int, int]]:
    """The LR's size (ceil(width / scale) x ceil(height / scale)) and its halvings while the
    last is larger than a tile: the whole image at the sizes made from the LR, largest first."""
    sizes = [(math.ceil(width / scale), math.ceil(height / scale))]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return sizes


def info_json(
    service_id: str, width: int, height: int, max_pixels: int, scale: int
) -> dict[str, Any]:
    """The info.json of a width x height image archived at `scale`, served at the base URI
    `service_id`, with outputs up to `max_pixels` (maxArea). `sizes`, smallest first: the ones
    made from the LR (lr_sizes), then, when the whole image is within `max_pixels`, the whole
    image at each restored scale factor."""
    tile, factors = tiling(width, height, max_pixels, scale)
    sizes = lr_sizes(width, height, scale, tile)[::-1]
    if width * height <= max_pixels:
        restored = (f for f in reversed(factors) if f < scale)
        sizes += [(math.ceil(width / f), math.ceil(height / f)) for f in restored]
    info: dict[str, Any] = {
        "@context": CONTEXT,
        "id": service_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": width,
        "height": height,
        "maxArea": max_pixels,  # a larger output (w * h) is 413
        "tiles": [{"width": tile, "scaleFactors": factors}],
        "sizes": [{"width": w, "height": h} for w, h in sizes],
    }
    info["extraFormats"] = ["png", "webp"]
    info["extraQualities"] = ["color"]
    info["extraFeatures"] = EXTRA_FEATURES
    return info
