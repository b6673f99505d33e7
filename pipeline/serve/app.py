"""The tile server on Ray Serve: one FastAPI app, `TileServer`, whose replicas each hold one
TADM (a `TileService`). Serve's autoscaler adds replicas, up to max_replicas, while requests
queue, and each replica may take a GPU or a fraction of one. Routes (OpenAPI at /openapi.json):

    GET /healthz                          200 {"status": "ok", "model_id", ..., "served"}
    GET /tile/<rel_path>?x=&y=&w=&h=      image/png of that HR region (HR pixels)
    GET /iiif/<id>/info.json              IIIF Image API 3.0 (iiif.py; id: rel_path URL-encoded)
    GET /iiif/<id>/<region>/<size>/<rotation>/<quality>.<format>
    GET /view/<id>, /view/                a deep-zoom viewer of one image; the list of images

HEAD answers as GET, without the body. IIIF answers carry CORS headers, and a CORS preflight
(OPTIONS) under /iiif/ is answered, so browser viewers elsewhere can send IIIF's Accept header.
Served on a loopback address (`tadm serve`'s default), the app answers only requests whose Host
is a loopback name, so that a web page cannot read it through DNS rebinding; the viewer pages
link with paths, never with the Host they were asked under.

Errors are JSON {"error": message}: 400 bad path, region, parameter or Host, 404 unknown image
or route, 405 not GET or HEAD, 409 LR of another model, 413 region over max_region_pixels or LR
file declaring an image over the archive's pixel limit, 500 unreadable LR file or any other
failure, 501 IIIF feature not supported, 503 storage or manifest unreadable. Paths are
percent-decoded once.

Three ways to run it, all through `build_app`: `tadm serve ARCHIVE` (jobs/serve.py), `serve run
pipeline.serve.app:app archive=URI [model=...]`, and a Serve config file for `serve deploy` or
a KubeRay RayService (deploy/serve/, deploy/kuberay/).
"""

import asyncio
import functools
import ipaddress
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.config import AutoscalingConfig
from starlette.exceptions import HTTPException

from pipeline.format import LR_DIR
from pipeline.restore.plan import archive_scale, list_items
from pipeline.serve import config
from pipeline.serve.iiif import MEDIA_TYPES, info_json, parse_quality_format, parse_view
from pipeline.serve.tiles import RenderedTile, TileError, TileService
from pipeline.serve.viewer import PAGE_SIZE, STATIC, image_id, index_page, under, viewer_page
from pipeline.stage import load_model, model_location
from pipeline.storage import Location, s3_options
from tadm.hub import default_model
from tadm.precision import default_precision

logger = logging.getLogger("tadm")

APP_NAME = "tadm-tiles"
TARGET_ONGOING_REQUESTS = 2  # autoscaling: add replicas when each has more requests than this
# Per replica, the requests Serve lets in at once; the rest, /healthz too, wait in the proxy.
# The model runs one request at a time (TileService.model_lock) and the others wait for it in
# the replica, so /healthz is answered beside up to this many requests instead of behind them.
# The cost: requests already in a replica stay there when the autoscaler adds replicas.
MAX_ONGOING_REQUESTS = 32
HEALTH_TIMEOUT_S = 60.0  # how long the driver waits for the deployed app to answer /healthz
JSON_LD = "application/ld+json"
IIIF_JSON_LD = f'{JSON_LD};profile="http://iiif.io/api/image/3/context.json"'
METHODS = "GET, HEAD"  # of every route; OPTIONS only as a CORS preflight under /iiif/
PREFLIGHT_MAX_AGE_S = 86400  # how long a browser may keep a preflight's answer
# Host headers that name this machine's loopback, with any port
LOOPBACK_HOST = re.compile(r"(localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]{1,5})?", re.I)

T = TypeVar("T")


