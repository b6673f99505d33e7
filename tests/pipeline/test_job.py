"""The job driver's reporting (pipeline/job.py): progress lines, the summary line, --json."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter

import pyarrow as pa
import pytest

from pipeline.format import ARCHIVE_SCHEMA
from pipeline.job import JobResult, Progress, as_recorded, carried_failures, duration
from pipeline.manifest import read_manifest, to_table
from pipeline.storage import Location
from pipeline.tally import Tally, TallyingWriter, summarize


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (12.34, "12.3s"), (192, "3m12s"), (3599.4, "59m59s"), (7500, "2h05m")],
)
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_progress_has_percent_rate_and_an_eta_at_the_rate_after_warm_up(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("pipeline.job.time.monotonic", lambda: now[0])
    progress = Progress("archive", total=400)
    now[0] = 130.0
    progress.update(10, 1)  # 30 s of actors starting and warming up: no rate to go by yet
    assert progress.line() == "archive: 10/400 images (2%), 1 error, 0.33 images/s"
    now[0] = 140.0
    progress.update(20, 0)  # 2 images/s since the first came back, 370 left
    assert progress.line() == "archive: 30/400 images (7%), 1 error, 0.75 images/s, ETA 3m05s"
    now[0] = 325.0
    progress.update(370, 0)  # done: no ETA
    assert progress.line() == "archive: 400/400 images (100%), 1 error, 1.78 images/s"


def test_tally_counts_statuses_and_bytes_of_images_done():
    """The driver sees the workers' rows as summaries by status (summarize), and adds them."""
    tally = Tally()
    rows = pa.table(
        {
            "status": ["ok", "skipped", "error", "ok"],
            "source_bytes": [1000, 500, 7, None],
            "lr_bytes": [10, 5, None, None],
        }
    )
    summary = summarize(rows.slice(0, 3))
    assert sorted(summary["status"].tolist()) == ["error", "ok", "skipped"]
    tally.add(summary)
    tally.add(summarize(pa.table({"status": ["ok"]})))  # a restore row: no bytes
    assert type(tally.source_bytes) is int and type(tally.lr_bytes) is int  # JSON-ready
    assert (tally.counts, tally.source_bytes, tally.lr_bytes) == (
        {"ok": 2, "skipped": 1, "error": 1},
        1500,
        15,
    )
    tally.add(summarize(rows.slice(3)))  # an ok row without sizes adds nothing
    assert (tally.counts["ok"], tally.source_bytes) == (3, 1500)


def test_tally_counts_kept_files_apart_from_the_bytes_shrunk():
    tally = Tally()
    rows = pa.table(
        {
            "status": ["ok", "skipped", "kept"],
            "source_bytes": [1000, 500, 300],
            "lr_bytes": [10, None, None],
            "kept_uri": [None, "/a/kept/x", "/a/kept/y"],
        }
    )
    tally.add(summarize(rows))
    assert (tally.source_bytes, tally.lr_bytes, tally.kept_bytes) == (1000, 10, 800)


def test_tally_counts_files_archived_with_a_loss():
    """An ok image whose conversion notes a loss counts, and so does a kept file whose copy
    leaves something out; a lossless conversion and a skipped image (an earlier run's) do
    not."""
    tally = Tally()
    rows = pa.table(
        {
            "status": ["ok", "ok", "ok", "kept", "skipped"],
            "source_bytes": [10, 10, 10, 10, 10],
            "lr_bytes": [1, 1, 1, None, 1],
            "kept_uri": [None, None, None, "/a/kept/x", None],
            "conversion": [
                "RGBA -> RGB, alpha dropped",
                "P -> RGB",
                None,
                "not carried: S3 user metadata (a local file holds none)",  # the copy's
                "16-bit -> 8-bit",
            ],
        }
    )
    tally.add(summarize(rows))
    assert tally.with_losses == 2
    tally.add(summarize(rows.slice(0, 1)))
    assert tally.with_losses == 3


def test_tally_counts_images_restored_that_were_archived_with_a_loss():
    """A restore counts what its rows say archiving did, not what it did itself."""
    tally = Tally()
    conversions = [
        "when archived: RGBA -> RGB, alpha dropped",
        "ICC 'Display P3' -> sRGB; when archived: 16-bit RGB -> 8-bit RGB",
        "when archived: L -> RGB",
        "not carried: S3 user metadata, S3 object tags (in the LR only: a local file holds none)",
        None,
    ]
    tally.add(summarize(pa.table({"status": ["ok"] * 5, "conversion": conversions})))
    assert tally.with_losses == 2


