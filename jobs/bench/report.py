"""results.md: the tables of one benchmark run, from its results.json."""

from __future__ import annotations

import math
from typing import Any

from jobs.bench.metrics import METRICS

GB = 1e9
MB = 1e6


def num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def metric_cells(row: dict[str, Any], metrics: list[str]) -> list[str]:
    return [num(row.get(m), 2 if m == "psnr" else 4) for m in metrics]


def statuses(row: dict[str, Any]) -> str:
    counts = row.get("status") or {}
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def header_section(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    lines = [
        "# tadm bench results",
        "",
        f"`{results['command']}`",
        "",
        f"- date: {m['date']}; commit: {m['commit']}",
        f"- CPU: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
        f"{m['ram_bytes'] / GB:.1f} GB RAM; GPUs: {', '.join(m['gpus']) or 'none'}",
        f"- Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, Pillow {m['pillow']}",
        f"- load average (1 min) at start {m['load_average_1m']:.1f}, at end "
        f"{results['load_average_end']:.1f}, on {m['usable_cores']} cores: other work on the "
        "machine slows every timing",
        f"- mode: {'quick' if results['config']['quick'] else 'full'}; "
        f"torch threads (in-process parts): {results['config']['threads']}",
        "",
    ]
    if results.get("images"):
        lines += ["## Images", "", f"From `{results['config']['images']}`:", ""]
        lines += table(
            ["image", "size", "MP"],
            [
                [i["name"], f"{i['width']}x{i['height']}", f"{i['width'] * i['height'] / 1e6:.2f}"]
                for i in results["images"]
            ],
        )
    if results.get("models"):
        lines += ["## Models", ""]
        lines += table(
            ["label", "model", "model_id", "scale"],
            [
                [c["label"], f"`{c['ref']}`", c["model_id"], str(c["scale"])]
                for c in results["models"]
            ],
        )
    return lines


def rd_section(results: dict[str, Any]) -> list[str]:
    rd, metrics = results["rd"], results["metrics"]["reported"]
    names = [METRICS[m][1] for m in metrics]
    lines = [
        "## Rate-distortion at TADM's bit rates",
        "",
        "Means over the images. bpp = 8 x file bytes / HR pixels. Codecs are matched to TADM's "
        "bpp per image by bisection on their quality; `floor`: the codec's lowest quality still "
        "spends more bits than TADM, so its row is at a higher bpp. Higher is better for PSNR, "
        "SSIM, MS-SSIM; lower for GMSD and LPIPS.",
        "",
    ]
    summary = rd["summary"]
    for target in [r["method"] for r in summary if r["kind"] == "tadm"]:
        tadm = next(r for r in summary if r["kind"] == "tadm" and r["method"] == target)
        scale = target.split("-")[1].split("-")[0]
        rows = [tadm]
        rows += [r for r in summary if r["kind"] == "tadm-lr" and r["target"] == target]
        rows += [r for r in summary if r["kind"] == "bicubic" and r["method"] == f"bicubic-{scale}"]
        rows += [r for r in summary if r["kind"] == "matched" and r["target"] == target]
        rows += [r for r in summary if r["kind"] == "vae-bound" and r["target"] == target]
        cells = []
        for r in rows:
            label = r["method"] + (" (PNG, as archived)" if r["kind"] == "tadm" else "")
            if r["kind"] == "tadm-lr":
                label += " (same pixels)"
            ratio = "" if r["bpp"] is None else f"{r['bpp'] / tadm['bpp']:.2f}"
            cells.append([label, num(r["bpp"], 4), ratio, *metric_cells(r, metrics), statuses(r)])
        lines += [f"### {target}", ""]
        lines += table(["method", "bpp", "bpp / TADM", *names, "match"], cells)
    lines += ["### Curves (codecs over quality)", ""]
    lines += [f"![{METRICS[m][1]}](rd_{m}.png)" for m in metrics] + [""]
    sweep = [r for r in summary if r["kind"] == "sweep"]
    lines += table(
        ["codec", "quality", "bpp", *names],
        [
            [r["method"], num(r["quality"], 1), num(r["bpp"], 4), *metric_cells(r, metrics)]
            for r in sweep
        ],
    )
    lines += ["### Matched points per image", ""]
    per_image = [r for r in rd["rows"] if r["kind"] in ("tadm", "matched")]
    lines += table(
        ["image", "target", "method", "quality", "bpp", "status", *names],
        [
            [
                r["image"],
                r.get("target") or "",
                r["method"],
                num(r.get("quality"), 1),
                num(r["bpp"], 4),
                r.get("status") or "",
                *metric_cells(r, metrics),
            ]
            for r in per_image
        ],
    )
    return lines


def throughput_section(t: dict[str, Any]) -> list[str]:
    lines = [
        "## Throughput (CPU)",
        "",
        f"Model `{t['model']}`, {t['images']} images, {t['megapixels']:.2f} MP in all; "
        f"bare loops with {t['torch_threads']} torch threads (every core, as one --workers 1 "
        "actor), each its own program: its time includes the interpreter's start and imports, "
        "as every Ray model actor's does, and `loop` is its time from the model load on. "
        "Every run includes loading the model; the Ray runs include planning and the manifest. "
        "First LR: seconds until the Ray job wrote its first LR file (start-up plus one batch).",
        "",
    ]
    lines += table(
        ["run", "seconds", "MP/s", "first LR (s)", "loop (s)"],
        [
            [
                r["name"],
                num(r["seconds"], 1),
                num(r["mp_per_s"], 4),
                num(r["first_output_s"], 1) if r.get("first_output_s") is not None else "",
                num(r["loop_s"], 1) if r.get("loop_s") is not None else "",
            ]
            for r in t["runs"]
        ],
    )
    lines += table(
        ["figure", "value"],
        [
            ["archive MP/s (bare loop, mean of both)", num(t["archive_mp_per_s"], 4)],
            ["restore MP/s (bare loop)", num(t["restore_mp_per_s"], 4)],
            [
                f"Ray, default plan (--workers {t.get('default_workers', 1)}) vs bare loop "
                "(throughput ratio; target >= 0.9)",
                num(t["ray_vs_bare"], 2),
            ],
            ["Ray --workers 1 vs bare loop", num(t.get("ray_w1_vs_bare", t["ray_vs_bare"]), 2)],
            [
                "Ray, default plan vs the bare loop from its model load on",
                num(t["ray_vs_bare_loop_only"], 2) if "ray_vs_bare_loop_only" in t else "",
            ],
            ["--workers 2 vs --workers 1 (speed-up)", num(t["workers_2_vs_1"], 2)],
            ["bare loop drift, after vs before", f"{t['bare_drift']:+.1%}"],
        ],
    )
    return lines


def memory_section(m: dict[str, Any]) -> list[str]:
    lines = [
        "## Peak memory of restore (tiled)",
        "",
        f"Model `{m['model']}`, one fresh process per size, torch threads: {m['torch_threads']}. "
        "increase = peak RSS during the restore - RSS before it (model loaded); HR float buffer = "
        "one float32 RGB image of that size.",
        "",
        "![memory](memory.png)",
        "",
    ]
    lines += table(
        [
            "size",
            "MP",
            "tiles",
            "seconds",
            "peak RSS (MB)",
            "increase (MB)",
            "HR float buffer (MB)",
            "increase - fit slope x pixels (MB)",
        ],
        [
            [
                f"{p['width']}x{p['height']}",
                num(p["megapixels"], 2),
                str(p["tiles"]),
                num(p["seconds"], 1),
                num(p["peak_rss"] / MB, 0),
                num(p["increase"] / MB, 0),
                num(p["hr_float_buffer"] / MB, 0),
                num(p["beyond_buffers"] / MB, 0) if "beyond_buffers" in p else "n/a",
            ]
            for p in m["points"]
        ],
    )
    if "fit" in m:
        f = m["fit"]
        lines += [
            f"Fit: increase = {f['fixed_bytes'] / MB:.0f} MB + {f['bytes_per_pixel']:.1f} bytes x "
            f"pixels, i.e. about {f['hr_float_images']:.1f} float32 HR images' worth of buffers "
            "and a fixed working set.",
            "",
        ]
    if m.get("stages"):
        lines += stages_table(m["stages"])
    return lines


def stages_table(stages: list[dict[str, Any]]) -> list[str]:
    """The job stages around the model: each step's peak RSS increase over the loaded model."""
    steps = list(dict.fromkeys(name for p in stages for name in p["steps"]))
    lines = [
        "Job stages on a photo (the sample photos tiled 2 x 2 and resized): restore's read, model "
        "(upscale, uint8, psnr, ssim) and write steps, psnr + ssim alone, and archive --verify's "
        "decode and model steps. Each is the peak RSS increase over the RSS with the model "
        "loaded (MB); bytes per pixel is the largest over the HR pixels.",
        "",
    ]
    return lines + table(
        ["stage", "size", "MP", "seconds", *(f"{s} (MB)" for s in steps), "bytes / HR pixel"],
        [
            [
                p["kind"],
                f"{p['width']}x{p['height']}",
                num(p["megapixels"], 2),
                num(p["seconds"], 1),
                *(num(p["steps"][s]["increase"] / MB, 0) if s in p["steps"] else "" for s in steps),
                num(p["bytes_per_pixel"], 1),
            ]
            for p in stages
        ],
    )


def cost_section(c: dict[str, Any]) -> list[str]:
    paper = c["paper"]
    lines = [
        f"## Cost of the `{c['preset']}` configuration (paper Table 3)",
        "",
        f"One {c['size']}x{c['size']} image, random weights ({c['parameters'] / 1e6:.0f} M "
        f"parameters), x{c['scale']}, on {c['device_name']} ({c['precision']}, torch threads: "
        f"{c['torch_threads']}), through `downscale` then `upscale` with the preset's tiling "
        f"(latent tiles: {c['latent_tiles']}). Memory: {c['memory_kind']}, "
        f"weights included. Building the model took {c['build_seconds']:.0f} s (not counted).",
        "",
    ]
    rows = [
        [s["stage"], str(s["calls"]), num(s["seconds"], 2), num(s["peak_memory"] / GB, 2)]
        for s in c["stages"]
    ]
    rows += [
        ["downscale (archive)", "", num(c["downscale_seconds"], 2), ""],
        ["upscale (restore)", "", num(c["upscale_seconds"], 2), ""],
        ["total", "", num(c["total_seconds"], 2), num(c["peak_memory"] / GB, 2)],
        [paper["device"], "", num(paper["seconds"], 3), num(paper["memory_gb"], 3)],
    ]
    return lines + table(["stage", "calls", "seconds", "peak memory (GB)"], rows)


def plan_section(p: dict[str, Any]) -> list[str]:
    lines = [
        "## Planning and manifest merge (no images)",
        "",
        "A synthetic S3 Inventory (Parquet) of N image keys, half of them finished by an earlier "
        "run: `plan` reads it into buckets and decides the skips against the manifest and the "
        "LR sizes; `compact` merges a manifest of N rows in parts of 10,000 rows. Each step in "
        f"a fresh process; its peak RSS includes the imports ({num(p['baseline_rss'] / GB, 2)} "
        "GB of torch, Ray and pyarrow alone).",
        "",
    ]
    rows = [
        [
            r["step"],
            f"{r['n']:,}",
            num(r["seconds"], 1),
            f"{r['rows_per_s']:,.0f}",
            num(r["peak_rss_bytes"] / GB, 2),
        ]
        for r in p["rows"]
    ]
    return lines + table(["step", "rows", "seconds", "rows/s", "peak RSS (GB)"], rows)


def unavailable_section(results: dict[str, Any]) -> list[str]:
    rd_ran = "rd" not in results["skipped"]  # codecs and metrics matter to the R-D part only
    missing = {
        **(results["codecs"]["unavailable"] if rd_ran else {}),
        **(results["metrics"]["unavailable"] if rd_ran else {}),
        **results["skipped"],
        **{k: f"failed: {v}" for k, v in results.get("failed", {}).items()},
    }
    if not missing:
        return []
    return ["## Not measured", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""]


def markdown(results: dict[str, Any]) -> str:
    lines = header_section(results)
    if "rd" in results:
        lines += rd_section(results)
    if "throughput" in results:
        lines += throughput_section(results["throughput"])
    if "memory" in results:
        lines += memory_section(results["memory"])
    if "cost" in results:
        lines += cost_section(results["cost"])
    if "plan" in results:
        lines += plan_section(results["plan"])
    if "rd" in results:
        lines += ["## Codec settings", ""]
        lines += table(
            ["codec", "library", "settings"],
            [[c["name"], c["library"], c["settings"]] for c in results["codecs"]["lossy"]]
            + [[c["name"], c["library"], "lossless"] for c in results["codecs"]["lossless"]],
        )
    lines += unavailable_section(results)
    return "\n".join(lines)
