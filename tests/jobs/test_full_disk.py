"""A DST whose disk fills up mid-job: a real tmpfs of a few blocks, mounted in a mount
namespace of the job's own (`unshare -m`, as root), so the job and the local Ray it starts see
the small disk and nothing else does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import can_hide_a_folder, encode, photo, write_tree
from PIL import Image


@pytest.mark.slow
@pytest.mark.skipif(not can_hide_a_folder(), reason="needs `unshare -m` (root)")
def test_a_dst_that_fills_up_stops_the_job_at_once_and_a_rerun_finishes(tiny_model, tmp_path):
    """The disk fills after a few LR files: the job stops (exit 3) saying so, within a job's
    time rather than after the manifest writer's patience (600 s), leaving no temporary file;
    with room made, a re-run archives the rest and the check before deleting SRC passes."""
    src = write_tree(
        tmp_path / "src",
        {f"img{i:02d}.png": encode(Image.fromarray(photo(640, 480, i)), "PNG") for i in range(12)},
    )
    dst, out = tmp_path / "dst", tmp_path / "out"
    dst.mkdir()
    out.mkdir()
    cli = f"{sys.executable} -m jobs.cli"
    archive = f"{cli} archive {src} {dst} --model {tiny_model} --json"
    script = (
        f"mount -t tmpfs -o size=24k tmpfs {dst} || exit 9\n"
        f"{archive} > {out}/1.json 2> {out}/1.err; echo $? > {out}/1.rc\n"
        f"find {dst} -name '.*.tmp' > {out}/temps\n"
        f"mount -o remount,size=50m {dst}\n"
        f"{archive} > {out}/2.json 2> {out}/2.err; echo $? > {out}/2.rc\n"
        f"{cli} inspect {dst} --check --source {src} > {out}/3.out 2>&1; echo $? > {out}/3.rc\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=420,  # the first run alone took 804 s when the writer waited on the full disk
    )
    assert done.returncode == 0, done

    def read(name: str) -> str:
        return (out / name).read_text()

    first_err = read("1.err")
    assert read("1.rc").strip() == "3", first_err[-3000:]
    assert re.search(
        r"tadm archive: crashed in a Ray task: DstFull: .*No space left on device.*: DST's disk "
        r"takes no more files: free space on it, or make it writable, and run the job again, "
        r"which does the images not done yet \(traceback in .*\)",
        first_err,
    ), first_err[-3000:]
    assert read("temps") == ""
    assert read("2.rc").strip() == "0", read("2.err")[-3000:]
    counts = json.loads(read("2.json"))["counts"]
    assert counts["ok"] + counts["skipped"] == 12 and counts["ok"] > 0
    assert read("3.rc").strip() == "0", read("3.out")
