"""Figures for the model card: a checkpoint on held-out photos against bicubic.

For each image: restore PSNR/SSIM after archive (downscale -> LR PNG -> upscale), bicubic down +
PNG + bicubic up at the same scale, the VAE-only upper bound (encode then decode, no rescaling,
paper Table 4), and the bytes per pixel of both LR PNGs. Prints a Markdown table and JSON.

Usage: python scripts/evaluate_checkpoint.py CHECKPOINT IMAGE_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.lr_png import LrHeader, encode_lr_png
from pipeline.quality import psnr, ssim
from tadm import TADM
from tadm.losses import bicubic_down
from tadm.model import pad_to


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().byte().numpy()


@torch.inference_mode()
def evaluate(model: TADM, img: np.ndarray) -> dict[str, float]:
    h, w = img.shape[:2]
    hr = torch.tensor(img).permute(2, 0, 1)[None].float() / 255
    lr = model.downscale(hr)
    restored = to_u8(model.upscale(lr, size=(h, w)))
    header = LrHeader(w, h, model.scale, model.model_id)
    lr_bytes = len(encode_lr_png(lr[0].permute(1, 2, 0).numpy(), header))
    bic_lr = (bicubic_down(hr, model.scale) * 255).round().clamp(0, 255) / 255
    bic_bytes = len(encode_lr_png(to_u8(bic_lr), header))
    bicubic = to_u8(F.interpolate(bic_lr, size=(h, w), mode="bicubic", align_corners=False))
    m = model.size_multiple
    x = pad_to(hr * 2 - 1, -(-h // m) * m, -(-w // m) * m)
    vae = to_u8((model.decode_latent(model.encode_latent(x))[..., :h, :w] + 1) / 2)
    return {
        "psnr": psnr(restored, img),
        "ssim": ssim(restored, img),
        "bicubic_psnr": psnr(bicubic, img),
        "bicubic_ssim": ssim(bicubic, img),
        "vae_psnr": psnr(vae, img),
        "vae_ssim": ssim(vae, img),
        "bpp": 8 * lr_bytes / (h * w),
        "bicubic_bpp": 8 * bic_bytes / (h * w),
    }


def main(checkpoint: str, image_dir: str) -> None:
    model = TADM.from_pretrained(checkpoint).eval()
    rows = {}
    for path in sorted(Path(image_dir).iterdir()):
        img = np.asarray(Image.open(path).convert("RGB"))
        rows[path.name] = evaluate(model, img)
    keys = list(next(iter(rows.values())))
    rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    print(f"model {checkpoint} (x{model.scale}, model_id {model.model_id})\n")
    print("| image | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    print(json.dumps({"model_id": model.model_id, "scale": model.scale, "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
