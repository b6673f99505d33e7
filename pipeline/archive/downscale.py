"""Model stage of archive: HR pixels -> LR PNG bytes (paper Sec. 3.2, DFRM downscaling).

One instance holds one TADM; Ray runs it as an actor pool, one model per actor. On a GPU images
of the same size run as one batch (on a CPU one at a time: `model_calls`); a model failure
becomes error rows for the images it hit.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from pipeline.format import LrHeader, decode_lr_png, encode_lr_png
from pipeline.model_loading import load_model
from pipeline.rows import model_calls, to_batch, to_rows
from tadm.images import to_images, to_pixels, to_tensor
from tadm.metrics import psnr, ssim

DOWNSCALE_COLUMNS = (
    "source_uri",
    "rel_path",
    "status",
    "error",
    "width",
    "height",
    "source_bytes",
    "source_sha256",
    "conversion",
    "lr_png",
    "lr_width",
    "lr_height",
    "scale",
    "model_id",
    "psnr",
    "ssim",
    "timestep_mean",
    "seconds",
)


class Downscale:
    """Callable stage: rows with "pixels" -> rows with "lr_png", the exact bytes to write.

    With `verify`, the LR is decoded back from those bytes and upscaled again (a real
    reconstruction) to fill psnr, ssim and timestep_mean (the mean TPM time step over tiles).
    """

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        verify: bool,
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model, storage_options).to(self.device).eval()
        self.model_id = self.model.model_id  # a hash of every weight: compute once
        self.verify = verify

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = to_rows(batch)
        for row in rows:
            row.update(scale=self.model.scale, model_id=self.model_id)
        ok = [row for row in rows if row["status"] == "ok"]
        stack = self.device.type != "cpu"
        for group in model_calls(ok, lambda row: row["pixels"].shape, stack):
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    self.run(group)
            except Exception as e:  # one failure must not stop the job: it becomes rows
                for row in group:
                    row.update(status="error", error=f"model failed: {type(e).__name__}: {e}")
            share = (time.perf_counter() - start) / len(group)
            for row in group:
                row["seconds"] += share
        return to_batch(rows, DOWNSCALE_COLUMNS)

    def run(self, group: list[dict[str, Any]]) -> None:
        """Downscale (and verify) images of one size, filling their rows."""
        hr = to_tensor([row["pixels"] for row in group]).to(self.device)  # (B, 3, H, W) uint8
        lr = self.model.downscale(hr.float() / 255)  # (B, 3, ceil(H/s), ceil(W/s)) uint8
        for row, lr_image in zip(group, to_images(lr), strict=True):
            # Ray turns an int column with nulls (error rows) into floats: cast back.
            header = LrHeader(
                int(row["width"]), int(row["height"]), self.model.scale, self.model_id
            )
            row["lr_png"] = encode_lr_png(lr_image, header)
            row["lr_height"], row["lr_width"] = lr_image.shape[:2]
        if self.verify:
            self.reconstruct(group)

    def reconstruct(self, group: list[dict[str, Any]]) -> None:
        """Upscale the LR decoded from the bytes to be written; compare with the source."""
        written = to_tensor([decode_lr_png(row["lr_png"])[0] for row in group]).to(self.device)
        size = (int(group[0]["height"]), int(group[0]["width"]))
        x_hat, t_map = self.model.upscale(written, size=size, return_timesteps=True)
        for row, restored, t in zip(group, to_images(to_pixels(x_hat)), t_map, strict=True):
            row["psnr"] = psnr(restored, row["pixels"])
            row["ssim"] = ssim(restored, row["pixels"])
            t_mean = float(torch.nanmean(t.float()))
            row["timestep_mean"] = None if math.isnan(t_mean) else t_mean
