"""`tadm inspect` on a hand-written manifest: the numbers it prints."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, PngImagePlugin

import pipeline.buckets as buckets_module
from jobs.common import READER_GONE
from pipeline.decode import decode_image
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA
from pipeline.manifest import ManifestWriter
from pipeline.storage import Location


def write_manifest(archive: Path, rows: list[dict]) -> None:
    writer = ManifestWriter(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    writer.add(rows)
    writer.flush()


def test_counts_bytes_bpp_ratio_and_psnr(tmp_path: Path, capsys):
    common = {"model_id": "abc", "scale": 16}
    write_manifest(
        tmp_path,
        [
            {
                "rel_path": "a",
                "status": "ok",
                "source_bytes": 3000,
                "lr_bytes": 100,
                "bpp": 0.02,
                "psnr": 30.0,
                "ssim": 0.9,
            }
            | common,
            {
                "rel_path": "b",
                "status": "skipped",
                "source_bytes": 1000,
                "lr_bytes": 100,
                "bpp": 0.04,
                "psnr": 20.0,
                "ssim": 0.7,
            }
            | common,
            {"rel_path": "c", "status": "error", "error": "empty file", "source_bytes": 0},
            {"rel_path": "d", "status": "ok", "source_bytes": 0, "precision": "fp16"} | common,
        ],
    )
    assert run_cli("inspect", tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"archive: {tmp_path}",
        "images: 4 (error 1, ok 2, skipped 1)",
        "source bytes: 4,000 (3.9 KiB)",
        "LR bytes: 200 (200 B)",
        "compression ratio: 20.0x",
        "mean bpp: 0.0300",
        "mean psnr: 25.00 dB over 2 images",
        "mean ssim: 0.8000",
        "model abc (x16): 2 images",  # rows written before the precision column
        "model abc (x16, fp16): 1 image",
    ]


@pytest.mark.parametrize("listing", ["--errors", "--kept", "--conversions"])
def test_a_manifest_spilled_by_bucket_reads_as_one_held_whole(
    tmp_path: Path, capsys, monkeypatch, listing: str
):
    """An archive of millions of rows is read a bucket of rel_paths at a time: the figures and
    the lists are those of the whole, the lists in rel_path order."""
    rows = []
    for i in range(60):
        row = {"rel_path": f"d{i % 7}/img{i:02d}.jpg", "status": "ok", "model_id": "abc"}
        row |= {"scale": 16, "source_bytes": 1000 + i, "lr_bytes": 10 + i, "bpp": 0.01 * i}
        row |= {"psnr": 20.0 + i / 3, "ssim": 0.5 + i / 200, "conversion": "RGBA -> RGB"}
        if i % 5 == 0:
            row |= {"status": "error", "error": f"corrupt {i}", "psnr": None}
        if i % 4 == 1:
            row |= {"status": "kept", "kept_uri": f"kept/{i}", "kept_reason": f"why {i}"}
        if i % 3 == 0:
            row["conversion"] = "RGBA -> RGB, alpha dropped"
        rows.append(row)
    rows.append({"rel_path": None, "status": "error", "error": "no name", "conversion": "x"})
    write_manifest(tmp_path, rows[:30])
    write_manifest(tmp_path, rows[30:] + [rows[3] | {"status": "skipped"}])  # a later row
    assert run_cli("inspect", tmp_path, "--json", listing) == 0
    whole = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(buckets_module, "MEMORY_ROWS", 5)
    assert run_cli("inspect", tmp_path, "--json", listing) == 0
    spilled = json.loads(capsys.readouterr().out)
    key = listing.removeprefix("--")
    names = [row["rel_path"] for row in spilled[key]]
    if listing == "--errors":  # the row of a null rel_path last
        assert names.pop() == ""
    assert names == sorted(names) and len(names) > 5
    assert spilled[key] == whole[key]
    assert json.dumps(spilled["counts"]) == json.dumps(whole["counts"])
    assert spilled["counts"] == {"error": 10, "kept": 15, "ok": 35, "skipped": 1}
    assert spilled.pop("mean_psnr") == pytest.approx(whole.pop("mean_psnr"))
    assert spilled.pop("mean_bpp") == pytest.approx(whole.pop("mean_bpp"))
    assert spilled.pop("mean_ssim") == pytest.approx(whole.pop("mean_ssim"))
    assert spilled == whole


def test_without_verify_psnr_is_not_available(tmp_path: Path, capsys):
    write_manifest(
        tmp_path,
        [
            {
                "rel_path": "a",
                "status": "ok",
                "source_bytes": 10,
                "lr_bytes": 5,
                "bpp": 0.1,
                "model_id": "m",
                "scale": 32,
            }
        ],
    )
    assert run_cli("inspect", tmp_path) == 0
    assert "mean psnr: n/a (archived without --verify)" in capsys.readouterr().out


def test_no_manifest_exits_2(tmp_path: Path, capsys):
    assert run_cli("inspect", tmp_path) == 2
    said = f"tadm inspect: error: ARCHIVE {str(tmp_path)!r} has no manifest (no manifest/part-*)"
    assert capsys.readouterr().err == said + "\n"
    (tmp_path / "lr").mkdir()  # the LRs of a job killed before it wrote its first rows
    assert run_cli("inspect", tmp_path, "--check") == 2
    assert capsys.readouterr().err == (
        f"{said}, but outputs: a job stopped before it wrote its first rows; run it again\n"
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_archive_that_is_not_there_says_so(where: str, request, tmp_path: Path, capsys):
    if where == "s3":
        request.getfixturevalue("s3_env")
        uri = "s3://no-such-bucket/archive"
    else:
        uri = str(tmp_path / "nowhere")
    assert run_cli("inspect", uri) == 2
    assert capsys.readouterr().err == f"tadm inspect: error: ARCHIVE {uri!r} does not exist\n"


ROWS = [
    {"rel_path": "a.png", "status": "ok", "source_bytes": 3000, "lr_bytes": 100, "bpp": 0.02}
    | {"model_id": "abc", "scale": 16},
    {"rel_path": "b/c.jpg", "status": "error", "error": "empty file", "source_bytes": 0},
    {"rel_path": "d.png", "status": "error", "error": "cannot identify image file"},
]


def test_errors_lists_failed_images_and_why(tmp_path: Path, capsys):
    write_manifest(tmp_path, ROWS)
    assert run_cli("inspect", tmp_path, "--errors") == 0
    assert capsys.readouterr().out.splitlines() == [
        "b/c.jpg: empty file",
        "d.png: cannot identify image file",
    ]
    hostile = {"rel_path": "new\nline.png", "status": "error", "error": "a\rb"}
    write_manifest(tmp_path / "hostile", [hostile])
    assert run_cli("inspect", tmp_path / "hostile", "--errors") == 0
    assert capsys.readouterr().out == "new\\nline.png: a\\rb\n"  # one line, escaped
    write_manifest(tmp_path / "clean", [ROWS[0]])
    assert run_cli("inspect", tmp_path / "clean", "--errors") == 0
    assert capsys.readouterr().out == "no errors\n"


def test_kept_lists_the_sources_kept_as_they_are_and_why(tmp_path: Path, capsys):
    """Kept by this run or an earlier one (skipped now), and the copy an error row records."""
    rows = ROWS + [
        {
            "rel_path": "text.png",
            "status": "kept",
            "kept_uri": "kept/text.png",
            "kept_reason": "psnr 11.20 dB below --min-psnr 18",
        },
        {
            "rel_path": "logo.png",
            "status": "skipped",
            "kept_uri": "kept/logo.png",
            "kept_reason": "transparent pixels, whose alpha an LR drops",
        },
        {
            "rel_path": "notes.txt",
            "status": "error",
            "kept_uri": "kept/notes.txt",
            "error": "not an image file; the source kept earlier stays at kept/notes.txt",
        },
    ]
    write_manifest(tmp_path, rows)
    assert run_cli("inspect", tmp_path, "--kept") == 0
    assert capsys.readouterr().out.splitlines() == [
        "logo.png: transparent pixels, whose alpha an LR drops",
        "notes.txt: not an image file; the source kept earlier stays at kept/notes.txt",
        "text.png: psnr 11.20 dB below --min-psnr 18",
    ]
    assert run_cli("inspect", tmp_path, "--kept", "--json") == 0
    assert json.loads(capsys.readouterr().out)["kept"][2] == {
        "rel_path": "text.png",
        "kept_reason": "psnr 11.20 dB below --min-psnr 18",
    }
    write_manifest(tmp_path / "none", ROWS)
    assert run_cli("inspect", tmp_path / "none", "--kept") == 0
    assert capsys.readouterr().out == "no source kept as it is\n"


def test_the_lease_of_a_job_that_did_not_finish_is_said(tmp_path: Path, capsys):
    """A job killed mid-run leaves its lease and a manifest without its last images: --check
    passes on what is recorded, and says that a job did not finish."""
    write_manifest(tmp_path, ROWS)
    gone = 2**22 + 1  # above Linux's largest pid_max: no process has it
    record = {"job": "archive", "host": socket.gethostname(), "pid": gone, "token": "t"}
    record |= {"started": "2026-12-07T10:00:00+00:00", "heartbeat": "2026-12-07T10:00:05+00:00"}
    (tmp_path / "manifest" / ".lease.json").write_text(json.dumps(record))
    assert run_cli("inspect", tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"lease: archive on host {socket.gethostname()} pid {gone} started "
        "2026-12-07T10:00:00+00:00 (its process is gone: it stopped before it finished); the "
        "images it has not archived, --source SRC names, and running it again finishes them"
    )
    assert run_cli("inspect", tmp_path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["lease"].startswith("lease: archive on host ")
    (tmp_path / "manifest" / ".lease.json").unlink()  # a job that finished gives it back
    assert run_cli("inspect", tmp_path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["lease"] is None


def test_json_is_one_object_with_the_summary_and_errors(tmp_path: Path, capsys):
    write_manifest(tmp_path, ROWS)
    assert run_cli("inspect", tmp_path, "--json", "--errors") == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    summary = json.loads(out)
    assert summary["archive"] == str(tmp_path)
    assert summary["counts"] == {"ok": 1, "error": 2}
    assert (summary["source_bytes"], summary["lr_bytes"]) == (3000, 100)
    assert summary["compression_ratio"] == 30.0 and summary["mean_psnr"] is None
    assert summary["models"] == {"abc (x16)": 1}
    assert summary["errors"] == [
        {"rel_path": "b/c.jpg", "error": "empty file"},
        {"rel_path": "d.png", "error": "cannot identify image file"},
    ]
    assert run_cli("inspect", tmp_path, "--json") == 0
    assert "errors" not in json.loads(capsys.readouterr().out)


def test_a_hostile_manifest_reaches_the_terminal_escaped_and_json_strict(tmp_path: Path, capsys):
    """A manifest is data: control characters in its model ids and statuses are printed
    escaped, a NaN figure is no figure, and rows without a rel_path or status still print."""
    ok = {"status": "ok", "source_bytes": 1000, "lr_bytes": 10, "scale": 16, "psnr": 20.0}
    rows = [
        ok | {"rel_path": "a.png", "model_id": "\x1b]0;PWNED\x07", "ssim": float("nan")},
        ok | {"rel_path": "b.png", "model_id": "m", "ssim": 0.5, "bpp": float("nan")},
        {"rel_path": "c.png", "status": "\x1b[2Jweird"},
        {"rel_path": None, "status": "error", "error": "no name"},
        {"rel_path": "d.png", "status": None},
    ]
    write_manifest(tmp_path, rows)
    assert run_cli("inspect", tmp_path) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "model \\x1b]0;PWNED\\x07 (x16): 1 image" in out
    assert "\\x1b[2Jweird 1" in out and "None 1" in out
    assert run_cli("inspect", tmp_path, "--json", "--errors") == 0
    summary = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)  # no NaN
    assert summary["mean_ssim"] == 0.5 and summary["mean_bpp"] is None
    assert summary["errors"] == [{"rel_path": "", "error": "no name"}]
    assert run_cli("inspect", tmp_path, "--errors") == 0
    assert capsys.readouterr().out == ": no name\n"


def test_a_restore_output_gives_its_counts_and_errors(tmp_path: Path, capsys):
    """A restore's summary line sends to its DST's manifest rows for why images failed:
    inspect reads that manifest, a restore's, for its counts and --errors; the archive's
    figures and checks are refused there, naming what to give."""
    writer = ManifestWriter(Location.parse(str(tmp_path / "manifest")), RESTORE_SCHEMA)
    failed = {"status": "error", "error_kind": "permanent"}
    writer.add(
        [
            {"rel_path": "a.png", "status": "ok", "output_uri": str(tmp_path / "a.png")},
            {"rel_path": "b.png", "error": "its LR file is corrupt"} | failed,
            {"rel_path": "c.png", "status": "skipped"},
        ]
    )
    writer.flush()
    assert run_cli("inspect", tmp_path) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"restore: {tmp_path}",
        "images: 3 (error 1, ok 1, skipped 1)",
    ]
    assert run_cli("inspect", tmp_path, "--errors") == 0
    assert capsys.readouterr().out == "b.png: its LR file is corrupt\n"
    assert run_cli("inspect", tmp_path, "--errors", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "restore": str(tmp_path),
        "counts": {"error": 1, "ok": 1, "skipped": 1},
        "errors": [{"rel_path": "b.png", "error": "its LR file is corrupt"}],
    }
    assert run_cli("inspect", tmp_path, "--check") == 2
    assert capsys.readouterr().err == (
        f"tadm inspect: error: {tmp_path} is a restore's output (`tadm restore` wrote its "
        "manifest), not an archive: for --check, give the archive's folder (a restore's output "
        "gives its counts and --errors)\n"
    )


def test_kept_files_count_in_the_space_saved(tmp_path: Path, capsys):
    common = {"model_id": "abc", "scale": 16}
    write_manifest(
        tmp_path,
        [
            {"rel_path": "a", "status": "ok", "source_bytes": 3000, "lr_bytes": 100} | common,
            {"rel_path": "b", "status": "kept", "source_bytes": 900, "kept_uri": "k/b"} | common,
            {"rel_path": "c", "status": "skipped", "source_bytes": 100, "kept_uri": "k/c"} | common,
            # failing now, its copy kept by an earlier run: stored too
            {"rel_path": "d", "status": "error", "source_bytes": 50, "kept_uri": "k/d"} | common,
        ],
    )
    assert run_cli("inspect", tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [
        "images: 4 (error 1, kept 1, ok 1, skipped 1)",
        "source bytes: 3,000 (2.9 KiB)",
        "LR bytes: 100 (100 B)",
    ]
    assert out[-3:] == [
        "kept as is: 3 files, 1,050 bytes (1.0 KiB)",
        "archive bytes (LR + kept): 1,150 (1.1 KiB)",
        "space saved: 2,900 (2.8 KiB, 71.6% of 4.0 KiB)",
    ]


def test_an_archive_that_kept_every_file_has_no_lr_figures(tmp_path: Path, capsys):
    row = {"rel_path": "b", "status": "kept", "source_bytes": 900, "kept_uri": "k/b", "psnr": 9.0}
    write_manifest(tmp_path, [row | {"model_id": "abc", "scale": 16}])
    assert run_cli("inspect", tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:7] == [
        "images: 1 (kept 1)",
        "source bytes: 0 (0 B)",
        "LR bytes: 0 (0 B)",
        "compression ratio: n/a",
        "mean bpp: n/a",
        "mean psnr: n/a (no image archived as LR)",
    ]
    assert out[-1] == "space saved: 0 (0 B, 0.0% of 900 B)"


def test_check_reads_back_every_recorded_file(tmp_path: Path, capsys):
    """--check: each LR, kept copy and earlier LR an error row records is read whole and
    compared with the manifest; what is missing or differs is named, and the exit is 1."""
    files = {f"lr/{n}.png": f"LR of {n}".encode() for n in ("good", "edited", "gone", "short")}
    files |= {"kept/notes.txt": b"shot list", "kept/pipe.txt": b"fifo", "lr/old.jpg.png": b"v1"}
    for key, data in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)

    def lr(name: str) -> dict:
        data = files[f"lr/{name}.png"]
        digest = hashlib.sha256(data).hexdigest()
        return {"rel_path": name, "status": "ok", "lr_bytes": len(data), "lr_sha256": digest}

    def kept(name: str) -> dict:
        data = files[f"kept/{name}"]
        digest = hashlib.sha256(data).hexdigest()
        uri = str(tmp_path / "kept" / name)
        return {"rel_path": name, "status": "kept", "source_bytes": len(data)} | {
            "source_sha256": digest,
            "kept_uri": uri,
        }

    rows = [lr(n) for n in ("good", "edited", "gone", "short")]
    rows += [kept("notes.txt"), kept("pipe.txt"), lr("old.jpg") | {"status": "error"}]
    rows += [{"rel_path": "bad.png", "status": "error", "error": "empty file"}]  # no file
    rows += [lr("good") | {"rel_path": "../good", "status": "skipped"}]  # a hostile row
    write_manifest(tmp_path, rows)
    assert run_cli("inspect", tmp_path, "--check") == 1
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "check: 8 files, 58 bytes read: 1 problem",
        '  lr/../good.png: not read: path \'lr/../good.png\' has an empty, "." or ".." '
        "segment: refused, paths must stay in their root",
    ]
    write_manifest(tmp_path, [rows[-1] | {"status": "error", "lr_sha256": None}])  # ignored now
    assert run_cli("inspect", tmp_path, "--check") == 0
    assert (
        capsys.readouterr().out.splitlines()[-1] == "check: 7 files, 58 bytes read: all as recorded"
    )
    # A row written before manifests recorded lr_sha256: its LR is compared by size.
    old = lr("good") | {"rel_path": "old", "lr_sha256": None}
    (tmp_path / "lr/old.png").write_bytes(b"LR of good")
    write_manifest(tmp_path, [old])
    assert run_cli("inspect", tmp_path, "--check") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "check: 8 files, 68 bytes read: all as recorded (1 by size alone: their rows record no "
        "SHA-256)"
    )
    (tmp_path / "lr/old.png").write_bytes(b"LR")
    assert run_cli("inspect", tmp_path, "--check") == 1
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith(
            "  lr/old.png: 2 bytes, not the 10 recorded: remove it, and `tadm archive SRC ARCHIVE`"
        )
    )
    (tmp_path / "lr/old.png").unlink()
    write_manifest(tmp_path, [old | {"lr_bytes": None, "status": "error"}])

    (tmp_path / "lr/edited.png").write_bytes(b"LR of EDITED")
    (tmp_path / "lr/gone.png").unlink()
    (tmp_path / "lr/short.png").write_bytes(b"LR of")
    (tmp_path / "kept/notes.txt").unlink()
    (tmp_path / "kept/pipe.txt").unlink()
    os.mkfifo(tmp_path / "kept/pipe.txt")  # read as it is, it would hang the check
    (tmp_path / "lr/old.jpg.png").write_bytes(b"v2")  # an error row's LR of an earlier run
    assert run_cli("inspect", tmp_path, "--check") == 1
    # Each line says what to do: the archive redoes an image whose LR or kept copy is missing
    # or of another size, and one removed first when it holds other bytes of the same size.
    again = "`tadm archive SRC ARCHIVE` (its options as before) {} while SRC holds the source"
    lr_again = f"{again.format('writes it again')}; or put it back from a copy of the archive"
    kept_again = again.format("copies it again")
    assert capsys.readouterr().out.splitlines()[-7:] == [
        "check: 7 files, 29 bytes read: 6 problems",  # in rel_path order
        "  lr/edited.png: not the bytes recorded (the same size, another SHA-256): remove it, "
        f"and {lr_again}",
        f"  lr/gone.png: missing: {lr_again}",
        "  kept/notes.txt: missing: put it back from a copy of the source; or " + kept_again,
        "  lr/old.jpg.png: not the bytes recorded (the same size, another SHA-256): put it back "
        "from a copy of the archive",
        "  kept/pipe.txt: it is not a regular file: put it back from a copy of the source; or "
        f"remove it, and {kept_again}",
        f"  lr/short.png: 5 bytes, not the 11 recorded: remove it, and {lr_again}",
    ]
    assert run_cli("inspect", tmp_path, "--check", "--json") == 1
    check = json.loads(capsys.readouterr().out)["check"]
    assert (check["files"], check["bytes"], len(check["problems"])) == (7, 29, 6)
    gone = {"rel_path": "gone", "file": "lr/gone.png", "problem": f"missing: {lr_again}"}
    assert check["problems"][1] == gone


def test_check_names_the_files_no_manifest_row_records(tmp_path: Path, capsys):
    """A manifest part lost (moved out, deleted by hand): the LR and kept copy its rows held are
    still under lr/ and kept/, but a restore, which goes by the manifest, does not give them
    back; --check names them, and exits 1. A write's temporary file is no such file."""
    files = {"lr/a.jpg.png": b"LR of a", "lr/b.jpg.png": b"LR of b", "kept/c.txt": b"notes"}
    files |= {f"lr/.d.jpg.png.{'0' * 32}.tmp": b"partial"}
    for key, data in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    data = files["lr/a.jpg.png"]
    digest = hashlib.sha256(data).hexdigest()
    row = {"rel_path": "a.jpg", "status": "ok", "lr_bytes": len(data), "lr_sha256": digest}
    write_manifest(tmp_path, [row])
    assert run_cli("inspect", tmp_path, "--check") == 1
    because = (
        "no manifest row records it (a manifest part lost?), so a restore does not give it "
        "back: archive its source again while SRC holds it"
    )
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "check: 1 file, 7 bytes read: 2 problems (2 of them files no row records)",
        f"  lr/b.jpg.png: {because}",
        f"  kept/c.txt: {because}",
    ]
    assert run_cli("inspect", tmp_path, "--check", "--json") == 1
    check = json.loads(capsys.readouterr().out)["check"]
    assert [p["rel_path"] for p in check["problems"]] == ["b.jpg", "c.txt"]
    assert check["unrecorded"] == 2
    # A job killed after it wrote them, before their rows: its lease says so, and so do they.
    record = {"job": "archive", "host": socket.gethostname(), "pid": 2**22 + 1, "token": "t"}
    record |= {"started": "2026-12-07T10:00:00+00:00", "heartbeat": "2026-12-07T10:00:05+00:00"}
    (tmp_path / "manifest" / ".lease.json").write_text(json.dumps(record))
    assert run_cli("inspect", tmp_path, "--check") == 1
    assert capsys.readouterr().out.splitlines()[-3] == (
        "  lr/b.jpg.png: no manifest row records it yet: the job the lease names wrote it after "
        "its last rows; run that job again (or let it finish)"
    )