class TileAppArgs(BaseModel):
    """The application's arguments: `serve run pipeline.serve.app:app archive=URI ...`, the
    `args` of a Serve config file, or `tadm serve`'s options of the same names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    archive: str  # URI of an archive written by archive
    model: str | None = None  # None: default_model(the archive's scale)
    max_region_pixels: int = config.MAX_REGION_PIXELS  # larger regions (w * h) get 413
    cache_mb: int = config.CACHE_MB  # per replica, each cache: LR images, tile latents, tiles
    min_replicas: int = config.MIN_REPLICAS  # 0 lets an idle app give its GPUs back
    max_replicas: int = config.MAX_REPLICAS
    cpus_per_replica: float = config.CPUS_PER_REPLICA  # the replica's torch threads on a CPU
    gpus_per_replica: float = config.GPUS_PER_REPLICA  # 0: the model runs on CPU
    precision: Literal["fp32", "fp16", "bf16"] | None = None  # None: fp16 on a GPU, else fp32
    storage_options: dict[str, Any] = {}  # s3fs options


@dataclass(frozen=True)
class ServeJob:
    """The arguments resolved against storage and the model."""

    args: TileAppArgs
    archive: Location
    options: dict[str, Any]  # resolved S3 options, passed to every replica
    model_ref: str
    model_id: str
    scale: int


def prepare_serve(args: TileAppArgs) -> ServeJob:
    """Check the arguments and resolve them, without Ray; every problem is a ValueError
    naming the option (`--max-replicas`, the `max_replicas` argument)."""
    checks = {
        "--max-region-pixels": (args.max_region_pixels, args.max_region_pixels >= 1, ">= 1"),
        "--cache-mb": (args.cache_mb, args.cache_mb >= 0, ">= 0"),
        "--min-replicas": (args.min_replicas, args.min_replicas >= 0, ">= 0"),
        "--max-replicas": (
            args.max_replicas,
            args.max_replicas >= max(1, args.min_replicas),
            ">= 1 and >= --min-replicas",
        ),
        "--cpus-per-replica": (args.cpus_per_replica, args.cpus_per_replica >= 0, ">= 0"),
        "--gpus-per-replica": (args.gpus_per_replica, args.gpus_per_replica >= 0, ">= 0"),
    }
    for name, (value, ok, rule) in checks.items():
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value}")
    if args.precision == "fp16" and args.gpus_per_replica == 0:
        raise ValueError(
            "--precision fp16 needs a GPU, and the replicas run the model on the CPU "
            "(--gpus-per-replica 0): use fp32 (the CPU default) or bf16, or --gpus-per-replica 1"
        )
    archive = Location.parse(args.archive, args.storage_options)
    options = s3_options(args.storage_options)
    try:
        is_archive = archive.filesystem().isdir(archive.path(LR_DIR))
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if not is_archive:
        raise ValueError(f"ARCHIVE {archive.uri!r} has no lr/ folder: not an archive")
    if args.model:
        model_ref = model_location(args.model)
    else:
        with list_items(archive, None) as items:
            model_ref = default_model(archive_scale(archive, items))
    model = load_model(model_ref, options)
    return ServeJob(args, archive, options, model_ref, model.model_id, model.scale)


# ---- the HTTP app ----------------------------------------------------------------------------

# No /docs nor /redoc: FastAPI's pages load their scripts from a CDN, blank offline; the
# OpenAPI description is /openapi.json, for any OpenAPI viewer.
api = FastAPI(
    title="tadm tiles",
    summary="HR regions of an archived image, restored on demand; IIIF Image API 3.0; viewer",
    docs_url=None,
    redoc_url=None,
)
api.mount("/static", StaticFiles(directory=STATIC), name="static")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@api.exception_handler(TileError)
async def tile_error(request: Request, e: TileError) -> JSONResponse:
    return error(e.status, e.message)


@api.exception_handler(RequestValidationError)
async def bad_parameter(request: Request, e: RequestValidationError) -> JSONResponse:
    problems = [f"{' '.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()]
    return error(400, "; ".join(problems))


@api.exception_handler(HTTPException)
async def http_error(request: Request, e: HTTPException) -> JSONResponse:
    if e.status_code == 404:
        path = request.url.path[:200]
        return error(404, f"no route {path!r}: see /openapi.json for the routes")
    return error(e.status_code, str(e.detail), e.headers)


@api.exception_handler(Exception)
async def failure(request: Request, e: Exception) -> JSONResponse:
    """Any other failure: a JSON 500 naming it; the server goes on."""
    logger.error("serve: %s failed: %s: %s", request.url.path[:200], type(e).__name__, e)
    return error(500, f"{type(e).__name__}: {e}")


def is_loopback(host: str) -> bool:
    """Whether listening on `host` (an address or "localhost") listens on loopback only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name: it reaches the network
        return False


