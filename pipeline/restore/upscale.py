"""Model stage of restore: LR pixels -> HR pixels (paper Sec. 3.3-3.4, one-step enhancement
with tiled inference), the whole image or one region of it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pipeline.decode import NO_PIXELS
from pipeline.model_loading import load_model
from pipeline.restore.read import Region
from pipeline.rows import model_calls, to_batch, to_rows
from tadm.images import to_images, to_pixels, to_tensor
from tadm.metrics import psnr, ssim

UPSCALE_COLUMNS = (
    "lr_uri",
    "rel_path",
    "status",
    "error",
    "width",
    "height",
    "region",
    "model_id",
    "restored",
    "psnr",
    "ssim",
    "seconds",
)


class Upscale:
    """Callable stage: rows with "lr_pixels" -> rows with "restored" (H, W, 3) uint8, and
    psnr/ssim where "source_pixels" is not empty."""

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        region: Region | None,
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model, storage_options).to(self.device).eval()
        self.region = region

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = to_rows(batch)
        for row in rows:
            row["restored"] = NO_PIXELS
        ok = [row for row in rows if row["status"] == "ok"]
        stack = self.device.type != "cpu"

        def size(row: dict[str, Any]) -> tuple[Any, ...]:
            return (row["lr_pixels"].shape, row["hr_height"], row["hr_width"])

        for group in model_calls(ok, size, stack):
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
        return to_batch(rows, UPSCALE_COLUMNS)

    def run(self, group: list[dict[str, Any]]) -> None:
        lr = to_tensor([row["lr_pixels"] for row in group]).to(self.device)  # (B, 3, h, w)
        size = (int(group[0]["hr_height"]), int(group[0]["hr_width"]))
        x_hat = self.model.upscale(lr, size=size, region=self.region)  # (B, 3, H, W) in [0, 1]
        for row, restored in zip(group, to_images(to_pixels(x_hat)), strict=True):
            row["restored"] = restored
            source = row["source_pixels"]
            if source.size:
                row["psnr"] = psnr(restored, source)
                row["ssim"] = ssim(restored, source)
