"""What every subcommand shares: argument parsing, logging, exit codes and the Ray session."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import sys
import warnings
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
    """argparse, with errors on one line: "tadm archive: error: ..." and exit status 2; and
    -q/--quiet, -v/--verbose, which run_job applies (they are not passed on to the job)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        output = self.add_mutually_exclusive_group()
        output.add_argument(
            "-q", "--quiet", action="store_true", help="print only errors and the final summary"
        )
        output.add_argument(
            "-v", "--verbose", action="store_true", help="also debug messages and Ray's own logs"
        )

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


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on stdout, for scripts",
    )


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (pytest swaps it per test)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class QuietFilter(logging.Filter):
    """-q: warnings, errors and the lines logged with extra={"summary": True}."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "summary", False)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Job messages (configuration, progress, summary) go to stderr, one line each; -q keeps
    errors and the summary, -v adds debug messages."""
    logger = logging.getLogger("tadm")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in logger.handlers:
        for f in [f for f in handler.filters if isinstance(f, QuietFilter)]:
            handler.removeFilter(f)
        if quiet:
            handler.addFilter(QuietFilter())


# What Ray prints on every run that a user cannot act on; shown with -v. One line stays: Ray's
# C++ core worker logs "Actor ... has constructor arguments in the object store and
# max_restarts > 0" once per model actor, as Ray Data passes every actor pool's arguments that
# way (github.com/ray-project/ray/issues/57733); only RAY_BACKEND_LOG_LEVEL would hide it, and
# that prints a line of its own in every Ray process.
RAY_NOTICES = (
    # "Token authentication is enabled for this Ray cluster": a local Ray's default
    "ray._private.authentication.authentication_token_setup",
    # "Progress bars disabled": the job logs its own progress
    "ray.data._internal.progress",
)
# Ray Data warns when a task pool may run more tasks than it has blocks (a job of few batches):
# it then runs fewer, which is what the job wants.
TASK_POOL_WARNING = r"The maximum number of concurrent tasks for .* is set to"


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Use the running Ray (a test's, or RAY_ADDRESS's cluster) or start a local one for the
    job; Ray Data's own progress bars are off, the job logs its own progress. Unless -v, Ray
    says only what needs the user (warnings and errors), without the notices above."""
    import ray

    verbose = logging.getLogger("tadm").isEnabledFor(logging.DEBUG)
    for name in RAY_NOTICES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    started = not ray.is_initialized()
    if started:
        # Ray starts its workers at niceness 15, below its own helper processes and the
        # driver; on a small machine the model actors then lose their cores to them. A local
        # Ray runs this job alone: its workers get the default priority (RAY_worker_niceness).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(
            logging_level=logging.INFO if verbose else logging.WARNING, include_dashboard=False
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.filterwarnings("ignore", TASK_POOL_WARNING, UserWarning)
            yield
    finally:
        if started:
            ray.shutdown()


def run_plan(plan: Plan, as_json: bool = False) -> int:
    """Run a prepared archive or restore job (pipeline/job.py) in a Ray session; its exit
    status. With `as_json`, its result as one JSON object on stdout (for scripts)."""
    from pipeline.job import run

    with ray_session():
        result = run(plan)
    if as_json:
        print(json.dumps(result.to_json()))
    return result.exit_code


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
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    del args.quiet, args.verbose
    try:
        return job(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