@functools.cache
def listens_on_loopback() -> bool:
    """Whether Serve's HTTP proxies listen on a loopback address (`tadm serve --host`, `serve
    run`'s default 127.0.0.1; a Serve config file's http_options.host, 0.0.0.0 in deploy/),
    asked once of the Serve controller."""
    from ray.serve.context import _get_global_client  # no public API gives http_options

    return is_loopback(_get_global_client().http_config.host)


def preflight(request: Request) -> Response:
    """The answer to a CORS preflight: any origin may GET or HEAD, sending the headers it asks
    for (IIIF viewers send Accept: application/ld+json;profile=...)."""
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": f"{METHODS}, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get(
            "access-control-request-headers", "Accept"
        ),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
    }
    return Response(status_code=204, headers=headers)


async def head(request: Request, call_next: Callable) -> Response:
    """The answer to a HEAD request: the GET answer's status and headers (its Content-Length
    too), without its body."""
    request.scope["method"] = "GET"
    response = await call_next(request)
    async for _ in response.body_iterator:  # the GET ran to its end
        pass
    answer = Response(status_code=response.status_code)
    answer.raw_headers = response.raw_headers
    return answer


@api.middleware("http")
async def http_rules(request: Request, call_next: Callable) -> Response:
    """Who may ask what: on a loopback address, Host must be a loopback name (no DNS
    rebinding); every route answers GET, and HEAD as GET without the body; under /iiif/ a CORS
    preflight is answered and every answer carries CORS headers, for viewers elsewhere."""
    host = request.headers.get("host", "")
    if listens_on_loopback() and not LOOPBACK_HOST.fullmatch(host):
        return error(
            400,
            f"Host {host[:200]!r} is not a loopback name, and this server listens on loopback "
            "only: ask for http://127.0.0.1:<port>/ or http://localhost:<port>/ (to serve "
            "other hosts, listen on another address, e.g. tadm serve --host 0.0.0.0)",
        )
    iiif = request.url.path.startswith("/iiif/")
    cors = "origin" in request.headers and "access-control-request-method" in request.headers
    if iiif and request.method == "OPTIONS" and cors:
        return preflight(request)
    if request.method not in ("GET", "HEAD"):
        message = f"method {request.method} not allowed: use GET or HEAD"
        return error(405, message, {"Allow": METHODS})
    if request.method == "HEAD":
        response = await head(request, call_next)
    else:
        response = await call_next(request)
    if iiif:
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


Coordinate = Annotated[int, Query(ge=0, description="HR pixels")]
Length = Annotated[int, Query(ge=1, description="HR pixels")]
IIIF_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad parameter"},
    404: {"description": "unknown image"},
    413: {"description": "region or size over the server's limit"},
    501: {"description": "IIIF feature not supported"},
}


def image_response(tile: RenderedTile, image_format: str, model_id: str) -> Response:
    """The encoded image and how it was made: X-TADM-Source lr (from the LR pixels) or model
    (restored: X-TADM-Tiles, the latent tiles run of the image's, and their mean time step)."""
    headers = {
        "X-TADM-Model-Id": model_id,
        "X-TADM-Source": "lr" if tile.from_lr else "model",
        "X-TADM-Cache": "hit" if tile.cached else "miss",
    }
    if not tile.from_lr:
        headers["X-TADM-Tiles"] = f"{tile.tiles_run}/{tile.tiles_total}"
        headers["X-TADM-Timestep-Mean"] = f"{tile.timestep_mean:.2f}"
    return Response(tile.data, media_type=MEDIA_TYPES[image_format], headers=headers)


