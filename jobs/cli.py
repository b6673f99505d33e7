"""The `tadm` command: `tadm SUBCOMMAND ...` runs jobs.<subcommand>.main(argv)."""

from __future__ import annotations

import importlib
import sys

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


if __name__ == "__main__":
    sys.exit(main())
