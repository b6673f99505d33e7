"""What every subcommand shares (jobs/common.py): -q/-v, missing extras, and exit statuses a
scheduler can act on, through the `tadm` CLI with a real local Ray: 0, 1 (some images failed),
2 (usage), 3 (the job crashed), 130 (interrupted), --max-errors, and which failures a re-run
retries (error_kind, --retry-errors)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import bad_images, cli_env, encode, photo, run_cli, write_tree
from PIL import Image

import pipeline.job as job_module
from jobs.cli import main
from jobs.common import (
    CRASHED,
    INTERRUPTED,
    RAY_TASK_ERRORS,
    SOME_FAILED,
    USAGE_ERROR,
    Parser,
    crashed,
    ray_session,
    run_job,
    run_plan,
    scrub,
    setup_logging,
    unreachable,
)
from pipeline.format import ARCHIVE_SCHEMA
from pipeline.manifest import list_parts, read_manifest
from pipeline.storage import Location
from pipeline.tally import TallyingWriter


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


def test_an_interrupted_command_without_a_manifest_says_only_that(capsys):
    def job(args) -> int:
        raise KeyboardInterrupt

    try:
        assert run_job("tadm x", Parser(prog="tadm x"), [], job) == INTERRUPTED
    finally:
        setup_logging()
    assert capsys.readouterr().err.strip() == "tadm x: interrupted"


def test_an_interrupt_before_the_first_image_still_gives_scripts_their_json_alone(tmp_path, capfd):
    """SIGTERM while SRC is listed (hours at millions of images) or Ray starts: --json prints
    an object saying nothing was done, and the job exits 130. What else is written to stdout
    meanwhile goes to stderr: Ray prints lines it forwards from its processes there (an actor
    killed at the end of an interrupted job, say)."""

    def listing() -> None:
        # Written to the file descriptor, as any print is in the tadm process (pytest
        # captures a print in this one before it reaches there).
        os.write(1, b"(raylet) Task MapWorker.submit failed\n")
        raise KeyboardInterrupt("signal SIGTERM")

    def job(args) -> int:
        return run_plan(listing, True, "archive", str(tmp_path / "a"), {})

    try:
        assert run_job("tadm archive", Parser(prog="tadm archive"), [], job) == INTERRUPTED
    finally:
        setup_logging()
    out, err = capfd.readouterr()
    result = json.loads(out)
    assert (result["job"], result["images"], result["counts"]["ok"]) == ("archive", 0, 0)
    assert result["interrupted"] is True and result["exit_code"] == INTERRUPTED
    assert result["manifest"] == str(tmp_path / "a" / "manifest")
    assert "(raylet) Task MapWorker.submit failed\n" in err
    print("stdout is stdout again")
    assert capfd.readouterr().out == "stdout is stdout again\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_whose_interrupt_a_library_swallowed_still_stops_the_job(sig, tmp_path, capsys):
    def prepare() -> object:
        # As an optional import inside a bare `except:` while torch or Ray load.
        with contextlib.suppress(BaseException):
            signal.raise_signal(sig)
        return object()  # never run: the interrupt comes back first

    def job(args) -> int:
        return run_plan(prepare, True, "restore", str(tmp_path), {})

    try:
        assert run_job("tadm restore", Parser(prog="tadm restore"), [], job) == INTERRUPTED
    finally:
        setup_logging()
    assert json.loads(capsys.readouterr().out)["interrupted"] is True


def test_quiet_and_verbose_exclude_each_other(capsys):
    assert run_job("tadm x", Parser(prog="tadm x"), ["-q", "-v"], lambda args: 0) == 2
    assert "not allowed with argument" in capsys.readouterr().err


# ---- exit statuses ---------------------------------------------------------------------------


def manifest_rows(root: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(root / "manifest")), ARCHIVE_SCHEMA)
    return {} if table is None else {row["rel_path"]: row for row in table.to_pylist()}


def pngs(n: int, size: tuple[int, int] = (96, 64), prefix: str = "img") -> dict[str, bytes]:
    return {
        f"{prefix}{i:02d}.png": encode(Image.fromarray(photo(*size, i)), "PNG") for i in range(n)
    }


def test_a_job_that_crashes_exits_3_with_one_line_and_a_log(
    ray_cluster, small_photos, tiny_model, tmp_path, capsys, monkeypatch
):
    """DST cannot be read as the job starts (the disk gave out): not an image's failure but
    the job's. The log, only its user's to read, shows no secret of the command line or the
    environment."""

    def gave_out(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(job_module, "stale_temps", gave_out)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-SEKRIT")
    options = {"key": "option-SEKRIT", "client_kwargs": {"aws_session_token": "SEKRIT\\/"}}
    argv = ("archive", small_photos, tmp_path / "archive", "--model", tiny_model)
    assert run_cli(*argv, "--storage-options", json.dumps(options)) == CRASHED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.fullmatch(r"tadm archive: crashed: (\w+): .* \(traceback in (.+\.log)\)", last)
    assert match, last
    assert match[1] == "OSError"
    log = Path(match[2]).read_text()
    assert log.startswith("tadm archive ") and "Traceback (most recent call last)" in log
    assert match[1] in log
    assert '--storage-options {"key": "***", "client_kwargs": {"aws_session_token": "***"}}' in log
    assert "SEKRIT" not in log
    assert Path(match[2]).stat().st_mode & 0o777 == 0o600


def test_a_short_secret_is_hidden_where_it_stands_whole_not_inside_words():
    hidden = {"x", "u", "SECRETzzz123"}
    text = "unexpected argument at http://u:SECRETzzz123@127.0.0.1 for key x, x/y"
    assert (
        scrub(text, hidden) == "unexpected argument at http://***:***@127.0.0.1 for key ***, ***/y"
    )


def test_s3_out_of_reach_is_a_configuration_error(tmp_path, capsys, monkeypatch):
    """No credentials, or no S3 endpoint where it is said to be: exit 2, one line saying what
    to check, not a crash."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert run_cli("inspect", "s3://bucket/archive") == USAGE_ERROR
    assert capsys.readouterr().err == (
        "tadm inspect: error: storage cannot be reached: NoCredentialsError: Unable to locate "
        "credentials; check the endpoint (AWS_ENDPOINT_URL, or endpoint_url in "
        "--storage-options) and the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or --storage-options)\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-TEST")
    closed = socket.socket()  # a port nothing listens on
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    argv = ("report", "s3://bucket/archive", tmp_path / "report")
    assert run_cli(*argv, "--storage-options", json.dumps(options)) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith(
        "tadm report: error: storage cannot be reached: EndpointConnectionError: Could not "
        f'connect to the endpoint URL: "http://127.0.0.1:{port}/bucket'
    ), err


