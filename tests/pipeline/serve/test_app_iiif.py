"""The Serve application from its builder (`serve.run(build_app(args))`, as `serve run` and
`serve deploy` make it) on the session's Ray: IIIF over HTTP against /tile, the OpenAPI docs,
and the viewer opened in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import debian_tool, encode, photo, run_cli, write_tree
from PIL import Image

from pipeline.format import decode_lr_png
from pipeline.serve.app import (
    APP_NAME,
    IIIF_JSON_LD,
    TileAppArgs,
    build_app,
    is_loopback,
    listens_on_loopback,
    wait_healthy,
)
from tadm import TADM

LIMIT = 512 * 512  # max_region_pixels: big.png (768 x 512) is over it, its 512-tiles are not
BROWSER_TIMEOUT_S = 180
WINDOW = (1000, 800)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """(status, headers, body) of `method` `path`, sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def archive(ray_cluster, tiny_model, tmp_path_factory) -> Path:
    """big.png and sub/b.jpg, and notes.txt kept as it is (--keep-failed): no LR."""
    root = tmp_path_factory.mktemp("iiif")
    src = write_tree(
        root / "src",
        {
            "big.png": encode(Image.fromarray(photo(768, 512, 40)), "PNG"),
            "sub/b.jpg": encode(Image.fromarray(photo(48, 40, 41)), "JPEG", quality=95),
            "notes.txt": b"not an image",
        },
    )
    args = ("--model", tiny_model, "--keep-failed")
    assert run_cli("archive", src, root / "archive", *args) == 0
    assert (root / "archive" / "kept" / "notes.txt").is_file()
    return root / "archive"


@pytest.fixture(scope="module")
def port(ray_cluster, archive, tiny_model):
    """The application built by build_app, on Serve's proxy at 127.0.0.1:<port>."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = TileAppArgs(archive=str(archive), model=tiny_model, max_region_pixels=LIMIT)
    args = args.model_copy(update={"min_replicas": 1, "max_replicas": 1})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    wait_healthy(f"http://127.0.0.1:{port}", TADM.from_pretrained(tiny_model).model_id)
    yield port
    serve.shutdown()


def served(port: int) -> dict[str, int]:
    """The replica's answers by route (max_replicas=1: every request went to it)."""
    return json.loads(get(port, "/healthz")[2])["served"]


def tile(port: int, rel_path: str, x: int, y: int, w: int, h: int) -> np.ndarray:
    status, _, body = get(port, f"/tile/{rel_path}?x={x}&y={y}&w={w}&h={h}")
    assert status == 200, body
    return pixels(body)


def iiif(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = get(port, f"/iiif/{path}")
    assert headers["access-control-allow-origin"] == "*"
    return status, headers, body


def test_builder_validates_its_arguments_before_deploying(archive, tmp_path):
    with pytest.raises(ValueError, match="--max-replicas must be"):
        build_app(TileAppArgs(archive=str(archive), max_replicas=0))
    with pytest.raises(ValueError, match="has no lr/ folder"):
        build_app(TileAppArgs(archive=str(tmp_path)))


def test_info_json(port):
    status, headers, body = iiif(port, "big.png/info.json")
    assert status == 200 and headers["content-type"] == "application/json"
    info = json.loads(body)
    assert info["id"] == f"http://127.0.0.1:{port}/iiif/big.png"
    assert (info["width"], info["height"], info["profile"]) == (768, 512, "level1")
    assert info["tiles"] == [{"width": 512, "scaleFactors": [1, 16]}]  # 16: from the LR
    assert info["sizes"] == [{"width": 48, "height": 32}]  # the LR's; the image is over LIMIT

    _, headers, body = get(port, "/iiif/sub%2Fb.jpg/info.json", {"Accept": "application/ld+json"})
    assert headers["content-type"].startswith("application/ld+json;profile=")
    info = json.loads(body)
    assert info["id"] == f"http://127.0.0.1:{port}/iiif/sub%2Fb.jpg"
    assert info["sizes"] == [{"width": 3, "height": 3}, {"width": 48, "height": 40}]

    status, headers, _ = iiif(port, "sub%2Fb.jpg")
    assert status == 303 and headers["location"] == f"{info['id']}/info.json"


def test_iiif_tiles_equal_the_tile_endpoint(port):
    region = tile(port, "big.png", 512, 0, 256, 512)
    status, headers, body = iiif(port, "big.png/512,0,256,512/max/0/default.png")
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.array_equal(pixels(body), region)
    # the same region as OpenSeadragon asks for it (w,h), and at half size
    assert np.array_equal(
        pixels(iiif(port, "big.png/512,0,256,512/256,512/0/color.png")[2]), region
    )
    half = pixels(iiif(port, "big.png/512,0,256,512/128,/0/default.png")[2])
    assert np.array_equal(half, resized(region, (128, 256)))
    turned = pixels(iiif(port, "sub%2Fb.jpg/pct:0,0,100,100/max/!90/default.png")[2])
    assert np.array_equal(turned, np.rot90(tile(port, "sub/b.jpg", 0, 0, 48, 40)[:, ::-1], -1))
    status, headers, body = iiif(port, "sub%2Fb.jpg/full/!24,24/0/default.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert pixels(body).shape == (20, 24, 3) and headers["x-tadm-source"] == "model"


def test_thumbnails_and_zoomed_out_tiles_come_from_the_lr(port, archive):
    """big.png is over LIMIT: restoring it whole is 413, but its LR (48 x 32) gives sizes up
    to its own, whatever the region."""
    lr, _ = decode_lr_png((archive / "lr" / "big.png.png").read_bytes())
    image = Image.fromarray(lr)
    for path, size, box in [
        ("full/!40,40/0/default.png", (40, 27), (0, 0, 48, 32)),
        ("full/48,32/0/default.png", (48, 32), (0, 0, 48, 32)),  # info.json's sizes
        ("512,0,256,512/16,32/0/default.png", (16, 32), (32, 0, 48, 32)),
    ]:
        status, headers, body = iiif(port, f"big.png/{path}")
        assert status == 200 and headers["x-tadm-source"] == "lr", body
        expected = image.resize(size, Image.Resampling.LANCZOS, box=box)
        assert np.array_equal(pixels(body), np.asarray(expected))
    assert iiif(port, "big.png/full/49,/0/default.png")[0] == 413  # over the LR: restored


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("big.png/full/max/0/default.png", 413),  # 768 x 512 > LIMIT
        ("big.png/0,0,512,512/^1024,/0/default.png", 413),
        ("big.png/0,0,512,512/513,/0/default.png", 400),
        ("big.png/0,0,0,512/max/0/default.png", 400),
        ("big.png/800,0,10,10/max/0/default.png", 400),
        ("big.png/0,0,64,64/max/45/default.png", 501),
        ("big.png/0,0,64,64/max/0/gray.png", 501),
        ("big.png/0,0,64,64/max/0/default.tif", 501),
        ("big.png/0,0,64,64/max/0/default", 400),
        ("big.png/full/^16384,1/0/default.webp", 400),  # over WebP's 16383 pixels a side
        ("big.png/full/^65501,1/0/default.jpg", 400),  # over JPEG's 65500
        ("missing.png/info.json", 404),
        ("missing.png/full/max/0/default.png", 404),
        ("..%2Foutside.png/info.json", 400),
        ("sub/%2e%2e/%2e%2e/x.png/full/max/0/default.png", 400),
    ],
)
def test_iiif_errors_are_json(port, path, status):
    got, headers, body = iiif(port, path)
    assert got == status, body
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]