def test_model_counts_of_rows_that_read_the_same_add_up(tmp_path: Path, capsys):
    common = {"status": "ok", "model_id": "m1", "scale": 16, "source_bytes": 10, "lr_bytes": 1}
    rows = [{"rel_path": "a", "precision": None}, {"rel_path": "b", "precision": ""}]
    write_manifest(tmp_path, [row | common for row in rows])
    assert run_cli("inspect", tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "model m1 (x16): 2 images"


def test_inspect_with_stdout_closed_from_the_start_is_no_crash(tmp_path: Path):
    write_manifest(tmp_path, [{"rel_path": "a", "status": "error", "error": "empty file"}])
    command = [sys.executable, "-m", "jobs.cli", "inspect", str(tmp_path)]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0
    closed = subprocess.run(
        " ".join(command) + " >&-", shell=True, stderr=subprocess.PIPE, timeout=120
    )
    assert (closed.returncode, closed.stderr) == (0, b"")


def test_a_reader_that_closes_the_pipe_ends_inspect_quietly(tmp_path: Path):
    """`tadm inspect ARCHIVE --errors | head -1`: no crash, no traceback log; the status a
    command SIGPIPE killed would give."""
    error = "x" * 200
    rows = [{"rel_path": f"{i:05d}.png", "status": "error", "error": error} for i in range(2000)]
    write_manifest(tmp_path, rows)
    command = [sys.executable, "-m", "jobs.cli", "inspect", str(tmp_path), "--errors"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert job.stdout.readline() == f"00000.png: {error}\n".encode()
    job.stdout.close()  # as head does, with 400 KB still to come
    assert job.wait(timeout=120) == READER_GONE
    assert job.stderr.read() == b""


def test_a_socket_reader_that_closes_ends_inspect_quietly(tmp_path: Path):
    """stdout a socket (a service reading the command's output) whose peer closes."""
    rows = [
        {"rel_path": f"{i:05d}.png", "status": "error", "error": "x" * 200} for i in range(2000)
    ]
    write_manifest(tmp_path, rows)
    ours, theirs = socket.socketpair()
    command = [sys.executable, "-m", "jobs.cli", "inspect", str(tmp_path), "--errors"]
    job = subprocess.Popen(command, stdout=theirs, stderr=subprocess.PIPE)
    theirs.close()
    assert ours.recv(9) == b"00000.png"
    ours.close()
    assert job.wait(timeout=120) == READER_GONE
    assert job.stderr.read() == b""


def test_source_names_each_file_the_archive_does_not_hold_as_it_is_now(tmp_path: Path, capsys):
    """inspect --source SRC before deleting SRC: a file archived or kept from the same bytes
    (size, modification time) is held; one changed since, failed, never archived (no row, not
    an image, hidden) or not a file the listing could take is named, and the exit status is 1."""
    src, archive = tmp_path / "src", tmp_path / "archive"
    (src / "sub").mkdir(parents=True)
    (src / ".darktable").mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png", "notes.txt", "k.mov", "sub/f.jpg"):
        (src / name).write_bytes(b"x" * 10)
    # Hidden: archive leaves them out, but for --keep-failed, which kept .picasa.ini
    for name in (".hidden.png", ".picasa.ini", ".darktable/a.png.xmp"):
        (src / name).write_bytes(b"x")
    (src / "linked").symlink_to(src / "sub")

    def row(name: str, status: str = "ok", **changes) -> dict:
        stat = os.stat(src / name)
        kept = {"kept_uri": f"{archive}/kept/{name}"} if status == "kept" else {}
        return (
            {
                "rel_path": name,
                "status": status,
                "source_bytes": stat.st_size,
                "source_mtime": stat.st_mtime_ns // 1000,
            }
            | kept
            | changes
        )

    rows = [
        row("a.png"),
        row("b.png", source_bytes=9),
        row("c.png", source_mtime=os.stat(src / "c.png").st_mtime_ns // 1000 - 1),
        row("e.png", "error", error="empty file"),
        row("k.mov", "kept"),
        row(".picasa.ini", "kept"),
        row("sub/f.jpg", "skipped"),
        {"rel_path": "gone.png", "status": "ok", "source_bytes": 3},  # deleted since: fine
    ]
    write_manifest(archive, rows)
    assert run_cli("inspect", archive, "--source", src) == 1
    assert capsys.readouterr().out.splitlines()[-9:] == [
        f"source: {src}: 12 files: 4 archived as they are now, 8 not",
        "  .darktable/a.png.xmp: not archived: hidden file (archive with --keep-failed keeps it)",
        "  .hidden.png: not archived: hidden file (archive with --keep-failed keeps it)",
        "  b.png: changed since it was archived: archive SRC again",
        "  c.png: changed since it was archived: archive SRC again",
        "  d.png: not archived: no manifest row (archive SRC again)",
        "  e.png: failed: empty file",
        "  linked: not archived: symbolic link to a folder, not followed (give its target as "
        "its own SRC)",
        "  notes.txt: not archived: not an image (archive with --keep-failed keeps it)",
    ]
    assert run_cli("inspect", archive, "--source", src, "--json") == 1
    found = json.loads(capsys.readouterr().out)["source"]
    assert (found["files"], found["archived"], len(found["problems"])) == (12, 4, 8)
    assert found["problems"][0] == {
        "rel_path": ".darktable/a.png.xmp",
        "problem": "not archived: hidden file (archive with --keep-failed keeps it)",
    }
    assert found["problems"][5] == {"rel_path": "e.png", "problem": "failed: empty file"}
    for name in ("b.png", "c.png", "d.png", "e.png", "notes.txt", "linked", ".hidden.png"):
        (src / name).unlink()
    (src / ".darktable/a.png.xmp").unlink()
    capsys.readouterr()
    assert run_cli("inspect", archive, "--source", src) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"source: {src}: 4 files: all archived as they are now"
    )
    assert run_cli("inspect", archive, "--source", tmp_path / "nothing") == 2
    assert "holds no files: give the folder ARCHIVE was made from" in capsys.readouterr().err


def test_source_sha256_finds_a_file_rewritten_at_the_same_size_and_time(tmp_path: Path, capsys):
    """`exiftool -P` edits a photo in place and keeps its size and modification time: the skip
    rule cannot see it, --sha256 reads every file the archive holds and does."""
    src, archive = tmp_path / "src", tmp_path / "archive"
    src.mkdir()
    rows = []
    for name in ("a.png", "b.png", "c.png"):
        (src / name).write_bytes(f"pixels of {name}".encode())
        stat = os.stat(src / name)
        rows.append(
            {
                "rel_path": name,
                "status": "ok",
                "source_bytes": stat.st_size,
                "source_mtime": stat.st_mtime_ns // 1000,
                "source_sha256": hashlib.sha256((src / name).read_bytes()).hexdigest(),
            }
        )
    rows[2]["source_sha256"] = None  # a row written before the column: compared by time
    stat = os.stat(src / "b.png")
    (src / "b.png").write_bytes(b"Pixels of b.png")  # Artist=Bobby, in place
    os.utime(src / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    write_manifest(archive, rows)
    assert run_cli("inspect", archive, "--source", src) == 0
    capsys.readouterr()
    assert run_cli("inspect", archive, "--source", src, "--sha256") == 1
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"source: {src}: 3 files: 2 archived as they are now, 1 not (2 compared by SHA-256)",
        "  b.png: changed since it was archived (the same size and time, another SHA-256): "
        "touch it and archive SRC again",
    ]
    assert run_cli("inspect", archive, "--sha256") == 2
    assert "--sha256 compares the files under --source SRC: give --source" in (
        capsys.readouterr().err
    )


def test_check_names_a_file_whose_read_is_cut_short_and_goes_on(
    tmp_path: Path, monkeypatch, capsys
):
    """The S3 client's own error mid-read (aiohttp's ClientPayloadError, no OSError) is that
    file's problem, not the end of the check (pass 19)."""
    import aiohttp

    import pipeline.fixity as fixity

    data = {name: f"LR of {name}".encode() for name in ("a", "b")}
    rows = []
    for name, lr in data.items():
        (tmp_path / "lr").mkdir(exist_ok=True)
        (tmp_path / "lr" / f"{name}.png").write_bytes(lr)
        digest = hashlib.sha256(lr).hexdigest()
        rows.append({"rel_path": name, "status": "ok", "lr_bytes": len(lr), "lr_sha256": digest})
    write_manifest(tmp_path, rows)
    opened = fixity.open_file

    def cut_short(fs, path):
        if path.endswith("a.png"):
            raise aiohttp.ClientPayloadError("Response payload is not completed")
        return opened(fs, path)

    monkeypatch.setattr(fixity, "open_file", cut_short)
    assert run_cli("inspect", tmp_path, "--check") == 1
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "check: 2 files, 7 bytes read: 1 problem",
        "  lr/a.png: cannot be read: ClientPayloadError: Response payload is not completed: "
        "run the check again once the storage reads it",
    ]


def test_a_kept_file_whose_copy_leaves_something_out_is_counted_and_listed(tmp_path: Path, capsys):
    copy = "not carried: S3 user metadata, S3 object tags (a local file holds none)"
    rows = [{"rel_path": "clip.mp4", "status": "kept", "conversion": copy, "kept_uri": "k"}]
    write_manifest(tmp_path, rows)
    assert run_cli("inspect", tmp_path, "--json", "--conversions") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["with_losses"] == 1 and summary["losses"] == {"metadata not carried": 1}
    assert summary["conversions"] == [{"rel_path": "clip.mp4", "conversion": copy}]


def test_images_archived_with_something_not_carried_are_counted_and_listed(tmp_path: Path, capsys):
    """What an archived image's conversion notes as not carried (alpha, 16-bit, metadata...)
    is counted by kind, the pre-deletion check included, and --conversions lists those
    images; an orientation applied or a conversion to RGB loses nothing, and a kept source
    or an error row is no archived image. The exit status stays 0: the archive recorded it."""

    def noted(img: Image.Image, image_format: str = "PNG", **kwargs) -> str | None:
        """The conversion decoding notes for `img` saved in `image_format`."""
        out = io.BytesIO()
        img.save(out, image_format, **kwargs)
        return decode_image(out.getvalue()).conversion

    author = PngImagePlugin.PngInfo()
    author.add_text("Author", "Ada")
    exif = Image.Exif()
    exif[0x0112] = 6
    conversions = {
        "alpha.png": noted(Image.new("RGBA", (32, 32)), pnginfo=author),
        "gray16.png": noted(Image.fromarray(np.full((32, 32), 9, np.uint16))),
        "gray.png": noted(Image.new("L", (32, 32))),
        "turned.jpg": noted(Image.new("RGB", (32, 16)), "JPEG", exif=exif.tobytes()),
    }
    conversions |= {
        "rgba16.png": "16-bit RGBA -> RGB, alpha dropped",
        "int32.tif": "I 32-bit grayscale -> 8-bit RGB",
        "cmyk.jpg": "CMYK -> sRGB through ICC profile 'U.S. Web Coated (SWOP) v2'",
        "camera.mpo": "MPO: first of 3 images archived, the others not; not carried: JPEG APP11",
        "latin1.jpg": "XMP not UTF-8: its invalid bytes carried as U+FFFD",
        "badexif.jpg": "EXIF unreadable (not a TIFF structure), dropped",
        "gray-icc.png": "GRAY ICC profile of RGB pixels dropped",
        "small.jpg": "thumbnails dropped: EXIF 12804 bytes",
        "long.jpg": "EXIF thumbnail kept: other EXIF data lies after it",
    }
    assert conversions["alpha.png"] == "RGBA -> RGB, alpha dropped; not carried: PNG text 'Author'"
    assert conversions["gray16.png"] == "I;16 16-bit grayscale -> 8-bit RGB"
    src, archive = tmp_path / "src", tmp_path / "archive"
    src.mkdir()
    rows = []
    for name, conversion in conversions.items():
        (src / name).write_bytes(b"x")
        stat = os.stat(src / name)
        rows.append(
            {
                "rel_path": name,
                "status": "ok",
                "conversion": conversion,
                "source_bytes": 1,
                "source_mtime": stat.st_mtime_ns // 1000,
            }
        )
    alpha = "RGBA -> RGB, alpha dropped"
    rows += [  # a kept row of an older manifest: decoding's notes, of pixels never archived
        {"rel_path": "floor.png", "status": "kept", "conversion": alpha, "kept_uri": "k"}
        | {"source_bytes": 1},
        {"rel_path": "bad.png", "status": "error", "conversion": alpha, "error": "too small"},
    ]
    write_manifest(archive, rows)
    (archive / "kept").mkdir()
    (archive / "kept/floor.png").write_bytes(b"x")
    line = (
        "conversion: 9 images archived with something not carried (alpha dropped 2, 16-bit "
        "to 8-bit 3, metadata not carried 2, unreadable EXIF dropped 1, ICC profile dropped 1, "
        "XMP not UTF-8 1, MPO's other images 1, thumbnails dropped 1): --conversions lists them"
    )
    assert run_cli("inspect", archive) == 0
    assert line in capsys.readouterr().out.splitlines()
    assert run_cli("inspect", archive, "--check", "--source", src) == 0
    out = capsys.readouterr().out.splitlines()
    assert line in out and out[-1] == f"source: {src}: 13 files: all archived as they are now"
    assert run_cli("inspect", archive, "--conversions") == 0
    lossy = ["alpha.png", "gray16.png", "rgba16.png", "int32.tif", "camera.mpo", "latin1.jpg"]
    lossy += ["badexif.jpg", "gray-icc.png", "small.jpg"]
    assert capsys.readouterr().out.splitlines() == [
        f"{name}: {conversions[name]}" for name in sorted(lossy)
    ]
    assert run_cli("inspect", archive, "--json", "--conversions") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["with_losses"] == 9 and summary["losses"]["16-bit to 8-bit"] == 3
    assert list(summary["losses"]) == [
        "alpha dropped",
        "16-bit to 8-bit",
        "metadata not carried",
        "unreadable EXIF dropped",
        "ICC profile dropped",
        "XMP not UTF-8",
        "MPO's other images",
        "thumbnails dropped",
    ]
    first = {"rel_path": "alpha.png", "conversion": conversions["alpha.png"]}
    assert summary["conversions"][0] == first
    assert len(summary["conversions"]) == 9
    write_manifest(archive, [row | {"conversion": None} for row in rows])
    assert run_cli("inspect", archive) == 0
    assert not any(line.startswith("conversion") for line in capsys.readouterr().out.splitlines())
    assert run_cli("inspect", archive, "--conversions") == 0
    assert capsys.readouterr().out == "no image archived with something not carried\n"
    assert run_cli("inspect", archive, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["with_losses"], summary["losses"]) == (0, {})
    assert run_cli("inspect", archive, "--errors", "--conversions") == 2
    assert "not allowed with argument" in capsys.readouterr().err
