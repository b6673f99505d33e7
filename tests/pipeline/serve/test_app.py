"""`tadm serve`: the tile service without Ray, then the real CLI on Ray Serve over loopback."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    bomb_png,
    cli_env,
    encode,
    make_bucket,
    photo,
    record_lrs,
    run_cli,
    write_tree,
)
from PIL import Image

from jobs.serve import check_port
from jobs.serve import main as serve_main
from pipeline.format import LrHeader, encode_lr_png
from pipeline.serve.app import serve_running
from pipeline.serve.tiles import TileError, TileService, parse_region
from tadm import TADM
from tadm.metrics import psnr
from tadm.presets import build_config

# a.png spans two latent tiles of the test model: HR x 0..128 and 64..192
SIZES = {"a.png": (192, 64), "sub/b.jpg": (48, 40)}  # rel_path: (W, H)
LIMIT = 10_000  # --max-region-pixels of the server under test
CPU = torch.device("cpu")


def query(x: int, y: int, w: int, h: int) -> list[tuple[str, str]]:
    return [("x", str(x)), ("y", str(y)), ("w", str(w)), ("h", str(h))]


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled_model(tmp_path_factory) -> str:
    """A tiny x16 TADM with latent tiles of 128 HR pixels at a stride of 64, so that small
    images have several."""
    torch.manual_seed(3)
    config = build_config("tiny", 16)
    f = config.vae_factor
    model = TADM.from_config(dataclasses.replace(config, tile=128 // f, tile_stride=64 // f))
    path = tmp_path_factory.mktemp("tiled-model")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def archive(ray_cluster, tiled_model, tmp_path_factory) -> Path:
    """An archive of SIZES, plus symlinks under lr/: one to an image inside, two out of it."""
    root = tmp_path_factory.mktemp("serve")
    src = write_tree(
        root / "src",
        {
            "a.png": encode(Image.fromarray(photo(192, 64, 30)), "PNG"),
            "sub/b.jpg": encode(Image.fromarray(photo(48, 40, 31)), "JPEG", quality=95),
        },
    )
    dst = root / "archive"
    assert run_cli("archive", src, dst, "--model", tiled_model) == 0
    lr = dst / "lr"
    outside = root / "outside"
    outside.mkdir()
    shutil.copy(lr / "a.png.png", outside / "secret.png.png")  # a valid LR, outside ARCHIVE
    (lr / "inside.png.png").symlink_to("a.png.png")
    (lr / "escape.png.png").symlink_to(outside / "secret.png.png")
    (lr / "linked").symlink_to(outside, target_is_directory=True)
    return dst


@pytest.fixture(scope="module")
def restored(archive, tiled_model, tmp_path_factory) -> dict[str, np.ndarray]:
    """Every image restored whole by `tadm restore`: the reference for tiles."""
    dst = tmp_path_factory.mktemp("serve-restored")
    assert run_cli("restore", archive, dst, "--model", tiled_model) == 0
    return {rel_path: pixels((dst / f"{rel_path}.png").read_bytes()) for rel_path in SIZES}


@pytest.fixture(scope="module")
def service(archive, tiled_model) -> TileService:
    return TileService(str(archive), tiled_model, {}, LIMIT, 2**22, CPU)


def tile_status(service: TileService, rel_path: str, params: list[tuple[str, str]]) -> int:
    with pytest.raises(TileError) as e:
        service.tile(rel_path, params)
    return e.value.status


# ---- the service, without Ray ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel_path", "region", "tiles_run"),
    [
        ("a.png", (0, 0, 48, 32), 1),  # inside the first latent tile only
        ("a.png", (150, 30, 42, 34), 1),  # the last tile, to the bottom-right corner
        ("a.png", (40, 8, 120, 50), 2),  # across the blend of both
        ("sub/b.jpg", (0, 0, 48, 40), 1),  # a whole small image
    ],
)
def test_tile_equals_the_region_of_a_full_restore(service, restored, rel_path, region, tiles_run):
    tile = service.tile(rel_path, query(*region))
    x, y, w, h = region
    got = pixels(tile.data)
    assert got.shape == (h, w, 3)
    assert psnr(got, restored[rel_path][y : y + h, x : x + w]) >= 35
    assert (tile.tiles_run, tile.tiles_total) == (tiles_run, 2 if rel_path == "a.png" else 1)
    assert 10 <= tile.timestep_mean <= 200  # TPM range of the tiny preset


def test_a_bf16_service_serves_close_to_fp32(archive, tiled_model, restored):
    half = TileService(str(archive), tiled_model, {}, LIMIT, 0, CPU, "bf16")
    assert half.model.precision == "bf16" and half.model_id == half.model.model_id
    got = pixels(half.tile("a.png", query(40, 8, 120, 50)).data)
    assert psnr(got, restored["a.png"][8:58, 40:160]) >= 25


def test_repeated_tiles_and_images_come_from_the_caches(service):
    params = query(8, 8, 16, 16)
    first = service.tile("sub/b.jpg", params)
    lr_hits = service.lr_cache.hits
    again = service.tile("sub/b.jpg", params)
    assert again.cached and again.data == first.data
    assert service.lr_cache.hits == lr_hits + 1  # the LR image was decoded once


def test_overlapping_regions_reuse_the_cached_latents(service, restored):
    """A new region over latent tiles already enhanced only decodes them again."""
    first = service.tile("a.png", query(0, 0, 40, 32))  # the first latent tile
    hits = service.latent_cache.hits
    other = service.tile("a.png", query(4, 10, 36, 30))
    assert not other.cached and (other.tiles_run, first.tiles_run) == (1, 1)
    assert service.latent_cache.hits == hits + 1
    assert psnr(pixels(other.data), restored["a.png"][10:40, 4:40]) >= 35
    assert other.timestep_mean == first.timestep_mean


@pytest.mark.parametrize(
    "params",
    [
        [("x", "0"), ("y", "0"), ("w", "8")],  # h missing
        query(0, 0, 8, 8) + [("z", "1")],  # unknown parameter
        query(0, 0, 8, 8) + [("x", "1")],  # x twice
        [("x", "-1"), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", "1.5"), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", "+1"), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", " 1"), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", "1e3"), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", "٣"), ("y", "0"), ("w", "8"), ("h", "8")],  # a non-ASCII digit
        [("x", ""), ("y", "0"), ("w", "8"), ("h", "8")],
        [("x", "0"), ("y", "0"), ("w", "9" * 12), ("h", "8")],
        query(0, 0, 0, 8),
        query(0, 0, 8, 0),
    ],
)
def test_malformed_queries_are_400(params):
    with pytest.raises(TileError) as e:
        parse_region(params)
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("rel_path", "region", "status"),
    [
        ("a.png", (185, 0, 8, 8), 400),  # past the right edge
        ("a.png", (0, 60, 8, 5), 400),  # past the bottom
        ("a.png", (0, 0, 192, 64), 413),  # 12288 pixels > LIMIT
        ("missing.png", (0, 0, 8, 8), 404),
        ("sub", (0, 0, 8, 8), 404),
        ("../outside/secret.png", (0, 0, 8, 8), 400),
        ("sub/../a.png", (0, 0, 8, 8), 400),
        ("./a.png", (0, 0, 8, 8), 400),
        ("/etc/passwd", (0, 0, 8, 8), 400),
        ("sub//b.jpg", (0, 0, 8, 8), 400),
        ("..\\outside\\secret.png", (0, 0, 8, 8), 400),
        ("a.png\x00", (0, 0, 8, 8), 400),
        ("", (0, 0, 8, 8), 400),
        ("escape.png", (0, 0, 8, 8), 404),  # a symlink out of the archive
        ("linked/secret.png", (0, 0, 8, 8), 404),  # a symlinked folder out of it
        ("a.png/x.png", (0, 0, 8, 8), 404),  # lr/a.png.png is a file, not a folder
        ("y" * 300 + ".png", (0, 0, 8, 8), 404),  # longer than a file name can be
    ],
)
def test_bad_requests(service, rel_path, region, status):
    assert tile_status(service, rel_path, query(*region)) == status


def test_a_symlink_inside_the_archive_is_served(service):
    assert service.tile("inside.png", query(0, 0, 8, 8)).data


def add_oversized_lrs(archive: Path, model_id: str) -> None:
    """lr/bomb.png.png: a PNG header of 40000 x 40000 pixels; lr/huge.png.png: a small LR of
    this model declaring a 20000 x 20000 image (both over the 16384 x 16384 limit)."""
    (archive / "lr" / "bomb.png.png").write_bytes(bomb_png(40000, 40000))
    huge = encode_lr_png(photo(1250, 1250), LrHeader(20000, 20000, 16, model_id))
    (archive / "lr" / "huge.png.png").write_bytes(huge)
    record_lrs(archive, ["bomb.png", "huge.png"], model_id)  # a hostile archive's rows


def test_lr_files_over_the_pixel_limit_are_413(archive, service):
    add_oversized_lrs(archive, service.model_id)
    for rel_path, message in [
        ("bomb.png", "the LR PNG is 40000x40000"),
        ("huge.png", "20000x20000"),
    ]:
        with pytest.raises(TileError) as e:
            service.tile(rel_path, query(0, 0, 8, 8))
        assert e.value.status == 413 and message in e.value.message


def test_error_bodies_name_the_image_never_where_the_archive_is(archive, service, caplog):
    add_oversized_lrs(archive, service.model_id)
    (archive / "lr" / "corrupt.png.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    record_lrs(archive, ["corrupt.png"], service.model_id)
    for rel_path, status in [("corrupt.png", 500), ("missing.png", 404), ("bomb.png", 413)]:
        with pytest.raises(TileError) as e:
            service.tile(rel_path, query(0, 0, 8, 8))
        assert e.value.status == status and repr(rel_path) in e.value.message
        assert str(archive) not in e.value.message
    assert str(archive / "lr" / "corrupt.png.png") in caplog.text  # the operator's log has it
    (archive / "lr" / "corrupt.png.png").unlink()


def test_an_lr_of_another_model_is_409_naming_both(archive, service, other_model):
    other = TileService(str(archive), other_model, {}, LIMIT, 0, CPU)
    with pytest.raises(TileError) as e:
        other.tile("a.png", query(0, 0, 8, 8))
    assert e.value.status == 409
    assert f"archived by model {service.model_id}" in e.value.message
    assert f"runs model {other.model_id}" in e.value.message


def test_tiles_from_an_s3_archive(archive, service, tiled_model, s3_env):
    make_bucket(s3_env, "tiles")
    remote = TileService("s3://tiles/archive", tiled_model, {}, LIMIT, 2**20, CPU)
    remote.fs.put_file(str(archive / "lr" / "sub" / "b.jpg.png"), "tiles/archive/lr/sub/b.jpg.png")
    params = query(4, 4, 24, 20)
    assert remote.tile("sub/b.jpg", params).data == service.tile("sub/b.jpg", params).data
    assert tile_status(remote, "a.png", params) == 404
    assert tile_status(remote, "../archive/lr/sub/b.jpg", params) == 400


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{archive}", "--port", "0"], "--port must be between 1 and 65535"),
        (["{archive}", "--max-replicas", "0"], "--max-replicas must be"),
        (["{archive}", "--gpus-per-replica", "-1"], "--gpus-per-replica must be >= 0"),
        (["{archive}", "--max-region-pixels", "0"], "--max-region-pixels must be >= 1"),
        (["{missing}"], "has no lr/ folder"),
        (["{archive}", "--model", "no-such-model"], "no-such-model"),
        (["{archive}", "--port", "http"], "invalid int value"),
        (["{archive}", "--precision", "fp16"], "--precision fp16 needs a GPU"),
    ],
)
def test_bad_usage_exits_2_before_starting_anything(args, message, archive, tmp_path, capsys):
    values = {"archive": archive, "missing": tmp_path / "missing"}
    assert serve_main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tadm serve: error:") and message in err[-1]


def test_a_port_in_use_exits_2_before_serve_starts(archive, tiled_model, capsys):
    """Another server listens on the port: one line naming it, and Serve never starts."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert serve_main([str(archive), "--model", tiled_model, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tadm serve: error: port {port} on 127.0.0.1 is in use (by another server): "
        "give another --port"
    ]
    assert not serve_running()


