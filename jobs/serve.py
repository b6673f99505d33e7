"""tadm serve ARCHIVE: HR tiles of an archive over HTTP, on Ray Serve, until SIGINT or SIGTERM.

GET /healthz, and GET /tile/<rel_path>?x=&y=&w=&h= for a PNG of that HR region.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from jobs.common import Parser, add_storage_options, ray_session, require_extra, run_job
from pipeline.serve.config import ServeConfig

PROG = "tadm serve"
DEFAULTS = ServeConfig(archive="")

logger = logging.getLogger("tadm")


def parser() -> Parser:
    """The arguments, whose dests are ServeConfig's fields."""
    d = DEFAULTS
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("archive", metavar="ARCHIVE", help="archive root: path, file://... or s3://...")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"HTTP port (default {d.port})")
    p.add_argument("--model", help="shipped name, checkpoint folder or URI (default: tiny-xSCALE)")
    p.add_argument(
        "--max-region-pixels",
        type=int,
        default=d.max_region_pixels,
        help=f"refuse larger regions (w*h) with 413 (default {d.max_region_pixels})",
    )
    p.add_argument(
        "--cache-mb",
        type=int,
        default=d.cache_mb,
        help=f"per replica, for each cache: LR images, tile latents, tiles (default {d.cache_mb})",
    )
    p.add_argument(
        "--min-replicas",
        type=int,
        default=d.min_replicas,
        help=f"autoscaling lower bound; 0 frees idle GPUs (default {d.min_replicas})",
    )
    p.add_argument(
        "--max-replicas",
        type=int,
        default=d.max_replicas,
        help=f"autoscaling upper bound (default {d.max_replicas})",
    )
    p.add_argument(
        "--cpus-per-replica",
        type=float,
        default=d.cpus_per_replica,
        help=f"CPUs of each replica, its torch threads on CPU (default {d.cpus_per_replica:g})",
    )
    p.add_argument(
        "--gpus-per-replica",
        type=float,
        default=d.gpus_per_replica,
        help=f"GPUs of each replica, e.g. 1 or 0.5 (default {d.gpus_per_replica:g}: CPU)",
    )
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


def job(args: argparse.Namespace) -> int:
    require_extra("serve")
    from ray import serve

    from pipeline.serve.app import APP_NAME, prepare_serve, run_serve

    prepared = prepare_serve(ServeConfig(**vars(args)))
    with ray_session():
        try:
            url = run_serve(prepared)
            logger.info(
                "serve: ready at %s (GET /healthz, /tile/<rel_path>?x=&y=&w=&h=)",
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
