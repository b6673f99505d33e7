"""The `tadm` command's dispatch: subcommands, help and unknown names."""

from __future__ import annotations

import subprocess
import sys

from jobs.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("archive", "restore", "inspect", "serve", "train", "bench"):
        assert name in SUBCOMMANDS and name in out


def test_no_subcommand_is_bad_usage(capsys):
    assert main([]) == 2


def test_unknown_subcommand_exits_2_with_one_line(capsys):
    assert main(["shrink"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tadm: error: unknown subcommand 'shrink' (one of archive, restore, inspect, report, "
        "serve, train, bench)"
    )


def test_subcommand_help_exits_0(capsys):
    assert main(["archive", "--help"]) == 0
    assert "--gpus-per-worker" in capsys.readouterr().out


def test_console_script_runs_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "restore", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--region" in done.stdout