def test_an_address_of_another_machine_is_refused():
    with pytest.raises(ValueError, match="cannot listen on port 8000 of 198.51.100.1 .*--host"):
        check_port("198.51.100.1", 8000)  # TEST-NET-2: no machine's own address


# ---- Ray Serve over loopback -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request with `path` sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def tile_path(rel_path: str, x: int, y: int, w: int, h: int) -> str:
    return f"/tile/{rel_path}?x={x}&y={y}&w={w}&h={h}"


@pytest.fixture(scope="module")
def serve_log(tmp_path_factory) -> Path:
    """Where the server's stderr goes."""
    return tmp_path_factory.mktemp("serve-log") / "stderr.log"


@pytest.fixture(scope="module")
def server(ray_cluster, archive, tiled_model, serve_log):
    """`tadm serve` as a process of its own on the session's Ray; yields (process, port)."""
    port = free_port()
    log_path = serve_log
    args = [str(archive), "--model", tiled_model, "--port", str(port)]
    args += ["--max-region-pixels", str(LIMIT), "--min-replicas", "1", "--max-replicas", "2"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "serve", *args],
            env=cli_env(ray_cluster),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 240
    while "serve: ready at" not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.5)
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()
    from ray import serve

    serve.shutdown()


def test_healthz(server, tiled_model):
    _, port = server
    status, headers, body = get(port, "/healthz")
    assert status == 200 and headers["content-type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["model_id"] == TADM.from_pretrained(tiled_model).model_id
    assert health["precision"] == "fp32"  # the CPU's default


def test_http_tile_equals_restore_region(server, restored):
    _, port = server
    status, headers, body = get(port, tile_path("a.png", 40, 8, 120, 50))
    assert status == 200 and headers["content-type"] == "image/png"
    assert headers["x-tadm-tiles"] == "2/2"
    assert psnr(pixels(body), restored["a.png"][8:58, 40:160]) >= 35


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (tile_path("a.png", 0, 0, 8, 8).replace("&h=8", ""), 400),
        (tile_path("a.png", 0, 0, 8, 8).replace("x=0", "x=-3"), 400),
        (tile_path("a.png", 0, 0, 8, 8).replace("w=8", "w=eight"), 400),
        (tile_path("a.png", 0, 0, 8, 8) + "&x=1", 400),
        (tile_path("a.png", 190, 0, 8, 8), 400),
        (tile_path("a.png", 0, 0, 192, 64), 413),
        (tile_path("missing.png", 0, 0, 8, 8), 404),
        (tile_path("escape.png", 0, 0, 8, 8), 404),
        (tile_path("linked/secret.png", 0, 0, 8, 8), 404),
        (tile_path("../outside/secret.png", 0, 0, 8, 8), 400),
        (tile_path("%2e%2e/outside/secret.png", 0, 0, 8, 8), 400),
        (tile_path("%2E%2E%2Foutside%2Fsecret.png", 0, 0, 8, 8), 400),
        (tile_path("sub/%2e%2e/%2e%2e/outside/secret.png", 0, 0, 8, 8), 400),
        (tile_path("..%5coutside%5csecret.png", 0, 0, 8, 8), 400),
        (tile_path("%2Ftmp%2Fsecret.png", 0, 0, 8, 8), 400),
        (tile_path("/etc/passwd", 0, 0, 8, 8), 400),
        (tile_path("%252e%252e/outside/secret.png", 0, 0, 8, 8), 404),  # a literal "%2e%2e"
        ("/tile/a.png", 400),
        ("/nope", 404),
    ],
)
def test_http_errors_and_traversal(server, path, status):
    _, port = server
    got, headers, body = get(port, path)
    assert got == status, body
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]


