"""What every subcommand shares: argument parsing, logging, exit codes and the Ray session."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pipeline.job import Plan

# Exit statuses. 0: every image ok or skipped (an earlier run's permanent failures, not retried,
# don't count); SOME_FAILED: the job ran and some images failed (their manifest rows say why).
SOME_FAILED = 1
USAGE_ERROR = 2  # bad usage or configuration: bad URI, unknown model, no input
CRASHED = 3  # the job itself failed: one line on stderr, the traceback in a log file
INTERRUPTED = 130  # SIGINT or SIGTERM (archive, restore: after writing the rows of the images done)
READER_GONE = 141  # stdout's reader closed it (`| head`), as for a command SIGPIPE killed
# What an interrupted archive or restore says (run_job's `interrupted`).
RESUMABLE = (
    "interrupted; the manifest keeps the rows written so far, run the same command again to "
    "finish the rest"
)
# What to check when S3 cannot be reached.
REACH = (
    "check the endpoint (AWS_ENDPOINT_URL, or endpoint_url in --storage-options) and the "
    "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --storage-options)"
)
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the text of its task errors

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
            "-q",
            "--quiet",
            action="store_true",
            help="print only warnings, errors and the final summary",
        )
        output.add_argument(
            "-v", "--verbose", action="store_true", help="also debug messages and Ray's own logs"
        )

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`, else an error naming what is wrong."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def storage_options(text: str) -> dict[str, Any]:
    """--storage-options: a JSON object of options s3fs takes. Errors name the problem, never
    the text, which may hold credentials."""
    from pipeline.storage import check_s3_options

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object {{...}}, got a JSON {type(value).__name__}"
        )
    try:
        check_s3_options(value)
    except ValueError as e:  # argparse would print a ValueError with the text
        raise argparse.ArgumentTypeError(str(e)) from None
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
    add_precision_option(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"images per batch (default {batch_size})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo images an earlier run into DST finished"
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        metavar="N",
        help="stop the job once more than N images failed (exit 1; the rows so far are kept)",
    )
    parser.add_argument(
        "--retry-errors",
        action="store_true",
        help="also retry an earlier run's permanent failures (bad files; by default only "
        "transient ones, I/O and model errors, are retried)",
    )
    add_storage_options(parser)


def add_precision_option(parser: argparse.ArgumentParser, what: str = "the model") -> None:
    from tadm.config import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"what {what} runs in (default: fp16 on a GPU, fp32 on a CPU; fp16 needs a GPU)",
    )


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


def quiet_logging() -> bool:
    """Whether the job runs with -q (setup_logging's QuietFilter on the tadm handler)."""
    handlers = logging.getLogger("tadm").handlers
    return any(isinstance(f, QuietFilter) for h in handlers for f in h.filters)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Job messages (configuration, progress, summary) go to stderr, one line each; -q keeps
    warnings, errors and the summary, -v adds debug messages."""
    logger = logging.getLogger("tadm")
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:  # the first call; a handler someone else added does not replace it
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
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
# What Ray Data logs when a task fails, before the job's own one line and its log file say it
# all: "An exception was raised from a task of operator ... set DataContext.max_errored_blocks"
# (advice for Ray Data's users, not the job's) and "Exception occurred in user code, with the
# abbreviated stack trace below ...". Shown with -v.
RAY_TASK_ERRORS = (
    "ray.data._internal.execution.streaming_executor_state",
    "ray.data.exceptions",
)
# Ray Data warns when a task pool may run more tasks than it has blocks (a job of few batches):
# it then runs fewer, which is what the job wants.
TASK_POOL_WARNING = r"The maximum number of concurrent tasks for .* is set to"


@contextlib.contextmanager
def ray_session(dashboard: bool | None = False) -> Iterator[None]:
    """Use the running Ray (a test's, or RAY_ADDRESS's cluster) or start a local one for the
    job, without its dashboard (which serves Ray's state API) unless asked (None: with it
    when its packages are installed); Ray Data's own progress bars are off, the job logs its
    own progress. Unless -v, Ray says only what needs the user (warnings and errors), without
    the notices and task errors above. A RAY_ADDRESS where nothing answers is a ValueError
    (check_ray_address)."""
    import ray

    verbose = logging.getLogger("tadm").isEnabledFor(logging.DEBUG)
    for name in RAY_NOTICES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    for name in RAY_TASK_ERRORS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.CRITICAL)
    started = not ray.is_initialized()
    if started:
        check_ray_address(os.environ.get("RAY_ADDRESS", ""))
        # Ray starts its workers at niceness 15, below its own helper processes and the
        # driver; on a small machine the model actors then lose their cores to them. A local
        # Ray runs this job alone: its workers get the default priority (RAY_worker_niceness).
        os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            ray.init(
                logging_level=logging.INFO if verbose else logging.WARNING,
                include_dashboard=dashboard,
            )
        except SystemExit as e:  # SIGTERM while Ray starts: its own handler exits so
            if e.code != signal.SIGTERM:
                raise
            raise KeyboardInterrupt("signal SIGTERM") from None
    interrupt_on_signals()  # ray.init sets its own SIGTERM handler, which exits at once
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


RAY_ADDRESS_PROBE_S = 5.0  # how long check_ray_address waits for a connection


def check_ray_address(address: str) -> None:
    """ValueError naming RAY_ADDRESS when it is a host:port that takes no TCP connection within
    RAY_ADDRESS_PROBE_S: ray.init would wait there for minutes, saying nothing. Anything else
    ("auto", "ray://...", no address) is left to ray.init."""
    match = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=RAY_ADDRESS_PROBE_S).close()
    except OSError as e:
        raise ValueError(
            f"RAY_ADDRESS={address!r}: no Ray cluster answers there ({e.strerror or e}): "
            "start the cluster, or check the address it printed (`ray start --head`), or unset "
            "RAY_ADDRESS to run the job on a local Ray"
        ) from None


def run_plan(
    prepare: Callable[[], Plan], as_json: bool, job: str, dst: str, options: dict[str, Any]
) -> int:
    """Prepare an archive or restore job (pipeline/job.py) and run it in a Ray session; its
    exit status. With `as_json`, its result as one JSON object on stdout (for scripts), also
    when SIGINT or SIGTERM stops it: then with what was done until then, none while DST's
    listing ran or Ray started (`job` and `dst`, with its storage `options`, name it)."""
    from pipeline.format import MANIFEST_DIR
    from pipeline.job import Interrupted, JobResult, run
    from pipeline.storage import Location

    start = time.monotonic()
    try:
        with stdout_to_stderr() if as_json and sys.stdout else contextlib.nullcontext():
            plan = prepare()
            check_signalled()
            with ray_session():
                check_signalled()
                result = run(plan)
    except Interrupted as e:
        if as_json:  # what was done until then; run_job says "interrupted" and exits 130
            print(json.dumps(e.result.to_json()), flush=True)
        raise
    except KeyboardInterrupt:
        if as_json:  # before the first image: nothing done
            manifest = Location.parse(dst, options).child(MANIFEST_DIR).uri
            seconds = time.monotonic() - start
            nothing = JobResult(job, {}, manifest, seconds, "", interrupted=True)
            print(json.dumps(nothing.to_json()), flush=True)
        raise
    if as_json:  # flushed: a signal while the process ends must not lose it
        print(json.dumps(result.to_json()), flush=True)
    return result.exit_code


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what is written to this process's stdout (file descriptor 1) to stderr until the
    block ends, so that --json's stdout holds its JSON object alone: Ray prints the lines it
    forwards from its workers and raylet there, and the processes it starts inherit it. Not
    for a process started with stdout closed: descriptor 1 may be a file it opened since."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# The signals a job received. A library that loads with a bare `except:` around an optional
# import (seen while torch and Ray load) can swallow the KeyboardInterrupt a signal raises.
SIGNALLED: list[str] = []


def on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    SIGNALLED.append(name)
    raise KeyboardInterrupt(f"signal {name}")


def check_signalled() -> None:
    """KeyboardInterrupt if the job received a signal whose KeyboardInterrupt was swallowed."""
    if SIGNALLED:
        raise KeyboardInterrupt(f"signal {SIGNALLED[-1]}")


def interrupt_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler stopping the job) interrupt it, and are
    remembered (check_signalled)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not on_signal:
            with contextlib.suppress(ValueError):  # not the main thread: leave it
                signal.signal(signum, on_signal)


def reader_gone() -> bool:
    """Whether stdout's reader is gone: a pipe whose reader closed it (POLLERR), a socket
    whose peer did, or a terminal hung up (POLLHUP)."""
    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def write_crash_log(prog: str, text: str) -> Path:
    """Write `text` to a new file only this user can read, for a crashed job's traceback:
    <temp dir>/tadm-logs/tadm-<command>-<time>-<pid>.log (the job's DST may be what failed), or a
    file of its own in <temp dir> when another user owns that folder."""
    folder = Path(tempfile.gettempdir()) / "tadm-logs"
    name = f"{prog.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{name}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        fd, file = tempfile.mkstemp(prefix=f"tadm-{name}-", suffix=".log")
        path = Path(file)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def hidden_texts(args: argparse.Namespace | None) -> set[str]:
    """The secrets a job's log must not show: those of its --storage-options and of the AWS_*
    variables it reads."""
    from pipeline.storage import s3_options, secrets

    options = getattr(args, "storage_options", None) or {}
    try:
        return secrets(s3_options(options))
    except ValueError:  # a credential given twice, by an option and a variable: hide both
        return secrets(options) | secrets(s3_options({}))


def scrub(text: str, hidden: set[str]) -> str:
    """`text` with each of `hidden`, as it is and as JSON escapes it, replaced by *** where it
    stands whole: not inside a word, so that a short value ("x") neither garbles the text
    ("une***pected") nor shows where it stood."""
    for secret in sorted(hidden, key=len, reverse=True):
        for form in {secret, json.dumps(secret)[1:-1]}:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", "***", text)
    return text


def unreachable(e: BaseException) -> bool:
    """Whether `e`, raised in this process, says S3 cannot be reached with this configuration
    (no credentials, no endpoint there: no connection is made): exit 2, not a crash. A
    failure once connected (a response cut short, a server error after every retry) is a
    crash that names it."""
    import aiohttp
    import botocore.exceptions as boto

    kinds = (
        boto.ConnectionError,  # no endpoint there: refused, timed out, no such host
        boto.NoCredentialsError,
        boto.PartialCredentialsError,
        aiohttp.ClientConnectorError,
    )
    return isinstance(e, kinds) and not raised_in_ray(e)


def raised_in_ray(e: BaseException) -> bool:
    from ray.exceptions import RayError

    return isinstance(e, RayError)


def crashed(prog: str, argv: list[str] | None, e: Exception, hidden: set[str] | None = None) -> int:
    """Write the command and the traceback of `e` to a new log file, the `hidden` texts
    masked, and print one line naming `e` (a Ray task's own exception, for a crash in a task)
    and the file; CRASHED."""
    hidden = hidden or set()
    command = " ".join([prog, *(sys.argv[1:] if argv is None else argv)])
    log = write_crash_log(prog, scrub(f"{command}\n\n{traceback.format_exc()}", hidden))
    name, message, where = type(e).__name__, str(e), ""
    if raised_in_ray(e) and getattr(e, "cause", None) is not None:
        name, message = task_exception(e)
        where = " in a Ray task"
    first_line = ANSI_CODE.sub("", next(iter(message.strip().splitlines()), ""))
    print(
        scrub(f"{prog}: crashed{where}: {name}: {first_line} (traceback in {log})", hidden),
        file=sys.stderr,
    )
    return CRASHED


def task_exception(e: Any) -> tuple[str, str]:
    """The type name and message of the exception a Ray task raised (`e.cause`). Ray Data
    wraps a stage's exception in a UserCodeException that keeps it only as text, in the task's
    traceback: "KeyError: 'x'" before the last "The above exception was the direct cause ...",
    after the exceptions it was raised from, if any."""
    cause = e.cause
    if type(cause).__name__ != "UserCodeException":
        return type(cause).__name__, str(cause)
    chain = ANSI_CODE.sub("", str(e)).split("The above exception was the direct cause")
    text = chain[-2] if len(chain) > 1 else chain[0]
    last = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "")
    match = re.fullmatch(r"([\w.]+): (.*)", last)
    if match is None:
        return type(cause).__name__, str(cause)
    return match[1].rsplit(".", 1)[-1], match[2]


def run_job(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    job: Callable[[argparse.Namespace], int],
    interrupted: str = "interrupted",
) -> int:
    """Parse `argv` and run `job(args)`, which returns the exit status. Bad usage (argparse's
    errors, or a ValueError from the job's checks) prints one line and returns 2; SIGINT or
    SIGTERM prints "<prog>: <interrupted>" and returns 130; any other exception is a crash: one
    line naming it and a log file with the traceback, and 3."""
    setup_logging()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    del args.quiet, args.verbose
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    SIGNALLED.clear()
    interrupt_on_signals()
    try:
        status = job(args)
        if sys.stdout:  # None when the process started with it closed
            sys.stdout.flush()  # a reader gone shows here, not as Python exits
        return status
    except BrokenPipeError as e:
        if not reader_gone():  # a socket's: storage, say
            return crashed(prog, argv, e, hidden_texts(args))
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left unsaid
        return READER_GONE
    except ValueError as e:
        if raised_in_ray(e):  # a stage's own ValueError, re-raised by Ray: not bad usage
            return crashed(prog, argv, e, hidden_texts(args))
        print(f"{prog}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        if unreachable(e):
            message = scrub(f"{type(e).__name__}: {e}", hidden_texts(args))
            print(f"{prog}: error: storage cannot be reached: {message}; {REACH}", file=sys.stderr)
            return USAGE_ERROR
        return crashed(prog, argv, e, hidden_texts(args))
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
