"""Losing the node that holds the model actors, mid-job, on a real two-node local Ray cluster
(ray.cluster_utils.Cluster): the job still finishes with every image exactly once in the
manifest, or, if Ray gives up, it ends with an exit status and a re-run finishes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_tree
from PIL import Image
from ray.cluster_utils import Cluster

from jobs.common import CRASHED, SOME_FAILED
from pipeline.manifest import list_parts
from pipeline.storage import Location

pytestmark = pytest.mark.slow

N = 24
JOB_TIMEOUT = 75  # seconds per run: the test stays under ~3 minutes


def tadm(cluster: Cluster, *argv: str) -> subprocess.Popen:
    """`tadm ARGV` as a process of its own on `cluster` (as `ray job submit` runs it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv],
        env=os.environ | {"RAY_ADDRESS": cluster.address},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(job: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = job.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        job.kill()
        _, err = job.communicate()
        pytest.fail(f"the job did not end within {JOB_TIMEOUT} s: {err[-3000:]}")
    return job.returncode, err


def test_losing_the_model_actors_node_mid_job(tiny_model: str, tmp_path: Path):
    src = write_tree(
        tmp_path / "src",
        {f"img{i:02d}.png": encode(Image.fromarray(photo(96, 64, i)), "PNG") for i in range(N)},
    )
    dst = tmp_path / "archive"
    args = ["archive", str(src), str(dst), "--model", tiny_model, "--batch-size", "1"]
    # The head has no CPU, so the model actor (one CPU) can only run on a worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        doomed = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        job = tadm(cluster, *args, "--workers", "1")
        manifest = Location.parse(str(dst / "manifest"))
        deadline = time.monotonic() + JOB_TIMEOUT
        while not list_parts(manifest) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before the node could be lost"
        cluster.add_node(num_cpus=1)  # where the actor can come back
        cluster.remove_node(doomed, allow_graceful=False)
        rc, err = finish(job)
        if rc != 0:  # Ray gave up on the lost objects: the job says so, a re-run finishes
            assert rc in (SOME_FAILED, CRASHED), err[-3000:]
            rc, err = finish(tadm(cluster, *args))
        assert rc == 0, err[-3000:]
    finally:
        cluster.shutdown()

    table = pq.read_table(dst / "manifest")  # any Parquet reader: one row per image
    assert sorted(table["rel_path"].to_pylist()) == [f"img{i:02d}.png" for i in range(N)]
    assert set(table["status"].to_pylist()) <= {"ok", "skipped"}
    assert len(list((dst / "lr").glob("*.png"))) == N
