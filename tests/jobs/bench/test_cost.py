"""The cost probe: one image through a preset in a fresh process, per-stage seconds and memory.
The tiny preset runs the same code path as sd21 (which the full benchmark runs)."""

from __future__ import annotations

from jobs.bench.cost import PAPER, TIMED_METHODS, run_cost
from jobs.bench.report import cost_section


def test_cost_of_each_stage_in_a_fresh_process():
    result = run_cost(size=160, device="cpu", precision="fp32", threads=1, preset="tiny")
    assert [s["stage"] for s in result["stages"]] == list(TIMED_METHODS)
    # 160 px -> a 40x40 latent: one tile, so every stage runs once.
    assert result["latent_tiles"] == 1
    for stage in result["stages"]:
        assert stage["calls"] == 1
        assert stage["seconds"] > 0
        assert stage["peak_memory"] > 0
    assert result["total_seconds"] >= sum(s["seconds"] for s in result["stages"]) * 0.99
    assert result["peak_memory"] == max(s["peak_memory"] for s in result["stages"])
    assert result["parameters"] > 0 and result["torch_threads"] == 1
    assert result["paper"] == PAPER
    table = "\n".join(cost_section(result))
    for stage in TIMED_METHODS:
        assert f"| {stage} | 1 |" in table
    assert "| RTX 3090 (paper, Table 3) |  | 0.711 | 2.598 |" in table
