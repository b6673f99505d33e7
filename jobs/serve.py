"""tadm serve ARCHIVE: HR tiles of an archive over HTTP, on Ray Serve, until SIGINT or SIGTERM.

GET /healthz; /tile/<rel_path>?x=&y=&w=&h= for a PNG of that HR region; IIIF Image API 3.0
under /iiif/<id>/ (id: the rel_path URL-encoded); a deep-zoom viewer at /view/<id>; its
OpenAPI description at /openapi.json. The same application runs with `serve run
pipeline.serve.app:app archive=...`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import threading

from jobs.common import (
    Parser,
    add_precision_option,
    add_storage_options,
    ray_session,
    require_extra,
    run_job,
)
from pipeline.serve import config

PROG = "tadm serve"
HOST = "127.0.0.1"  # address the HTTP proxy listens on (0.0.0.0: every interface)
PORT = 8000

logger = logging.getLogger("tadm")


def parser() -> Parser:
    """The arguments: --host, --port, and TileAppArgs' fields (defaults: pipeline.serve.config)."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    p.add_argument(
        "--host",
        default=HOST,
        help=f"address to listen on (default {HOST}; on loopback, only a Host of localhost, "
        "127.x.x.x or [::1] is answered)",
    )
    p.add_argument("--port", type=int, default=PORT, help=f"HTTP port (default {PORT})")
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument(
        "--max-region-pixels",
        type=int,
        default=config.MAX_REGION_PIXELS,
        help=f"refuse larger regions (w*h) with 413 (default {config.MAX_REGION_PIXELS})",
    )
    p.add_argument(
        "--cache-mb",
        type=int,
        default=config.CACHE_MB,
        help="per replica, for each cache: LR images, tile latents, tiles "
        f"(default {config.CACHE_MB})",
    )
    p.add_argument(
        "--min-replicas",
        type=int,
        default=config.MIN_REPLICAS,
        help=f"autoscaling lower bound; 0 frees idle GPUs (default {config.MIN_REPLICAS})",
    )
    p.add_argument(
        "--max-replicas",
        type=int,
        default=config.MAX_REPLICAS,
        help=f"autoscaling upper bound (default {config.MAX_REPLICAS})",
    )
    p.add_argument(
        "--cpus-per-replica",
        type=float,
        default=config.CPUS_PER_REPLICA,
        help="CPUs of each replica, its torch threads on CPU "
        f"(default {config.CPUS_PER_REPLICA:g})",
    )
    p.add_argument(
        "--gpus-per-replica",
        type=float,
        default=config.GPUS_PER_REPLICA,
        help=f"GPUs of each replica, e.g. 1 or 0.5 (default {config.GPUS_PER_REPLICA:g}: CPU)",
    )
    add_precision_option(p, "each replica's model")
    add_storage_options(p)
    return p


def wait_for_stop() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM (ray job stop, Kubernetes)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def check_port(host: str, port: int) -> None:
    """Refuse (ValueError) an address Serve's HTTP proxy could not listen on: bind a socket to
    (host, port) as the proxy does (IPv6 for a host with a colon, no SO_REUSEADDR), then
    release it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is in use (by another server): give another --port"
            ) from None
        raise ValueError(
            f"cannot listen on port {port} of {host} ({e.strerror or e}): give another --host "
            "(an address of this machine) or --port"
        ) from None


def job(args: argparse.Namespace) -> int:
    require_extra("serve")
    from ray import serve

    from pipeline.serve.app import APP_NAME, TileAppArgs, prepare_serve, run_serve, serve_running

    options = vars(args)
    host, port = options.pop("host"), options.pop("port")
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    prepared = prepare_serve(TileAppArgs(**options))
    with ray_session():
        if not serve_running():  # else its proxy may hold the port already: wait_healthy checks
            check_port(host, port)
        try:
            verbose = logger.isEnabledFor(logging.DEBUG)
            url = run_serve(prepared, host, port, quiet=not verbose)
            logger.info(
                "serve: ready at %s (viewer: %s/view/, API: %s/openapi.json)",
                url,
                url,
                url,
                extra={"summary": True},
            )
            wait_for_stop()
        finally:
            logger.info("serve: stopping")
            serve.delete(APP_NAME)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
