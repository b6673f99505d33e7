"""Summary tables of evaluate_checkpoint.py outputs on the unseen photos (this folder's README).

Usage: python summarize.py eval-tiny-x16.txt eval-tiny-x32.txt sources.csv > summary.md
"""

import csv
import json
import statistics
import sys


def load(path, names):
    """The JSON line of an evaluate_checkpoint.py output; or, for a run still going, the per-image
    lines of its progress log (stderr of /tmp/eval_progress.py: row n is the n-th of the sorted
    image names)."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.startswith("{")]
    if lines and "rows" in lines[-1]:
        result = lines[-1]
        return result, {k: v for k, v in result["rows"].items() if k != "mean"}
    scale = 32 if "x32" in path else 16
    model_id = "7c0b5aa6244135fd" if scale == 32 else "dbef7297fdab21b6"
    result = {"scale": scale, "model_id": model_id}
    keys = (
        "psnr",
        "ssim",
        "bicubic_psnr",
        "bicubic_ssim",
        "bpp",
        "bicubic_bpp",
        "thumbnail_psnr",
        "vae_psnr",
        "vae_ssim",
    )
    return result, {names[r["n"] - 1]: {k: r[k] for k in keys} for r in lines}


def main(x16, x32, sources):
    with open(sources) as f:
        src = {r["image"]: r for r in csv.DictReader(f)}
    names = sorted(src)
    runs = [load(x16, names), load(x32, names)]
    print("## Summary\n")
    print(
        "| model | photos | restore PSNR mean / median | bicubic PSNR mean / median "
        "| gain mean / median | restore SSIM mean / median | bicubic SSIM mean / median "
        "| TADM PSNR > bicubic | TADM SSIM > bicubic | VAE bound PSNR mean "
        "| thumbnail PSNR mean | bpp mean (TADM / bicubic) |"
    )
    print("|---" * 12 + "|")
    for result, rows in runs:
        v = list(rows.values())

        def col(k, v=v):
            return [r[k] for r in v]

        gain = [r["psnr"] - r["bicubic_psnr"] for r in v]
        print(
            f"| `tiny-x{result['scale']}` ({result['model_id']}) | {len(v)} "
            f"| {statistics.mean(col('psnr')):.2f} / {statistics.median(col('psnr')):.2f} dB "
            f"| {statistics.mean(col('bicubic_psnr')):.2f} / "
            f"{statistics.median(col('bicubic_psnr')):.2f} dB "
            f"| {statistics.mean(gain):+.2f} / {statistics.median(gain):+.2f} dB "
            f"| {statistics.mean(col('ssim')):.3f} / {statistics.median(col('ssim')):.3f} "
            f"| {statistics.mean(col('bicubic_ssim')):.3f} / "
            f"{statistics.median(col('bicubic_ssim')):.3f} "
            f"| {sum(g > 0 for g in gain)} of {len(v)} "
            f"| {sum(r['ssim'] > r['bicubic_ssim'] for r in v)} of {len(v)} "
            f"| {statistics.mean(col('vae_psnr')):.2f} dB "
            f"| {statistics.mean(col('thumbnail_psnr')):.2f} dB "
            f"| {statistics.mean(col('bpp')):.4f} / {statistics.mean(col('bicubic_bpp')):.4f} |"
        )
    print("\n## Restore PSNR distribution (photos below each floor, of all)\n")
    floors = [18, 20, 22, 25, 28, 30]
    print("| model | " + " | ".join(f"< {f} dB" for f in floors) + " | min | max |")
    print("|---" * (len(floors) + 3) + "|")
    for result, rows in runs:
        p = [r["psnr"] for r in rows.values()]
        print(
            f"| `tiny-x{result['scale']}` | "
            + " | ".join(f"{sum(x < f for x in p)}" for f in floors)
            + f" | {min(p):.2f} | {max(p):.2f} |"
        )
    print("\n## By source\n")
    print(
        "| model | source | photos | restore PSNR mean | bicubic PSNR mean | gain "
        "| TADM PSNR > bicubic |"
    )
    print("|---" * 7 + "|")
    for result, rows in runs:
        groups = {}
        for name, r in rows.items():
            groups.setdefault(src[name]["package"], []).append(r)
        for pkg, rs in sorted(groups.items()):
            g = [r["psnr"] - r["bicubic_psnr"] for r in rs]
            print(
                f"| `tiny-x{result['scale']}` | {pkg} | {len(rs)} "
                f"| {statistics.mean(r['psnr'] for r in rs):.2f} "
                f"| {statistics.mean(r['bicubic_psnr'] for r in rs):.2f} "
                f"| {statistics.mean(g):+.2f} | {sum(x > 0 for x in g)} of {len(rs)} |"
            )
    for result, rows in runs:
        print(f"\n## The 5 worst restores, `tiny-x{result['scale']}`\n")
        print("| photo | restore PSNR / SSIM | bicubic PSNR / SSIM | gain |")
        print("|---|---|---|---|")
        for name, r in sorted(rows.items(), key=lambda kv: kv[1]["psnr"])[:5]:
            print(
                f"| {name} | {r['psnr']:.2f} dB / {r['ssim']:.3f} | {r['bicubic_psnr']:.2f} dB / "
                f"{r['bicubic_ssim']:.3f} | {r['psnr'] - r['bicubic_psnr']:+.2f} dB |"
            )
    for result, rows in runs:
        losers = {
            n: r
            for n, r in rows.items()
            if r["psnr"] <= r["bicubic_psnr"] or r["ssim"] <= r["bicubic_ssim"]
        }
        print(
            f"\n## Where `tiny-x{result['scale']}` does not beat bicubic ({len(losers)} photos)\n"
        )
        print("| photo | restore PSNR / SSIM | bicubic PSNR / SSIM | gain |")
        print("|---|---|---|---|")
        for name, r in sorted(losers.items(), key=lambda kv: kv[1]["psnr"] - kv[1]["bicubic_psnr"]):
            print(
                f"| {name} | {r['psnr']:.2f} dB / {r['ssim']:.3f} | {r['bicubic_psnr']:.2f} dB / "
                f"{r['bicubic_ssim']:.3f} | {r['psnr'] - r['bicubic_psnr']:+.2f} dB |"
            )
    print("\n## Per photo\n")
    (r16, rows16), (r32, rows32) = runs
    print(
        "| photo | size | x16 restore PSNR / SSIM | x16 bicubic PSNR / SSIM | x16 VAE bound "
        "| x32 restore PSNR / SSIM | x32 bicubic PSNR / SSIM | x32 VAE bound |"
    )
    print("|---" * 8 + "|")
    for name in rows16:
        a, b = rows16[name], rows32.get(name)
        cells = [
            f"{a['psnr']:.2f} / {a['ssim']:.3f}",
            f"{a['bicubic_psnr']:.2f} / {a['bicubic_ssim']:.3f}",
            f"{a['vae_psnr']:.2f}",
        ]
        if b:
            cells += [
                f"{b['psnr']:.2f} / {b['ssim']:.3f}",
                f"{b['bicubic_psnr']:.2f} / {b['bicubic_ssim']:.3f}",
                f"{b['vae_psnr']:.2f}",
            ]
        else:
            cells += ["-", "-", "-"]
        print(f"| {name} | {src[name]['prepared_size']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