def test_the_jobs_writer_tallies_every_row_it_writes_and_none_it_refuses(tmp_path):
    """After an early stop, the rows of batches in flight that reach the writer before it
    closes are written: the job's figures are those the writer tallied."""
    writer = TallyingWriter(Location.parse(str(tmp_path / "manifest")), ARCHIVE_SCHEMA)
    rows = [
        {"rel_path": "a.png", "status": "ok", "source_bytes": 100, "lr_bytes": 4},
        {"rel_path": "b.png", "status": "error", "source_bytes": 7},
    ]
    assert writer.add(rows)
    assert writer.add(to_table([rows[0] | {"rel_path": "c.png"}], ARCHIVE_SCHEMA))
    tally = writer.close_tallied()
    assert not writer.add([rows[0] | {"rel_path": "late.png"}])  # refused: no row, not counted
    assert (tally.counts, tally.source_bytes, tally.lr_bytes) == ({"ok": 2, "error": 1}, 200, 8)
    planned = Tally(Counter({"skipped": 3}), source_bytes=50, lr_bytes=2)
    both = planned + tally
    assert (both.counts, both.source_bytes, both.lr_bytes) == (
        {"skipped": 3, "ok": 2, "error": 1},
        250,
        10,
    )
    assert planned.counts == {"skipped": 3}
    written = read_manifest(Location.parse(str(tmp_path / "manifest")), ARCHIVE_SCHEMA)
    assert sorted(written["rel_path"].to_pylist()) == ["a.png", "b.png", "c.png"]


def test_carried_failures_are_errors_read_back_from_the_manifest():
    """An earlier run's permanent failures come back from the manifest with their written_at;
    the error rows a plan makes now have none yet, and count as this run's."""
    rows = pa.table(
        {
            "status": ["error", "error", "skipped", "ok"],
            "written_at": pa.array([1, None, 2, None], pa.timestamp("us", tz="UTC")),
        }
    )
    assert carried_failures(rows).to_pylist() == [True, False, False, False]


def test_rows_as_recorded_are_those_the_manifest_holds_but_for_when_they_were_written():
    at = pa.timestamp("us", tz="UTC")
    earlier = pa.table(
        {
            "rel_path": ["a", "b", "c", "d"],
            "status": ["skipped", "skipped", "error", "skipped"],
            "psnr": [30.0, None, None, 31.0],
            "written_at": pa.array([1, 2, 3, 4], at),
        }
    )
    rows = pa.table(
        {
            "rel_path": ["d", "c", "b", "a", "e"],
            "status": ["skipped", "error", "skipped", "skipped", "skipped"],
            "psnr": [31.5, None, None, 30.0, 30.0],
            "written_at": pa.array([None, 9, None, None, None], at),
        }
    )
    # d's psnr differs, e has no row yet; nulls match nulls, written_at does not count
    assert as_recorded(rows, earlier).to_pylist() == [False, True, True, True, False]
    assert as_recorded(rows, earlier.slice(0, 0)).to_pylist() == [False] * 5


def archive_result(**counts: int) -> JobResult:
    return JobResult(
        job="archive",
        counts=counts,
        manifest="/a/manifest",
        seconds=192.4,
        errors_hint="see `tadm inspect /a --errors`",
        source_bytes=5410,
        lr_bytes=100,
    )


def test_summary_line_in_words():
    assert archive_result(ok=118, error=2).line() == (
        "archive: 120 images: 118 ok, 2 errors (see `tadm inspect /a --errors`), "
        "54.1x smaller, 3m12s"
    )
    assert archive_result(ok=3, skipped=1).line() == (
        "archive: 4 images: 3 ok, 1 skipped, no errors, 54.1x smaller, 3m12s"
    )
    kept_notes = dataclasses.replace(archive_result(ok=3, kept=2), other_files=1)
    assert kept_notes.line().startswith("archive: 4 images and 1 other file: 3 ok, 2 kept,")
    assert (kept_notes.to_json()["images"], kept_notes.to_json()["other_files"]) == (4, 1)


