"""The `tadm` command: `tadm SUBCOMMAND ...` runs jobs.<subcommand>.main(argv)."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import NoReturn

from jobs.common import USAGE_ERROR
from tadm import __version__

# Subcommand -> (module with main(argv), one-line help). A new subcommand is one entry here
# and one module under jobs/.
SUBCOMMANDS = {
    "archive": ("jobs.archive", "shrink every image under SRC into an archive at DST"),
    "restore": ("jobs.restore", "restore an archive's images (or one region) into DST"),
    "inspect": ("jobs.inspect", "summarise an archive's manifest"),
    "report": ("jobs.report", "write a static HTML report of an archive"),
    "serve": ("jobs.serve", "serve HR tiles of an archive over HTTP"),
    "train": ("jobs.train", "train a TADM model"),
    "bench": ("jobs.bench.cli", "benchmark the archive pipeline"),
}


def usage() -> str:
    lines = [
        "usage: tadm SUBCOMMAND [ARGS ...]   (tadm SUBCOMMAND --help for its options)",
        "       tadm --version",
        "",
    ]
    lines += [f"  {name:8s} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # no subcommand: bad usage
        print(usage(), file=sys.stderr)
        return USAGE_ERROR
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"tadm {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"tadm: error: unknown subcommand {name!r} (one of {', '.join(SUBCOMMANDS)})",
            file=sys.stderr,
        )
        return USAGE_ERROR
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(
            f"tadm: error: {name} is not part of this build ({module_name} is missing)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    return module.main(rest)


def run() -> NoReturn:
    """The `tadm` program: main, then exit with its status. A signal that comes once the job
    is done, while Python tears down (Ray's and torch's exit hooks: a second or more), ends
    the process at once with that status, not as killed by the signal."""
    status = main()  # jobs flush what they print to stdout before they return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: os._exit(status))
    with contextlib.suppress(BrokenPipeError):  # what --help or --version printed
        if sys.stdout:  # None when the process started with it closed
            sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    run()