def test_openapi_description_and_no_page_that_loads_from_the_internet(port):
    for page in ("/docs", "/redoc"):
        assert get(port, page)[0] == 404
    status, _, body = get(port, "/openapi.json")
    paths = json.loads(body)["paths"]
    assert {"/healthz", "/tile/{rel_path}", "/iiif/{id}/info.json", "/view/{id}"} <= set(paths)
    tile_params = {p["name"]: p for p in paths["/tile/{rel_path}"]["get"]["parameters"]}
    schema = tile_params["x"]["schema"]
    assert (schema["type"], schema["minimum"], schema["description"]) == ("integer", 0, "HR pixels")


def test_index_page_links_every_image_with_an_lr(port):
    status, headers, body = get(port, "/view/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert 'href="/view/big.png"' in page and 'href="/view/sub%2Fb.jpg"' in page
    assert "2 images" in page and "notes.txt" not in page  # kept as it is: no LR to view
    assert get(port, "/view/?page=2")[0] == 404
    assert get(port, "/view/missing.png")[0] == 404
    status, _, body = get(port, "/view/?prefix=sub%2F")
    assert status == 200 and "1 image under sub/" in body.decode()
    assert 'href="/view/sub%2Fb.jpg"' in body.decode() and "big.png" not in body.decode()
    status, _, body = get(port, "/view/?prefix=sub%2F&page=2")
    assert status == 404 and "1 images under 'sub/'" in json.loads(body)["error"]


def test_index_page_of_an_unreadable_manifest_is_503(port, archive):
    junk = archive / "manifest" / "part-zzz.parquet"
    junk.write_bytes(b"not parquet")
    try:
        status, headers, body = get(port, "/view/")
    finally:
        junk.unlink()
    assert status == 503 and headers["content-type"] == "application/json"
    message = json.loads(body)["error"]
    assert "ARCHIVE/manifest/part-zzz.parquet cannot be read" in message
    assert str(archive) not in message


def test_viewer_page_links_with_paths(port):
    status, _, body = get(port, "/view/big.png")
    page = body.decode()
    assert status == 200 and "http://" not in page
    assert '<script src="/static/openseadragon/openseadragon.min.js">' in page


# ---- HEAD, CORS preflight, Host ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/tile/sub/b.jpg?x=0&y=0&w=8&h=8",
        "/iiif/big.png/info.json",
        "/iiif/big.png/full/!40,40/0/default.jpg",
        "/view/",
        "/view/big.png",
        "/static/openseadragon/openseadragon.min.js",
        "/openapi.json",
        "/nope",
    ],
)
def test_head_answers_as_get_without_the_body(port, path):
    status, headers, body = get(port, path, method="HEAD")
    got, got_headers, got_body = get(port, path)
    assert (status, body) == (got, b"")
    assert headers["content-type"] == got_headers["content-type"]
    if path != "/healthz":  # its answer counts the requests
        assert int(headers["content-length"]) == len(got_body)


