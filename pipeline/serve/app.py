"""`tadm serve` on Ray Serve: HR tiles of an archive over HTTP.

One deployment, `TileServer`, whose replicas each hold one TADM (a `TileService`); Serve's
autoscaler adds replicas, up to --max-replicas, while requests queue, and each replica may take
a GPU or a fraction of one. Routes:

    GET /healthz                         200 {"status": "ok", "model_id", "archive", "scale"}
    GET /tile/<rel_path>?x=&y=&w=&h=     200 image/png of that HR region (HR pixels)

Errors are JSON {"error": message}: 400 bad path, region or query parameter, 404 unknown image,
409 LR of another model, 413 region over --max-region-pixels, 500 unreadable LR file, 503
storage unreachable. The rel_path is the request path after /tile/, percent-decoded once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import torch
from ray import serve
from ray.serve.config import AutoscalingConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.format import LR_DIR
from pipeline.restore.plan import archive_scale, list_items
from pipeline.serve.tiles import TileError, TileService
from pipeline.stage import load_model
from pipeline.storage import Location, s3_options
from tadm.hub import default_model

logger = logging.getLogger("tadm")

APP_NAME = "tadm-tiles"
TILE_ROUTE = "/tile/"
TARGET_ONGOING_REQUESTS = 2  # autoscaling: add replicas when each has more requests than this
MAX_ONGOING_REQUESTS = 8  # per replica; the model runs one request at a time, the rest read
# LR files, encode PNGs or hit the caches meanwhile
HEALTH_TIMEOUT_S = 60.0  # how long the driver waits for the deployed app to answer /healthz


@dataclass(frozen=True)
class ServeConfig:
    archive: str  # URI of an archive written by archive
    model: str | None = None  # None: default_model(the archive's scale)
    host: str = "127.0.0.1"  # address the HTTP proxy listens on (0.0.0.0: every interface)
    port: int = 8000
    max_region_pixels: int = 4096 * 4096  # larger regions (w * h) get 413
    cache_mb: int = 256  # per replica, each of: decoded LR images, tile latents, rendered tiles
    min_replicas: int = 1  # 0 lets an idle app give its GPUs back
    max_replicas: int = 4
    cpus_per_replica: float = 1.0  # also the replica's torch threads on a CPU
    gpus_per_replica: float = 0.0  # 0: the model runs on CPU
    storage_options: dict[str, Any] = field(default_factory=dict)  # s3fs options


@dataclass(frozen=True)
class ServeJob:
    """The configuration resolved against storage and the model."""

    config: ServeConfig
    archive: Location
    options: dict[str, Any]  # resolved S3 options, passed to every replica
    model_ref: str
    model_id: str
    scale: int


def prepare_serve(config: ServeConfig) -> ServeJob:
    """Check the configuration and resolve it, without Ray; every problem is a ValueError."""
    checks = {
        "--port": (config.port, 1 <= config.port <= 65535, "between 1 and 65535"),
        "--max-region-pixels": (config.max_region_pixels, config.max_region_pixels >= 1, ">= 1"),
        "--cache-mb": (config.cache_mb, config.cache_mb >= 0, ">= 0"),
        "--min-replicas": (config.min_replicas, config.min_replicas >= 0, ">= 0"),
        "--max-replicas": (
            config.max_replicas,
            config.max_replicas >= max(1, config.min_replicas),
            ">= 1 and >= --min-replicas",
        ),
        "--cpus-per-replica": (config.cpus_per_replica, config.cpus_per_replica >= 0, ">= 0"),
        "--gpus-per-replica": (config.gpus_per_replica, config.gpus_per_replica >= 0, ">= 0"),
    }
    for name, (value, ok, rule) in checks.items():
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value}")
    archive = Location.parse(config.archive, config.storage_options)
    options = s3_options(config.storage_options)
    try:
        is_archive = archive.filesystem().isdir(archive.path(LR_DIR))
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if not is_archive:
        raise ValueError(f"ARCHIVE {archive.uri!r} has no lr/ folder: not an archive")
    if config.model:
        model_ref = config.model
    else:
        with list_items(archive, None) as items:
            model_ref = default_model(archive_scale(items, options))
    model = load_model(model_ref, options)
    return ServeJob(config, archive, options, model_ref, model.model_id, model.scale)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@serve.deployment
class TileServer:
    """HTTP ingress: routes requests to a TileService run in worker threads."""

    def __init__(
        self,
        archive: str,
        model: str,
        storage_options: dict[str, Any],
        max_region_pixels: int,
        cache_bytes: int,
        cpus: float,
        gpus: float,
    ) -> None:
        use_gpu = gpus > 0 and torch.cuda.is_available()
        if not use_gpu:
            torch.set_num_threads(max(1, int(cpus)))
        device = torch.device("cuda" if use_gpu else "cpu")
        self.service = TileService(
            archive, model, storage_options, max_region_pixels, cache_bytes, device
        )

    async def __call__(self, request: Request) -> Response:
        path = request.scope["path"]  # percent-decoded once by the HTTP server
        if request.method != "GET":
            return error(405, f"method {request.method} not allowed: use GET", {"Allow": "GET"})
        if path == "/healthz":
            service = self.service
            return JSONResponse(
                {
                    "status": "ok",
                    "model_id": service.model_id,
                    "archive": service.archive.uri,
                    "scale": service.model.scale,
                }
            )
        if not path.startswith(TILE_ROUTE):
            return error(404, f"no route {path[:200]!r}: use /healthz or /tile/<rel_path>")
        params = request.query_params.multi_items()
        try:
            tile = await asyncio.to_thread(self.service.tile, path[len(TILE_ROUTE) :], params)
        except TileError as e:
            return error(e.status, e.message)
        headers = {
            "X-TADM-Model-Id": self.service.model_id,
            "X-TADM-Tiles": f"{tile.tiles_run}/{tile.tiles_total}",
            "X-TADM-Timestep-Mean": f"{tile.timestep_mean:.2f}",
            "X-TADM-Cache": "hit" if tile.cached else "miss",
        }
        return Response(tile.png, media_type="image/png", headers=headers)


def build_app(job: ServeJob) -> serve.Application:
    """The Serve application: the one place that picks replicas, CPUs and GPUs."""
    config = job.config
    autoscaling = AutoscalingConfig(
        min_replicas=config.min_replicas,
        initial_replicas=max(1, config.min_replicas),
        max_replicas=config.max_replicas,
        target_ongoing_requests=TARGET_ONGOING_REQUESTS,
    )
    deployment = TileServer.options(
        autoscaling_config=autoscaling,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={
            "num_cpus": config.cpus_per_replica,
            "num_gpus": config.gpus_per_replica,
        },
    )
    return deployment.bind(
        job.archive.uri,
        job.model_ref,
        job.options,
        config.max_region_pixels,
        config.cache_mb * 2**20,
        config.cpus_per_replica,
        config.gpus_per_replica,
    )


def local_url(host: str, port: int) -> str:
    """Where this machine reaches the proxy: a wildcard host is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_serve(job: ServeJob) -> str:
    """Deploy the app on the running Ray cluster; return its URL once /healthz answers."""
    config = job.config
    logger.info(
        "serve: archive=%s model=%s (id %s) host=%s port=%d replicas=%d..%d "
        "cpus_per_replica=%g gpus_per_replica=%g max_region_pixels=%d cache_mb=%d",
        job.archive.uri,
        job.model_ref,
        job.model_id,
        config.host,
        config.port,
        config.min_replicas,
        config.max_replicas,
        config.cpus_per_replica,
        config.gpus_per_replica,
        config.max_region_pixels,
        config.cache_mb,
    )
    serve.start(http_options={"host": config.host, "port": config.port})
    try:
        serve.run(build_app(job), name=APP_NAME, route_prefix="/")
    except RuntimeError as e:
        raise ValueError(f"the tile server did not deploy: {e}") from None
    url = local_url(config.host, config.port)
    wait_healthy(url, job.model_id)
    return url


def wait_healthy(url: str, model_id: str) -> None:
    """Wait until GET url/healthz reports `model_id`: the app answers on that address."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                health = json.loads(response.read())
            if health.get("model_id") == model_id:
                return
            reason = f"it serves model {health.get('model_id')!r}"
        except (OSError, ValueError) as e:
            reason = str(e)
        time.sleep(0.5)
    raise ValueError(
        f"the tile server is deployed but {url}/healthz fails ({reason}); if Serve was already "
        "running in this Ray cluster with another --host/--port, use those or `serve shutdown`"
    )
