"""The `tadm` command's dispatch: subcommands, help, --version and unknown names; every
--help answers without importing torch, Ray or diffusers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

import tadm
from jobs.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("archive", "restore", "inspect", "serve", "train", "bench"):
        assert name in SUBCOMMANDS and name in out


def test_no_subcommand_is_bad_usage(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: tadm SUBCOMMAND")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag, capsys):
    assert main([flag]) == 0
    assert capsys.readouterr().out == f"tadm {tadm.__version__}\n"
    assert tadm.__version__.count(".") == 2


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


def test_a_signal_while_the_process_ends_keeps_the_jobs_status():
    """Once a job is done, Python's exit hooks run for a second or more (Ray's, torch's): a
    SIGTERM then ends the process with the job's status, not as killed by it (143)."""
    program = (
        "import atexit, sys, time\n"
        "import jobs.cli\n"
        "jobs.cli.main = lambda: 1  # a job that had some images fail\n"
        "atexit.register(lambda: [time.sleep(0.1) for _ in range(600)])  # a slow hook, after\n"
        "atexit.register(print, 'exiting', flush=True)  # this one (the last runs first)\n"
        "jobs.cli.run()\n"
    )
    job = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline() == "exiting\n"
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=30) == 1
    finally:
        job.kill()


HEAVY = ("torch", "ray", "diffusers", "transformers", "peft")


def test_help_imports_no_torch_ray_or_diffusers():
    """`tadm` and every `tadm SUBCOMMAND --help` build their parsers from light modules: the
    modules loaded in a fresh interpreter include none of HEAVY."""
    script = (
        "import contextlib, io, json, sys\n"
        "from jobs.cli import SUBCOMMANDS, main\n"
        "codes = {}\n"
        "for argv in [['--help'], ['--version']] + [[n, '--help'] for n in SUBCOMMANDS]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes[' '.join(argv)] = main(argv)\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'codes': codes, 'loaded': loaded}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["codes"].values()) == {0}, result["codes"]
    assert len(result["codes"]) == len(SUBCOMMANDS) + 2
    assert "numpy" in result["loaded"]  # the check sees what was imported
    assert [m for m in HEAVY if m in result["loaded"]] == []