# @serve.ingress freezes `api` (a copy): everything its routes use is defined above.
@serve.deployment
@serve.ingress(api)
class TileServer:
    """The HTTP ingress: routes requests to a TileService run in worker threads."""

    def __init__(
        self,
        archive: str,
        model: str,
        storage_options: dict[str, Any],
        max_region_pixels: int,
        cache_bytes: int,
        cpus: float,
        gpus: float,
        precision: str | None,
    ) -> None:
        use_gpu = gpus > 0 and torch.cuda.is_available()
        if not use_gpu:
            torch.set_num_threads(max(1, int(cpus)))
        device = torch.device("cuda" if use_gpu else "cpu")
        self.service = TileService(
            archive, model, storage_options, max_region_pixels, cache_bytes, device, precision
        )
        listens_on_loopback()  # asked of the controller now, not on the first request
        # answers (200) by route, for /healthz
        self.served = dict.fromkeys(("tile", "iiif_info", "iiif_image", "view", "index"), 0)

    async def call(self, route: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker thread, counted in `served` when it answers."""
        result = await asyncio.to_thread(function, *args)
        self.served[route] += 1
        return result

    @api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        """The model, the archive, and this replica's answers by route."""
        service = self.service
        return {
            "status": "ok",
            "model_id": service.model_id,
            "precision": service.model.precision,
            "archive": service.archive.uri,
            "scale": service.model.scale,
            "served": self.served,
        }

    @api.get(
        "/tile/{rel_path:path}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **IIIF_ERRORS},
    )
    async def tile(
        self, request: Request, rel_path: str, x: Coordinate, y: Coordinate, w: Length, h: Length
    ) -> Response:
        """The PNG of HR region (x, y, w, h) of image `rel_path`."""
        params = request.query_params.multi_items()  # checked again: each once, digits only
        tile = await self.call("tile", self.service.tile, rel_path, params)
        return image_response(tile, "png", self.service.model_id)

    @api.get("/iiif/{id:path}/info.json", responses=IIIF_ERRORS)
    async def iiif_info(self, request: Request, id: str) -> JSONResponse:
        """The IIIF Image API 3.0 info.json of image `id` (its rel_path, URL-encoded)."""
        header = await self.call("iiif_info", self.service.header, id)
        base = f"{request.base_url}iiif/{image_id(id)}"  # IIIF wants an absolute id
        limit = self.service.max_region_pixels
        info = info_json(base, header.width, header.height, limit, header.scale)
        media = IIIF_JSON_LD if JSON_LD in request.headers.get("accept", "") else None
        return JSONResponse(info, media_type=media)

    @api.get(
        "/iiif/{id:path}/{region}/{size}/{rotation}/{quality_format}",
        response_class=Response,
        responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}, **IIIF_ERRORS},
    )
    async def iiif_image(
        self, id: str, region: str, size: str, rotation: str, quality_format: str
    ) -> Response:
        """An IIIF Image API 3.0 image request: region full | square | x,y,w,h | pct:x,y,w,h;
        size max | w, | ,h | w,h | !w,h | pct:n (^ to upscale); rotation 0, 90, 180, 270 (!
        to mirror); quality default | color; format jpg | png | webp."""
        request = (region, size, rotation, quality_format)
        tile = await self.call("iiif_image", self.iiif_tile, id, *request)
        image_format = parse_quality_format(quality_format)  # checked by iiif_tile
        return image_response(tile, image_format, self.service.model_id)

    @api.get("/iiif/{id:path}", status_code=303, responses=IIIF_ERRORS)
    def iiif_base(self, request: Request, id: str) -> RedirectResponse:
        """The image's base URI: redirects to its info.json."""
        return RedirectResponse(f"{request.base_url}iiif/{image_id(id)}/info.json", 303)

    @api.get("/view/", response_class=HTMLResponse)
    async def index(
        self, request: Request, page: Annotated[int, Query(ge=1)] = 1, prefix: str = ""
    ) -> str:
        """The archive's images that have an LR file, those whose rel_path starts with
        `prefix` (a folder's "a/b/"), PAGE_SIZE a page, each linked to its viewer; 503 when
        the manifest cannot be read."""
        rel_paths = under(await self.call("index", self.service.images), prefix)
        if page > 1 and (page - 1) * PAGE_SIZE >= len(rel_paths):
            where = f" under {prefix!r}" if prefix else ""
            raise TileError(404, f"no page {page}: the archive has {len(rel_paths)} images{where}")
        return index_page(request.base_url.path, rel_paths, page, prefix)

    @api.get("/view/{id:path}", response_class=HTMLResponse, responses={404: IIIF_ERRORS[404]})
    async def view(self, request: Request, id: str) -> str:
        """A deep-zoom viewer (OpenSeadragon) of image `id`, tile by tile over IIIF."""
        header = await self.call("view", self.service.header, id)
        return viewer_page(request.base_url.path, id, header.width, header.height)

    def iiif_tile(
        self, id: str, region: str, size: str, rotation: str, quality_format: str
    ) -> RenderedTile:
        header = self.service.header(id)
        view = parse_view(
            region,
            size,
            rotation,
            quality_format,
            header.width,
            header.height,
            self.service.max_region_pixels,
            header.scale,
        )
        return self.service.view(id, view)


