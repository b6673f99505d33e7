"""Figures for the model card: a checkpoint on held-out photos against bicubic.

Per image: restore PSNR/SSIM after archive (downscale -> LR PNG -> upscale), bicubic down + PNG +
bicubic up at the same scale, the VAE-only upper bound (paper Table 4), and the bits per pixel of
both LR PNGs. Prints a Markdown table, then the same as JSON. With --breakdown, the PSNR after
each step of the latent path instead (one untiled pass per image; the card's "where it loses").
With --precision bf16, the model runs in bf16 (TADM.to_precision; on the CPU, as this script
runs, fp16 is refused).

Usage: python scripts/evaluate_checkpoint.py CHECKPOINT IMAGE_DIR [--breakdown] [--precision P]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tadm import TADM
from tadm.config import PRECISIONS
from tadm.evaluation import evaluate, latent_path_psnr, mean_scores


def main(checkpoint: str, image_dir: str, breakdown: bool, precision: str) -> None:
    model = TADM.from_pretrained(checkpoint).eval().to_precision(precision)
    measure = latent_path_psnr if breakdown else evaluate
    rows = {}
    for path in sorted(Path(image_dir).iterdir()):
        rows[path.name] = measure(model, np.asarray(Image.open(path).convert("RGB")))
    rows["mean"] = mean_scores(list(rows.values()))
    keys = list(rows["mean"])
    print(f"model {checkpoint} (x{model.scale}, model_id {model.model_id}, {precision})\n")
    print("| image | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    result = {"model_id": model.model_id, "scale": model.scale, "precision": precision}
    print(json.dumps(result | {"rows": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder, URI or shipped name")
    parser.add_argument("image_dir", help="folder of held-out images")
    parser.add_argument("--breakdown", action="store_true", help="PSNR along the latent path")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    args = parser.parse_args()
    main(args.checkpoint, args.image_dir, args.breakdown, args.precision)