def test_only_a_connection_never_made_is_storage_out_of_reach():
    """No credentials or no endpoint: the configuration (exit 2). A response cut short or a
    server error after every retry, once connected, is no configuration problem (pass 19: a
    truncated body said "check the endpoint and the credentials")."""
    import aiohttp
    import botocore.exceptions as boto

    reach = boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    for e in (reach, boto.ConnectTimeoutError(endpoint_url="x"), boto.NoCredentialsError()):
        assert unreachable(e), e
    connected = (
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        boto.ReadTimeoutError(endpoint_url="x"),
        boto.ClientError({"Error": {"Code": "InternalError"}}, "PutObject"),
    )
    for e in connected:
        assert not unreachable(e), e


def test_a_crash_in_a_ray_task_names_the_tasks_own_exception(ray_cluster, capsys):
    import ray

    @ray.remote
    def stage() -> None:
        raise KeyError("the cause")

    try:
        ray.get(stage.remote())
    except Exception as e:  # RayTaskError, its first line "ray::stage() (pid=..." in colour
        assert crashed("tadm archive", [], e) == CRASHED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tadm archive: crashed in a Ray task: KeyError: 'the cause' (")


@pytest.mark.parametrize("chained", [False, True])
def test_a_crash_in_a_ray_data_stage_names_the_stages_own_exception(ray_cluster, capsys, chained):
    """Ray Data keeps the stage's exception only as text, behind a UserCodeException; one
    raised from another (DstFull from the OSError of a full disk) is named, not its cause."""
    import ray

    def stage(batch: dict) -> dict:
        if not chained:
            raise KeyError("the cause")
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            raise KeyError("the cause") from e

    try:
        ray.data.range(1).map_batches(stage).take_all()
    except Exception as e:
        assert crashed("tadm archive", [], e) == CRASHED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tadm archive: crashed in a Ray task: KeyError: 'the cause' (")
    assert "\x1b" not in last


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_exits_130_with_the_rows_so_far_and_a_rerun_finishes(
    ray_cluster, tiny_model, tmp_path, sig
):
    n = 32  # large enough that the job is still running when its first manifest part lands
    src = write_tree(tmp_path / "src", pngs(n, (256, 192)))
    dst = tmp_path / "archive"
    args = ["archive", str(src), str(dst), "--model", tiny_model, "--batch-size", "1"]
    log, out = tmp_path / "stderr.log", tmp_path / "stdout.json"
    with log.open("w") as err, out.open("w") as stdout:
        job = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *args, "--json"],
            env=cli_env(ray_cluster),
            stdout=stdout,
            stderr=err,
            # SIGINT as a terminal sends it, also when the suite itself runs in the background
            # (a shell's "&" makes its commands, and so this job, ignore SIGINT).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        manifest = Location.parse(str(dst / "manifest"))
        deadline = time.monotonic() + 600  # a loaded 2-core machine starts a job slowly
        while not list_parts(manifest) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None and list_parts(manifest), "no manifest part while it ran"
        job.send_signal(sig)
        try:
            job.wait(timeout=120)
        finally:
            job.kill()
    stderr = log.read_text()
    assert job.returncode == INTERRUPTED, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert "tadm archive: interrupted;" in lines[-1]
    assert any(line.startswith("archive: ") and ", interrupted, " in line for line in lines)

    before = manifest_rows(dst)
    assert 0 < len(before) < n
    result = json.loads(out.read_text())  # what a script reads: the images done until then
    assert result["interrupted"] is True and result["exit_code"] == INTERRUPTED
    assert result["counts"]["ok"] == len(before) and result["images"] == len(before)
    assert run_cli(*args) == 0
    table = pq.read_table(dst / "manifest")  # any Parquet reader: one row per image
    assert sorted(table["rel_path"].to_pylist()) == sorted(pngs(n))
    assert {row["status"] for row in manifest_rows(dst).values()} <= {"ok", "skipped"}


def test_a_second_signal_while_the_last_rows_are_written_says_they_may_be_missing(
    ray_cluster, tiny_model, tmp_path, capsys, monkeypatch
):
    """The first signal lets the manifest writer write the rows of the images done (here on a
    storage that takes a minute); a second stops the job at once, and its summary and JSON
    say that the manifest may lack rows of images counted, which a re-run does again."""
    closing = tmp_path / "closing"

    class SlowStorage(TallyingWriter):  # the job's writer, not the plan's
        def close(self) -> dict[str, int]:
            closing.touch()
            time.sleep(120)
            return super().close()

    def signals() -> None:
        deadline = time.monotonic() + 600  # a loaded 2-core machine starts a job slowly
        while not any((dst / "lr").glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        while not closing.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    n = 24
    src = write_tree(tmp_path / "src", pngs(n, (256, 192)))
    dst = tmp_path / "archive"
    args = ["archive", src, dst, "--model", tiny_model, "--batch-size", "1"]
    monkeypatch.setattr(job_module, "TallyingWriter", SlowStorage)
    sender = threading.Thread(target=signals, daemon=True)
    sender.start()
    try:
        assert run_cli(*args, "--json") == INTERRUPTED
    finally:
        sender.join(timeout=60)
        setup_logging()
    assert closing.exists()
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "interrupted: writing the manifest rows of the images done (a second" in err
    assert lines[-1].endswith(
        "the manifest keeps the rows written so far, run the same command again to finish the rest"
    )
    assert (
        ", interrupted before the manifest rows of the last images were written (a re-run does "
        "those images again), " in lines[-2]
    )
    result = json.loads(out)
    assert result["interrupted"] is True and result["rows_unwritten"] is True

    monkeypatch.undo()
    assert run_cli(*args) == 0
    assert set(manifest_rows(dst)) == set(pngs(n))


def test_a_manifest_writer_that_dies_is_named_and_a_re_run_finishes(
    ray_cluster, tiny_model, tmp_path, capsys, monkeypatch
):
    """The job's ManifestWriter actor killed (the OOM killer, say) while it holds rows: the
    crash line says which process died and that a re-run does the images again; it does."""

    class DyingWriter(TallyingWriter):  # the job's writer, not the plan's
        def add(self, table) -> None:
            super().add(table)
            os._exit(1)

    src = write_tree(tmp_path / "src", pngs(4, (64, 48)))
    dst = tmp_path / "archive"
    args = ["archive", src, dst, "--model", tiny_model, "--batch-size", "1"]
    monkeypatch.setattr(job_module, "TallyingWriter", DyingWriter)
    assert run_cli(*args) == CRASHED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        "tadm archive: crashed: WriterDied: the manifest writer's process died (the operating "
        "system or Ray killed it, or it crashed): the rows it held of the images done since its "
        "last part are lost; run the same command again, which does those images again ("
    )
    monkeypatch.undo()
    assert run_cli(*args) == 0
    assert set(manifest_rows(dst)) == set(pngs(4, (64, 48)))


def test_max_errors_stops_early_and_keeps_the_rows(ray_cluster, tiny_model, tmp_path, capsys):
    n = 30
    bad = [data for name, data in sorted(bad_images().items()) if name != "bad/too-small.png"]
    src = write_tree(tmp_path / "src", {f"bad{i:02d}.png": bad[i % len(bad)] for i in range(n)})
    dst = tmp_path / "archive"
    args = ["archive", src, dst, "--model", tiny_model, "--batch-size", "1"]
    assert run_cli(*args, "--max-errors", "2") == SOME_FAILED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped early: more than --max-errors 2 images failed" in last
    rows = manifest_rows(dst)
    assert 3 <= len(rows) < n and {r["status"] for r in rows.values()} == {"error"}
    assert f", {n - len(rows)} images not attempted (a re-run does them)" in last, last

    assert run_cli(*args) == SOME_FAILED  # the rest
    assert len(manifest_rows(dst)) == n


def test_an_early_stop_counts_the_bytes_of_every_image_it_shrank(
    ray_cluster, tiny_model, tmp_path, capsys
):
    """Images of batches in flight when --max-errors stops the job are written and recorded:
    the summary counts them, their bytes too."""
    files = pngs(6) | {"bad.png": bad_images()["bad/truncated.png"]}
    src = write_tree(tmp_path / "src", files)
    dst = tmp_path / "archive"
    args = ["archive", src, dst, "--model", tiny_model, "--batch-size", "1", "--json"]
    assert run_cli(*args, "--max-errors", "0") == SOME_FAILED
    out = json.loads(capsys.readouterr().out)
    rows = manifest_rows(dst).values()
    shrunk = [row for row in rows if row["status"] == "ok"]
    assert out["counts"]["ok"] == len(shrunk) and out["counts"]["error"] == 1
    assert out["source_bytes"] == sum(row["source_bytes"] for row in shrunk)
    assert out["lr_bytes"] == sum(row["lr_bytes"] for row in shrunk)


def test_max_errors_must_not_be_negative(small_photos, tmp_path, capsys):
    assert run_cli("archive", small_photos, tmp_path / "x", "--max-errors", "-1") == USAGE_ERROR
    assert "--max-errors must be at least 0, got -1" in capsys.readouterr().err


def test_permanent_failures_are_not_retried_unless_asked(ray_cluster, tiny_model, tmp_path, capsys):
    """A nightly job with one corrupt file exits 1 once, then 0 while nothing new fails."""
    src = write_tree(tmp_path / "src", bad_images() | pngs(2))
    dst = tmp_path / "archive"
    args = ["archive", src, dst, "--model", tiny_model]
    assert run_cli(*args) == SOME_FAILED
    first = manifest_rows(dst)
    assert {first[name]["error_kind"] for name in bad_images()} == {"permanent"}
    assert {first[name]["error_kind"] for name in pngs(2)} == {None}
    capsys.readouterr()

    assert run_cli(*args) == 0
    err = capsys.readouterr().err
    n = len(bad_images())
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"archive: {n + 2} images: 2 skipped, no errors, ")
    assert f", {n} permanent failures of an earlier run not retried (--retry-errors" in last
    second = manifest_rows(dst)
    for name in bad_images():  # still there, still an error, written again as it was
        assert second[name] | {"written_at": None} == first[name] | {"written_at": None}

    # a fixed file (another size) is a new input: retried without being asked
    fixed = encode(Image.fromarray(photo(64, 64, 50)), "PNG")
    (src / "bad/truncated.png").write_bytes(fixed)
    assert run_cli(*args) == 0
    assert manifest_rows(dst)["bad/truncated.png"]["status"] == "ok"
    capsys.readouterr()

    assert run_cli(*args, "--retry-errors") == SOME_FAILED
    err = capsys.readouterr().err
    assert f"archive: {n - 1}/{n - 1} images (100%), {n - 1} errors" in err
    third = manifest_rows(dst)
    for name in set(bad_images()) - {"bad/truncated.png"}:
        assert third[name]["status"] == "error" and third[name]["error_kind"] == "permanent"
        assert third[name]["seconds"] != first[name]["seconds"]  # done again


