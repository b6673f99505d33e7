"""IIIF Image API 3.0 parameters, info.json and the View that renders them, without Ray."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import photo
from PIL import Image

from pipeline.format import Region
from pipeline.serve.iiif import (
    info_json,
    lr_sizes,
    parse_quality_format,
    parse_region,
    parse_rotation,
    parse_size,
    parse_view,
    tiling,
)
from pipeline.serve.tiles import TileError, View

W, H = 300, 200  # the image of the region tests
SCALE = 16  # of the archive, in the view and info.json tests


def status(call, *args) -> int:
    with pytest.raises(TileError) as e:
        call(*args)
    return e.value.status


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("full", (0, 0, 300, 200)),
        ("square", (50, 0, 200, 200)),
        ("10,20,30,40", (10, 20, 30, 40)),
        ("250,150,100,100", (250, 150, 50, 50)),  # clipped to the image
        ("0,0,999999999,1", (0, 0, 300, 1)),
        ("pct:0,0,100,100", (0, 0, 300, 200)),
        ("pct:10,25,50,50", (30, 50, 150, 100)),
        ("pct:12.5,0.5,20.25,1", (38, 1, 60, 2)),
        ("pct:90,90,50,50", (270, 180, 30, 20)),
    ],
)
def test_regions(text, region):
    assert tuple(parse_region(text, W, H)) == region


def test_square_of_a_tall_image():
    assert tuple(parse_region("square", 40, 100)) == (0, 30, 40, 40)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Full",
        "squares",
        "10,20,30",
        "10,20,30,40,50",
        "-1,0,10,10",
        "+1,0,10,10",
        "1.5,0,10,10",
        "1e3,0,10,10",
        " 1,0,10,10",
        "٣,0,10,10",
        "0,0,1000000000,10",
        "0,0,0,10",
        "0,0,10,0",
        "300,0,10,10",  # starts right of the image
        "0,200,10,10",
        "pct:",
        "pct:10,10,10",
        "pct:-1,0,10,10",
        "pct:0,0,0.1,10",  # rounds to 0 pixels wide
        "pct:100,0,10,10",
        "pct:1.,0,10,10",
    ],
)
def test_bad_regions_are_400(text):
    assert status(parse_region, text, W, H) == 400


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("max", (120, 80)),
        ("^max", (120, 80)),
        ("60,", (60, 40)),
        (",20", (30, 20)),
        ("120,", (120, 80)),
        ("50,50", (50, 50)),  # w,h may change the shape
        ("!60,60", (60, 40)),
        ("!200,20", (30, 20)),
        ("!500,500", (120, 80)),  # no larger than the region without ^
        ("^!240,500", (240, 160)),
        ("pct:50", (60, 40)),
        ("pct:12.5", (15, 10)),
        ("pct:100", (120, 80)),
        ("^pct:150", (180, 120)),
        ("^240,", (240, 160)),
        ("^,100", (150, 100)),
        ("^200,90", (200, 90)),
    ],
)
def test_sizes_of_a_120x80_region(text, size):
    assert parse_size(text, 120, 80) == size


@pytest.mark.parametrize(
    "text",
    [
        "",
        "full",  # IIIF 2.0, gone in 3.0
        "MAX",
        ",",
        "60",
        "60,40,2",
        "121,",  # larger than the region without ^
        ",81",
        "121,80",
        "pct:101",
        "pct:",
        "pct:-5",
        "pct:0",
        "pct:0.1",  # rounds to 0 pixels
        "0,",
        ",0",
        "!60,",
        "!,60",
        "!0,60",
        "^",
        "^^max",
        "-60,",
        "6e1,",
        "60.5,",
    ],
)
def test_bad_sizes_are_400(text):
    assert status(parse_size, text, 120, 80) == 400


@pytest.mark.parametrize(
    ("text", "rotation"),
    [("0", (False, 0)), ("90", (False, 90)), ("180.0", (False, 180)), ("!0", (True, 0))]
    + [("!270", (True, 270)), ("360", (False, 0))],
)
def test_rotations(text, rotation):
    assert parse_rotation(text) == rotation


@pytest.mark.parametrize(("text", "code"), [("45", 501), ("!22.5", 501), ("90.5", 501)])
def test_other_angles_are_501(text, code):
    assert status(parse_rotation, text) == code


@pytest.mark.parametrize("text", ["", "!", "-90", "361", "450", "x", "!!90", "90deg"])
def test_bad_rotations_are_400(text):
    assert status(parse_rotation, text) == 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-90", "rotation '-90' is not a non-negative number"),
        ("!", "rotation '!': angle '' is not a non-negative number"),
    ],
)
def test_a_bad_rotation_is_named_once(text, message):
    with pytest.raises(TileError) as e:
        parse_rotation(text)
    assert e.value.message == message


@pytest.mark.parametrize(
    ("text", "image_format"),
    [("default.png", "png"), ("color.jpg", "jpeg"), ("default.webp", "webp")],
)
def test_qualities_and_formats(text, image_format):
    assert parse_quality_format(text) == image_format


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("gray.png", 501),
        ("bitonal.jpg", 501),
        ("default.tif", 501),
        ("default.gif", 501),
        ("default.jp2", 501),
        ("default.pdf", 501),
        ("default", 400),
        ("native.jpg", 400),  # IIIF 1.x
        ("default.jpeg", 400),
        ("default.bmp", 400),
        ("default.", 400),
        (".png", 400),
    ],
)
def test_unsupported_and_bad_quality_or_format(text, code):
    assert status(parse_quality_format, text) == code


def test_a_view_of_an_image_request():
    view = parse_view("pct:50,0,50,100", "!75,75", "!90", "color.jpg", 300, 200, 10_000, SCALE)
    assert view == View(Region(150, 0, 150, 200), (56, 75), True, 90, "jpeg")


@pytest.mark.parametrize(
    ("region", "size", "from_lr"),
    [
        ("full", "!200,200", True),  # 200 x 133 of a 375 x 250 LR
        ("full", ",100", True),
        ("full", "375,", True),  # the LR's own size
        ("full", "376,", False),
        ("full", "375,251", False),
        ("pct:0,0,50,50", "max", False),
        ("0,0,4096,4096", "256,", True),  # a 256-tile at scale factor 16
        ("0,0,2048,2048", "256,", False),  # at 8: restored
        ("4096,0,1904,4000", "119,250", True),  # the last 256-tile of factor 16
        ("0,0,17,17", "^2,2", True),  # ceil(17 / 16) = 2
        ("0,0,16,16", "^2,2", False),
    ],
)
def test_views_no_larger_than_the_lr_resolution_are_made_from_the_lr(region, size, from_lr):
    view = parse_view(region, size, "0", "default.jpg", 6000, 4000, 4096 * 4096, SCALE)
    assert view.from_lr is from_lr


@pytest.mark.parametrize(
    ("size", "quality_format", "limit"),
    [
        ("^16384,100", "default.webp", "WEBP limit of 16383"),
        ("^100,16384", "default.webp", "WEBP limit of 16383"),
        ("^65501,1", "default.jpg", "JPEG limit of 65500"),
        ("^65535,1", "default.jpg", "JPEG limit of 65500"),
        ("^1,65501", "color.jpg", "JPEG limit of 65500"),
    ],
)
def test_sizes_over_the_encoders_limit_are_400(size, quality_format, limit):
    with pytest.raises(TileError) as e:
        parse_view("full", size, "0", quality_format, 300, 200, 10**8, SCALE)
    assert e.value.status == 400 and limit in e.value.message


@pytest.mark.parametrize(
    ("size", "image_format"),
    [((16383, 1), "webp"), ((1, 65500), "jpeg"), ((70000, 1), "png")],
)
def test_the_largest_sizes_allowed_encode(size, image_format):
    w, h = size
    text = f"^{w},{h}"
    extension = {"jpeg": "jpg"}.get(image_format, image_format)
    view = parse_view("0,0,1,1", text, "0", f"default.{extension}", 300, 200, 10**8, SCALE)
    with Image.open(io.BytesIO(view.finish(photo(1, 1)))) as img:
        assert img.size == size


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (("full", "^1000,", "0", "default.png"), 413),  # 1000 x 667 pixels out
        (("full", "max", "45", "default.png"), 501),
        (("full", "max", "0", "gray.png"), 501),
        (("0,0,0,0", "max", "0", "default.png"), 400),
        (("full", "301,", "0", "default.png"), 400),
    ],
)
def test_bad_view_requests(request_, code):
    assert status(parse_view, *request_, 300, 200, 100_000, SCALE) == code


# ---- info.json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "limit", "scale", "tile", "factors"),
    [
        ((4000, 3000), 4096 * 4096, 16, 512, [1, 2, 4, 8, 16]),  # one tile covers it at 1/8
        ((6000, 4000), 4096 * 4096, 16, 512, [1, 2, 4, 8, 16]),
        ((6000, 4000), 4096 * 4096, 32, 512, [1, 2, 4, 8, 32]),  # 16: 8192-pixel regions
        ((20000, 500), 4096 * 4096, 16, 512, [1, 2, 4, 8, 16, 32, 64]),  # LR tiles to 1/64
        ((300, 200), 4096 * 4096, 16, 512, [1, 16]),
        ((5000, 100), 2048 * 2048, 16, 512, [1, 2, 4, 16]),  # 4096 regions over the limit
        ((5000, 100), 10_000, 16, 64, [1, 16, 32, 64, 128]),  # tiles shrink to fit the limit
        ((600, 400), 1, 16, 1, [1, 16, 32, 64, 128, 256, 512, 1024]),
    ],
)
def test_tiling(size, limit, scale, tile, factors):
    assert tiling(*size, limit, scale) == (tile, factors)


def test_lr_sizes_halve_down_to_a_tile():
    assert lr_sizes(6000, 4000, 16, 512) == [(375, 250)]
    assert lr_sizes(30000, 20000, 16, 512) == [(1875, 1250), (938, 625), (469, 313)]


def test_info_json():
    info = info_json("http://h:1/iiif/a%2Fb.jpg", 1000, 600, 1024 * 1024, SCALE)
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert (info["id"], info["type"]) == ("http://h:1/iiif/a%2Fb.jpg", "ImageService3")
    assert info["protocol"] == "http://iiif.io/api/image" and info["profile"] == "level1"
    assert (info["width"], info["height"]) == (1000, 600)
    assert info["maxArea"] == 1024 * 1024  # parse_view's 413 above it
    assert info["tiles"] == [{"width": 512, "scaleFactors": [1, 2, 16]}]
    # the LR's size, then the whole image at each restored scale factor, rounded up as
    # OpenSeadragon computes its levels
    assert info["sizes"] == [
        {"width": 63, "height": 38},
        {"width": 500, "height": 300},
        {"width": 1000, "height": 600},
    ]
    assert set(info["extraFeatures"]) >= {"regionByPct", "sizeByPct", "sizeByConfinedWh"}
    assert info["extraFormats"] == ["png", "webp"] and info["extraQualities"] == ["color"]


def test_info_json_offers_the_lr_sizes_when_the_whole_image_is_over_the_limit():
    info = info_json("http://h/iiif/x", 6000, 4000, 4096 * 4096, SCALE)
    assert info["sizes"] == [{"width": 375, "height": 250}]
    assert info["tiles"] == [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}]


# ---- View.finish -----------------------------------------------------------------------------


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def test_view_resizes_mirrors_then_rotates_clockwise():
    pixels = photo(40, 30, 7)  # (30, 40, 3)
    region = Region(0, 0, 40, 30)
    assert np.array_equal(decode(View(region).finish(pixels)), pixels)
    assert np.array_equal(decode(View(region, rotation=90).finish(pixels)), np.rot90(pixels, -1))
    mirrored = decode(View(region, mirror=True, rotation=270).finish(pixels))
    assert np.array_equal(mirrored, np.rot90(pixels[:, ::-1], 1))
    small = decode(View(region, size=(20, 15)).finish(pixels))
    expected = np.asarray(Image.fromarray(pixels).resize((20, 15), Image.Resampling.LANCZOS))
    assert np.array_equal(small, expected)
    with Image.open(io.BytesIO(View(region, image_format="jpeg").finish(pixels))) as img:
        assert img.format == "JPEG" and img.size == (40, 30)
