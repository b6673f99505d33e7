"""What every subcommand shares (jobs/common.py): -q/-v, missing extras."""

from __future__ import annotations

import logging
import sys

import pytest

from jobs.cli import main
from jobs.common import Parser, run_job, setup_logging


@pytest.mark.parametrize(
    ("command", "argv", "module"),
    [
        ("bench", ["--out", "{tmp}"], "matplotlib"),
        ("serve", ["{tmp}"], "fastapi"),
        ("train", ["--stage", "dfrm", "--data", "{tmp}", "--out", "{tmp}"], "pydantic"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    command, argv, module, monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # as when it is not installed
    assert main([command, *(a.format(tmp=tmp_path) for a in argv)]) == 2
    assert capsys.readouterr().err == (
        f"tadm {command}: error: needs the {command} extra ({module} not installed): "
        f"pip install 'tadm-archive[{command}]'\n"
    )
    assert main([command, "--help"]) == 0  # --help needs no extra
    assert "usage: tadm " in capsys.readouterr().out


def log_lines(capsys, argv: list[str]) -> list[str]:
    """The stderr lines of a job that logs one debug, info, summary and warning line."""
    logger = logging.getLogger("tadm")

    def job(args) -> int:
        assert not hasattr(args, "quiet") and not hasattr(args, "verbose")
        logger.debug("debug")
        logger.info("progress")
        logger.info("summary", extra={"summary": True})
        logger.warning("warning")
        return 0

    assert run_job("tadm x", Parser(prog="tadm x"), argv, job) == 0
    return capsys.readouterr().err.splitlines()


def test_quiet_keeps_errors_and_the_summary_verbose_adds_debug(capsys):
    try:
        assert log_lines(capsys, []) == ["progress", "summary", "warning"]
        assert log_lines(capsys, ["-q"]) == ["summary", "warning"]
        assert log_lines(capsys, ["--verbose"]) == ["debug", "progress", "summary", "warning"]
        assert log_lines(capsys, []) == ["progress", "summary", "warning"]
    finally:
        setup_logging()


def test_quiet_and_verbose_exclude_each_other(capsys):
    assert run_job("tadm x", Parser(prog="tadm x"), ["-q", "-v"], lambda args: 0) == 2
    assert "not allowed with argument" in capsys.readouterr().err