def test_http_lr_files_over_the_pixel_limit_are_json_413(server, archive, service):
    _, port = server
    add_oversized_lrs(archive, service.model_id)
    for rel_path, message in [
        ("bomb.png", "the LR PNG is 40000x40000"),
        ("huge.png", "20000x20000"),
    ]:
        status, headers, body = get(port, tile_path(rel_path, 0, 0, 8, 8))
        assert status == 413 and headers["content-type"] == "application/json"
        assert message in json.loads(body)["error"]
    assert get(port, tile_path("a.png", 0, 0, 8, 8))[0] == 200  # the server goes on


def test_http_post_is_405(server):
    _, port = server
    status, headers, _ = get(port, tile_path("a.png", 0, 0, 8, 8), method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_parallel_clients(server, restored):
    """Twelve requests from eight client threads at once: every answer is right."""
    _, port = server
    regions = [("a.png", (x, y, 24, 24)) for x in (0, 30, 60, 100, 140, 168) for y in (0, 40)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda r: get(port, tile_path(r[0], *r[1])), regions))
    assert time.monotonic() - start < 240
    for (rel_path, (x, y, w, h)), (status, _, body) in zip(regions, answers, strict=True):
        assert status == 200, body
        assert psnr(pixels(body), restored[rel_path][y : y + h, x : x + w]) >= 35


def test_the_server_logs_its_own_lines_not_serves_notices(server, serve_log):
    """Without -v: its configuration and ready lines, warnings and errors; not Serve's INFO
    lines (its actors starting, routes updated) nor one per request."""
    _, port = server
    for path in ("/healthz", tile_path("a.png", 0, 0, 8, 8)):
        assert get(port, path)[0] == 200
    time.sleep(2)  # Serve's logs reach the driver a moment after the answer
    lines = serve_log.read_text().splitlines()
    assert any(line.startswith("serve: archive=") for line in lines)
    assert any(line.startswith("serve: ready at") for line in lines)
    assert not [line for line in lines if "INFO" in line or "GET /" in line]


def test_sigterm_stops_the_server_and_removes_the_app(server):
    process, port = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    status, _, _ = get(port, "/healthz")  # the proxy stays with Serve; the app is gone
    assert status == 404