def test_a_cors_preflight_under_iiif_is_answered(port):
    """What a browser sends before a cross-origin GET of info.json with IIIF's Accept."""
    preflight = {
        "Origin": "https://viewer.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept",
    }
    status, headers, body = get(port, "/iiif/big.png/info.json", preflight, "OPTIONS")
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert headers["access-control-allow-headers"] == "accept"
    request = {"Origin": "https://viewer.example", "Accept": IIIF_JSON_LD}
    status, headers, _ = get(port, "/iiif/big.png/info.json", request)
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert headers["content-type"] == IIIF_JSON_LD


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("OPTIONS", "/iiif/big.png/info.json", {}),  # not a preflight
        ("OPTIONS", "/view/", {"Origin": "https://x", "Access-Control-Request-Method": "GET"}),
        ("POST", "/iiif/big.png/info.json", {}),
        ("PUT", "/view/", {}),
        ("DELETE", "/tile/sub/b.jpg?x=0&y=0&w=8&h=8", {}),
    ],
)
def test_other_methods_are_405(port, method, path, headers):
    status, answer, body = get(port, path, headers, method)
    assert status == 405 and answer["allow"] == "GET, HEAD"
    assert method in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example:1337", 400),  # DNS rebinding: a page of evil.example, on loopback
        ("evil.example", 400),
        ("127.0.0.1.evil.example", 400),
        ("localhost.evil.example:{port}", 400),
        ("", 400),
        ("localhost:{port}", 200),
        ("LOCALHOST", 200),
        ("127.0.0.1:{port}", 200),
        ("[::1]:{port}", 200),
    ],
)
def test_on_loopback_only_loopback_host_names_are_answered(port, host, status):
    for path in ("/view/big.png", "/iiif/big.png/info.json", "/healthz"):
        got, _, body = get(port, path, {"Host": host.format(port=port)})
        assert got == status, body
        if status == 400:
            assert "is not a loopback name" in json.loads(body)["error"]


def test_the_app_knows_serve_listens_on_loopback(port):
    assert listens_on_loopback()  # serve.start(http_options={"host": "127.0.0.1", ...})


def test_healthz_answers_while_the_model_is_busy(port):
    """/healthz sent after 16 tile requests (one model, one request at a time) is answered
    beside them, not queued behind them: when it answers, fewer than half are done."""
    regions = [(x, y) for x in (0, 192, 384, 576) for y in (0, 128, 256, 384)]  # 128 x 128, apart
    before = served(port)["tile"]
    with ThreadPoolExecutor(len(regions)) as pool:
        tiles = [
            pool.submit(get, port, f"/tile/big.png?x={x}&y={y}&w=128&h=128") for x, y in regions
        ]
        time.sleep(0.5)  # the tile requests reach Serve first
        start = time.monotonic()
        status, _, body = get(port, "/healthz")
        waited = time.monotonic() - start
        assert all(t.result()[0] == 200 for t in tiles)
    done = json.loads(body)["served"]["tile"] - before
    assert status == 200
    assert done < len(regions) // 2, f"/healthz answered after {waited:.1f} s, {done} tiles done"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # deploy/serve/tadm-tiles.yaml, KubeRay
        ("::", False),
        ("192.168.1.5", False),
        ("tiles.example", False),
    ],
)
def test_which_addresses_are_loopback(host, loopback):
    assert is_loopback(host) is loopback


# ---- the viewer in a browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; missing, the test fails under CI (make test installs it) and is
    skipped elsewhere."""
    return debian_tool("chromium", "chromium")


def screenshot(chromium: str, url: str, shot: Path, profile: Path) -> np.ndarray:
    """The page at `url` as headless Chromium draws it within 15 s of virtual time."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as img:
        return np.asarray(img.convert("RGB"))


def test_viewer_deep_zooms_tile_by_tile(chromium, port, tmp_path):
    """OpenSeadragon loads info.json, then the tiles. A loaded machine may render them after
    the page's time is up; the next visit gets them from the tile cache, so up to 3 visits."""
    before = served(port)
    for visit in range(3):
        url = f"http://127.0.0.1:{port}/view/big.png"
        image = screenshot(chromium, url, tmp_path / "viewer.png", tmp_path / f"profile-{visit}")
        viewer = image[60:-20, 20:-20].astype(float)  # below the header bar
        if viewer.std() > 20:  # the photo, not a blank or uniform viewer
            break
    assert viewer.std() > 20
    assert len(np.unique(viewer.reshape(-1, 3), axis=0)) > 1000
    after = served(port)
    assert after["view"] == before["view"] + visit + 1
    assert after["iiif_info"] > before["iiif_info"]
    # level 1/1 of big.png is two tiles: 512 x 512 and 256 x 512
    assert after["iiif_image"] >= before["iiif_image"] + 2