def test_tally_counts_the_rows_of_files_that_are_not_images():
    rows = pa.table(
        {
            "rel_path": ["a.jpg", "notes.txt", ".picasa.ini", "b/c.PNG", None],
            "status": ["ok", "kept", "kept", "error", "error"],
            "kept_uri": [None, "/a/kept/notes.txt", "/a/kept/.picasa.ini", None, None],
            "source_bytes": [100, 2, 3, None, None],
        }
    )
    tally = Tally()
    tally.add(summarize(rows))
    assert tally.other_files == 2 and tally.counts == {"ok": 1, "kept": 2, "error": 2}
    assert (tally.source_bytes, tally.kept_bytes) == (100, 5)
    assert archive_result(ok=3, kept=2).line() == (
        "archive: 5 images: 3 ok, 2 kept, no errors, 54.1x smaller, 3m12s"
    )
    # Kept files take as much room as their sources: the ratio with them is said too.
    with_kept = dataclasses.replace(archive_result(ok=3, kept=2), kept_bytes=900)
    assert with_kept.line() == (
        "archive: 5 images: 3 ok, 2 kept, no errors, 54.1x smaller (6.3x with kept files), 3m12s"
    )
    assert archive_result(kept=2).exit_code == 0
    # Images archived with a loss their conversion notes are counted, and where to read them.
    lossy = dataclasses.replace(
        archive_result(ok=3),
        with_losses=2,
        losses_hint="see `tadm inspect /a --conversions`",
    )
    assert lossy.line() == (
        "archive: 3 images: 3 ok, no errors, 2 archived with something not carried "
        "(see `tadm inspect /a --conversions`), 54.1x smaller, 3m12s"
    )
    restore = JobResult("restore", {"ok": 2}, "/r/manifest", 3.0, "their rows in /r say why")
    assert restore.line() == "restore: 2 images: 2 ok, no errors, 3.0s"


def test_json_has_counts_bytes_ratio_exit_code_and_manifest():
    out = json.loads(json.dumps(archive_result(ok=118, error=2).to_json()))
    assert out == {
        "job": "archive",
        "images": 120,
        "other_files": 0,
        "counts": {"ok": 118, "kept": 0, "skipped": 0, "error": 2},
        "source_bytes": 5410,
        "lr_bytes": 100,
        "kept_bytes": None,
        "compression_ratio": 54.1,
        "with_losses": None,
        "seconds": 192.4,
        "permanent_not_retried": 0,
        "not_attempted": None,
        "interrupted": False,
        "rows_unwritten": False,
        "exit_code": 1,
        "manifest": "/a/manifest",
    }
    assert archive_result(ok=1).exit_code == 0


def test_an_interrupted_job_says_so_and_exits_130():
    result = JobResult("restore", {"ok": 2, "error": 1}, "/r/manifest", 3.0, "see /r")
    result = dataclasses.replace(result, interrupted=True)
    assert result.exit_code == 130
    assert result.line() == "restore: 3 images: 2 ok, 1 error (see /r), interrupted, 3.0s"
    assert result.to_json()["interrupted"] is True and result.to_json()["exit_code"] == 130
    # A second signal stopped it while it wrote the manifest rows of the images done.
    unwritten = dataclasses.replace(result, rows_unwritten=True)
    assert unwritten.line() == (
        "restore: 3 images: 2 ok, 1 error (see /r), interrupted before the manifest rows of the "
        "last images were written (a re-run does those images again), 3.0s"
    )
    assert unwritten.to_json()["rows_unwritten"] is True


def test_earlier_permanent_failures_are_counted_apart_and_exit_0():
    result = JobResult("restore", {"skipped": 2}, "/r/manifest", 3.0, "see /r", permanent=3)
    assert result.exit_code == 0
    assert result.line() == (
        "restore: 5 images: 2 skipped, no errors, 3 permanent failures of an earlier run not "
        "retried (--retry-errors retries them), 3.0s"
    )
    assert result.to_json()["images"] == 5 and result.to_json()["permanent_not_retried"] == 3


def test_stopped_early_says_what_was_not_attempted():
    result = JobResult(
        "restore",
        {"ok": 1, "error": 3},
        "/r/manifest",
        3.0,
        "see /r",
        not_attempted=6,
        max_errors=2,
    )
    assert result.exit_code == 1
    assert result.line() == (
        "restore: 4 images: 1 ok, 3 errors (see /r), stopped early: more than --max-errors 2 "
        "images failed, 6 images not attempted (a re-run does them), 3.0s"
    )
    # Every image was in a batch in flight when it stopped: none is left to say.
    all_attempted = dataclasses.replace(result, not_attempted=0, max_errors=0)
    assert all_attempted.line() == (
        "restore: 4 images: 1 ok, 3 errors (see /r), more than --max-errors 0 images failed, 3.0s"
    )


def test_progress_logs_on_the_tadm_logger(caplog):
    with caplog.at_level(logging.INFO, logger="tadm"):
        logging.getLogger("tadm").propagate = True
        try:
            Progress("restore", total=1).update(1, 0)
        finally:
            logging.getLogger("tadm").propagate = False
    assert caplog.messages[-1].startswith("restore: 1/1 images (100%), 0 errors, ")
