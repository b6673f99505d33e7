"""tadm bench's plan section on a small synthetic inventory: the plan skips the finished half,
the compaction leaves one row per image, and results.md reports both."""

from __future__ import annotations

import json

from jobs.bench.cli import main


def test_plan_section_measures_plan_and_compaction(tmp_path):
    out = tmp_path / "out"
    argv = ["--quick", "--sections", "plan", "--plan-sizes", "3000", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    plan, compact = results["plan"]["rows"]
    assert (plan["step"], plan["n"], plan["skipped"], plan["todo"]) == ("plan", 3000, 1500, 1500)
    assert (compact["step"], compact["rows"], compact["parts_before"]) == ("compact", 3000, 1)
    for row in (plan, compact):
        assert row["peak_rss_bytes"] >= results["plan"]["baseline_rss"] > 0
        assert row["rows_per_s"] > 0
    md = (out / "results.md").read_text()
    assert "## Planning and manifest merge" in md and "| plan | 3,000 |" in md
