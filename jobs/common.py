"""What every subcommand shares: argument parsing, logging, exit codes and the Ray session."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pipeline.job import Plan

USAGE_ERROR = 2  # bad usage or configuration: bad URI, unknown model, no input

# The extras of the package (pyproject.toml) that only some subcommands need: the modules each
# subcommand cannot run without. JPEG XL (imagecodecs, also in bench) is optional: tadm bench
# reports it unavailable.
EXTRAS = {
    "serve": ("fastapi", "starlette", "uvicorn", "pydantic"),  # ray[serve]
    "train": ("pydantic",),  # ray[train]
    "bench": ("matplotlib",),
}


class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: "tadm archive: error: ..." and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def storage_options(text: str) -> dict[str, Any]:
    """--storage-options: a JSON object of s3fs options."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-options",
        type=storage_options,
        default={},
        metavar="JSON",
        help='s3fs options as a JSON object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'; '
        "they win over the AWS_* variables",
    )


def add_job_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """The options of the jobs that pipeline/job.py runs: JobOptions' fields."""
    parser.add_argument(
        "--workers", type=int, help="model actors (default: 1 per GPU, or 1 per core up to 4)"
    )
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per actor (default: 1, or 0)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"images per batch (default {batch_size})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo images an earlier run into DST finished"
    )
    add_storage_options(parser)


def require_extra(extra: str) -> None:
    """ValueError naming the extra to install when a module it brings is missing (a subcommand
    checks before its imports; its --help needs none)."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"needs the {extra} extra ({', '.join(missing)} not installed): "
            f"pip install 'tadm-archive[{extra}]'"
        )


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (pytest swaps it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging() -> None:
    """Job messages (configuration, progress, summary) go to stderr, one line each."""
    logger = logging.getLogger("tadm")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Use the running Ray (a test's, or RAY_ADDRESS's cluster) or start a local one for the
    job; Ray Data's own progress bars are off, the job logs its own progress."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Ray starts its workers at niceness 15, below its own helper processes and the
        # driver; on a small machine the model actors then lose their cores to them. A local
        # Ray runs this job alone: its workers get the default priority (RAY_worker_niceness).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_plan(plan: Plan) -> int:
    """Run a prepared archive or restore job (pipeline/job.py) in a Ray session; its exit
    status."""
    from pipeline.job import run

    with ray_session():
        return run(plan).exit_code


def run_job(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    job: Callable[[argparse.Namespace], int],
) -> int:
    """Parse `argv` and run `job(args)`, which returns the exit status. Bad usage (argparse's
    errors, or a ValueError from the job's checks) prints one line and returns 2."""
    setup_logging()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return job(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
