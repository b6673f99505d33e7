"""scripts/gpu_bench.py, the script a lent GPU machine runs unchanged, in its CPU smoke mode: a
machine without Ray, every part, results that resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
# The GPU machine has torch and diffusers but no Ray (and no network): the script must not need it.
WITHOUT_RAY = (
    "import runpy, sys; sys.modules['ray'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
SMOKE = [
    "--device", "cpu", "--preset", "tiny", "--sizes", "128", "--scales", "16",
    "--precisions", "fp32", "bf16", "--tilings", "all", "--tiny-size", "128",
    "--batch", "1", "--repeats", "1", "--threads", "1",
]  # fmt: skip


def run(out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", WITHOUT_RAY, str(ROOT / "scripts/gpu_bench.py")]
    return subprocess.run(
        [*command, *SMOKE, "--out", str(out)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_part_runs_without_ray_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    done = run(out)
    assert done.returncode == 0, done.stderr[-3000:]
    cost = lines(out / "cost.jsonl")
    assert [(r["precision"], r["tiling"]) for r in cost] == [("fp32", "all"), ("bf16", "all")]
    assert all("error" not in r and r["total_seconds"] > 0 for r in cost), cost
    speeds = lines(out / "throughput.jsonl")
    assert len(speeds) == 2 * 2 * 2  # shipped models x precisions x memory formats
    assert all(r["archive_mp_per_s"] > 0 and r["restore_mp_per_s"] > 0 for r in speeds)
    changes = lines(out / "lr.jsonl")
    assert {r["precision"] for r in changes} == {"bf16"} and len(changes) == 2 * 4  # samples/
    assert all(0 <= r["changed_fraction"] <= 1 and r["model_id_kept"] for r in changes)
    readme = (out / "README.md").read_text()
    assert "## Cost, one image" in readme and "## LR pixels changed against fp32" in readme
    assert "--parts" in readme and "True" not in readme.splitlines()[2]  # the command as run

    again = run(out)  # everything measured already: nothing is run again
    assert again.returncode == 0, again.stderr[-3000:]
    assert lines(out / "cost.jsonl") == cost and lines(out / "throughput.jsonl") == speeds
