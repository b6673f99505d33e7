"""Figures for the model card: a checkpoint on held-out photos against bicubic.

Per image: restore PSNR/SSIM after archive (downscale -> LR PNG -> upscale), bicubic down + PNG +
bicubic up at the same scale, the VAE-only upper bound (paper Table 4), and the bits per pixel of
both LR PNGs. Prints a Markdown table, then the same as JSON.

Usage: python scripts/evaluate_checkpoint.py CHECKPOINT IMAGE_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.evaluation import evaluate, mean_scores
from tadm import TADM


def main(checkpoint: str, image_dir: str) -> None:
    model = TADM.from_pretrained(checkpoint).eval()
    rows = {}
    for path in sorted(Path(image_dir).iterdir()):
        rows[path.name] = evaluate(model, np.asarray(Image.open(path).convert("RGB")))
    rows["mean"] = mean_scores(list(rows.values()))
    keys = list(rows["mean"])
    print(f"model {checkpoint} (x{model.scale}, model_id {model.model_id})\n")
    print("| image | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    print(json.dumps({"model_id": model.model_id, "scale": model.scale, "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