# ---- the application -------------------------------------------------------------------------


def bind(job: ServeJob) -> serve.Application:
    """The Serve application: the one place that picks replicas, CPUs and GPUs."""
    args = job.args
    autoscaling = AutoscalingConfig(
        min_replicas=args.min_replicas,
        initial_replicas=max(1, args.min_replicas),
        max_replicas=args.max_replicas,
        target_ongoing_requests=TARGET_ONGOING_REQUESTS,
    )
    deployment = TileServer.options(
        autoscaling_config=autoscaling,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica},
    )
    return deployment.bind(
        job.archive.uri,
        job.model_ref,
        job.options,
        args.max_region_pixels,
        args.cache_mb * 2**20,
        args.cpus_per_replica,
        args.gpus_per_replica,
        args.precision,
    )


def build_app(args: TileAppArgs) -> serve.Application:
    """Ray Serve's application builder: Serve validates the arguments against TileAppArgs,
    then the archive and the model are checked (ValueError) before anything deploys."""
    return bind(prepare_serve(args))


app = build_app  # the import path of `serve run` and Serve config files: pipeline.serve.app:app


def local_url(host: str, port: int) -> str:
    """Where this machine reaches the proxy: a wildcard host is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_running() -> bool:
    """Whether Serve, hence its HTTP proxy, already runs in the connected Ray cluster (a
    previous `tadm serve` leaves it there)."""
    from ray.serve.context import _get_global_client  # no public API asks without starting it

    return _get_global_client(raise_if_no_controller_running=False) is not None


def run_serve(job: ServeJob, host: str, port: int, quiet: bool = False) -> str:
    """Deploy the app on the running Ray cluster, its HTTP proxy on host:port; return its URL
    once /healthz answers. `quiet` (without -v): Serve logs warnings and errors only, none of
    its notices (its actors starting and stopping, routes updated) and no line per request."""
    args = job.args
    logger.info(
        "serve: archive=%s model=%s (id %s) host=%s port=%d replicas=%d..%d "
        "cpus_per_replica=%g gpus_per_replica=%g precision=%s max_region_pixels=%d cache_mb=%d",
        job.archive.uri,
        job.model_ref,
        job.model_id,
        host,
        port,
        args.min_replicas,
        args.max_replicas,
        args.cpus_per_replica,
        args.gpus_per_replica,
        args.precision or default_precision("cuda" if args.gpus_per_replica > 0 else "cpu"),
        args.max_region_pixels,
        args.cache_mb,
    )
    logging_config = None
    if quiet:  # Serve's actors, and its logger in this process
        logging_config = {"log_level": "WARNING", "enable_access_log": False}
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
    try:
        serve.run(bind(job), name=APP_NAME, route_prefix="/", logging_config=logging_config)
    except RuntimeError as e:
        raise ValueError(f"the tile server did not deploy: {e}") from None
    url = local_url(host, port)
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
