"""tadm bench --quick end to end: a real (small) run of every section but the sd21 cost, on
tiny generated images with tiny random models; results.json, results.md and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import encode, photo, save_tiny, write_tree
from PIL import Image

from jobs.bench.cli import main
from jobs.bench.matching import TOLERANCE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_run(ray_cluster: str, tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bench")
    x32 = save_tiny(root / "tiny-x32", seed=2, scale=32)
    images = write_tree(
        root / "images",
        {
            "a.png": encode(Image.fromarray(photo(192, 180, 30)), "PNG"),
            "sub/b.jpg": encode(Image.fromarray(photo(96, 80, 31)), "JPEG", quality=95),
        },
    )
    out = root / "out"
    argv = ["--quick", "--images", str(images), "--model", tiny_model, x32, "--out", str(out)]
    argv += ["--sections", "rd", "throughput", "memory", "--memory-sizes", "64x64,96x80,128x64"]
    argv += ["--threads", "1"]
    assert main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def test_writes_results_tables_and_plots(bench_run):
    out, results = bench_run
    for name in [
        "results.md",
        "rd_psnr.png",
        "rd_ssim.png",
        "rd_ms_ssim.png",
        "rd_gmsd.png",
        "memory.png",
    ]:
        assert (out / name).stat().st_size > 0, name
    assert sorted(results["plots"]) == sorted(p.name for p in out.glob("*.png"))
    md = (out / "results.md").read_text()
    for heading in ["Rate-distortion", "tadm-x16", "tadm-x32", "Throughput", "Peak memory"]:
        assert heading in md
    assert "cost: not in --sections" in md
    assert [i["name"] for i in results["images"]] == ["a.png", "sub/b.jpg"]
    machine = results["machine"]
    assert machine["cpu"] and machine["torch"] and machine["ram_bytes"] > 0


def test_rd_points_are_sane(bench_run):
    _, results = bench_run
    rows = results["rd"]["rows"]
    tadm = {(r["image"], r["method"]): r for r in rows if r["kind"] == "tadm"}
    assert len(tadm) == 4  # 2 images x 2 models
    for r in rows:
        if r["kind"] != "vae-bound":
            assert r["bpp"] > 0, r
        assert math.isfinite(r["psnr"]) and 0 < r["psnr"] < 100, r
        assert -1 <= r["ssim"] <= 1
        assert 0 <= r["gmsd"] < 1
    big = [r for r in rows if r["image"] == "a.png"]
    assert all(r["ms_ssim"] is not None for r in big)  # 192x180 >= 176 px
    assert all(r["ms_ssim"] is None for r in rows if r["image"] == "sub/b.jpg")
    # The 16x LR has 4x the pixels of the 32x one.
    for image in ("a.png", "sub/b.jpg"):
        assert tadm[(image, "tadm-x16")]["bpp"] > tadm[(image, "tadm-x32")]["bpp"]
    lossless = [r for r in rows if r["kind"] == "tadm-lr"]
    assert lossless
    for r in lossless:
        base = tadm[(r["image"], r["target"])]
        assert r["psnr"] == base["psnr"]  # the same pixels restore the same image


def test_codecs_are_matched_to_tadm_bpp_or_flagged(bench_run):
    _, results = bench_run
    rows = results["rd"]["rows"]
    tadm = {(r["image"], r["method"]): r["bpp"] for r in rows if r["kind"] == "tadm"}
    matched = [r for r in rows if r["kind"] == "matched"]
    codecs = {c["name"] for c in results["codecs"]["lossy"]}
    assert len(matched) == len(tadm) * len(codecs)
    for r in matched:
        target = tadm[(r["image"], r["target"])]
        assert r["deviation"] == pytest.approx(r["bpp"] / target - 1)
        if r["status"] == "matched":
            assert abs(r["bpp"] / target - 1) <= TOLERANCE
        elif r["status"] == "floor":
            assert r["bpp"] > target * (1 + TOLERANCE)
        else:
            assert r["status"] == "nearest"
            lo, hi = r["bracket"]
            assert lo <= target < hi
    sweep = [r for r in results["rd"]["summary"] if r["kind"] == "sweep"]
    assert {r["method"] for r in sweep} == codecs


def test_throughput_compares_ray_and_the_bare_loop(bench_run):
    _, results = bench_run
    t = results["throughput"]
    assert t["images"] == 2 and t["megapixels"] == pytest.approx((192 * 180 + 96 * 80) / 1e6)
    names = [r["name"] for r in t["runs"]]
    assert names == [
        "bare loop",
        "Ray, --workers 1",
        "Ray, --workers 2",
        "bare loop",
        "bare restore loop",
    ]
    assert all(r["seconds"] > 0 for r in t["runs"])
    bare = [r for r in t["runs"] if r["name"].startswith("bare")]
    assert all(0 < r["loop_s"] < r["seconds"] for r in bare)  # its own program: start-up too
    assert t["ray_vs_bare_loop_only"] < t["ray_vs_bare"]
    assert t["default_workers"] == 2  # one actor per core of the tests' 2-CPU Ray
    assert t["ray_vs_bare"] > 0 and t["ray_w1_vs_bare"] > 0 and t["workers_2_vs_1"] > 0
    assert t["archive_mp_per_s"] > 0 and t["restore_mp_per_s"] > 0


def test_memory_points_and_fit(bench_run):
    _, results = bench_run
    m = results["memory"]
    assert [(p["width"], p["height"]) for p in m["points"]] == [(64, 64), (96, 80), (128, 64)]
    for p in m["points"]:
        assert p["peak_rss"] >= p["baseline_rss"] > 0
        assert p["hr_float_buffer"] == 12 * p["width"] * p["height"]
        assert p["tiles"] >= 1
    assert set(m["fit"]) == {"fixed_bytes", "bytes_per_pixel", "hr_float_images"}
    sizes = [(64, 64), (96, 80), (128, 64)]
    kinds = [(k, w, h) for w, h in sizes for k in ("restore", "archive")]
    assert [(p["kind"], p["width"], p["height"]) for p in m["stages"]] == kinds
    for p in m["stages"]:
        steps = {"restore": {"read", "model", "psnr_ssim", "write"}, "archive": {"decode", "model"}}
        assert set(p["steps"]) == steps[p["kind"]]
        assert p["increase"] == max(s["increase"] for s in p["steps"].values())
        assert p["bytes_per_pixel"] == pytest.approx(p["increase"] / (p["width"] * p["height"]))


def test_bad_usage_is_exit_2(tmp_path: Path, capsys):
    assert (
        main(["--out", str(tmp_path), "--images", str(tmp_path / "none"), "--model", "nope"]) == 2
    )
    assert "nope" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--memory-sizes", "12by4"]) == 2
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--sections", "cost", "--precision", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    (tmp_path / "a-file").write_bytes(b"")
    assert main(["--out", str(tmp_path / "a-file"), "--sections", "plan"]) == 2
    assert capsys.readouterr().err.strip().endswith("is a file: give a folder for the results")