def test_transient_failures_are_retried(ray_cluster, tiny_model, tmp_path, capsys):
    """An LR that cannot be written (a link to a folder outside DST where its folder should
    be: never written through) fails on every run until the way is clear, then succeeds."""
    src = write_tree(tmp_path / "src", pngs(2) | {"sub/c.png": pngs(1)["img00.png"]})
    dst = tmp_path / "archive"
    (dst / "lr").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (dst / "lr" / "sub").symlink_to(tmp_path / "elsewhere")
    args = ["archive", src, dst, "--model", tiny_model]
    for _ in range(2):
        assert run_cli(*args) == SOME_FAILED
        row = manifest_rows(dst)["sub/c.png"]
        assert row["status"] == "error" and row["error_kind"] == "transient"
        assert row["error"].startswith("cannot write ")
    assert "archive: 1/1 images (100%), 1 error" in capsys.readouterr().err  # retried, alone
    assert not any((tmp_path / "elsewhere").iterdir())

    (dst / "lr" / "sub").unlink()
    assert run_cli(*args) == 0
    assert manifest_rows(dst)["sub/c.png"]["status"] == "ok"
    assert (dst / "lr" / "sub" / "c.png.png").is_file()


def test_a_ray_address_where_nothing_listens_is_a_usage_error_at_once(small_photos, tmp_path):
    """ray.init would wait there for minutes, saying nothing, then crash."""
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["archive", str(small_photos), str(tmp_path / "archive")]
    start = time.monotonic()
    job = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        env=cli_env(f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == USAGE_ERROR, job.stderr[-3000:]
    assert (
        job.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"tadm archive: error: RAY_ADDRESS='127.0.0.1:{port}': no Ray cluster answers there ("
        )
    )
    assert "unset RAY_ADDRESS to run the job on a local Ray" in job.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("verbose", [False, True])
def test_ray_datas_own_lines_on_a_failed_task_only_with_verbose(ray_cluster, verbose, monkeypatch):
    """The job's crash line and its log file say it all; Ray Data's advice is for its users.
    The records are taken where their loggers hand them on: Ray Data's console handler writes
    to the sys.stderr it found when it was made, which under pytest may be an earlier test's."""
    import ray

    monkeypatch.setattr("ray.util.debug._logged", set())  # "Exception occurred" is logged once
    messages = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    def stage(batch: dict) -> dict:
        raise KeyError("the cause")

    keep = Keep()
    loggers = [logging.getLogger(name) for name in RAY_TASK_ERRORS]
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    setup_logging(verbose=verbose)
    for logger in loggers:
        logger.addHandler(keep)
    try:
        with ray_session(), pytest.raises(Exception, match="the cause"):
            ray.data.range(1).map_batches(stage).take_all()
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
        setup_logging()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    said = "\n".join(messages)
    assert ("set DataContext.max_errored_blocks" in said) == verbose, said
    assert ("Exception occurred in user code" in said) == verbose, said
