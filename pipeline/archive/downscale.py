"""Model stage of archive: HR pixels -> LR PNG bytes (paper Sec. 3.2, DFRM downscaling)."""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.decode import DECODE_COLUMNS
from pipeline.format import LrHeader, decode_lr_png, encode_lr_png
from pipeline.stage import ModelStage, Row, restored_images
from tadm.images import to_images, to_tensor
from tadm.metrics import psnr, ssim


class Downscale(ModelStage):
    """Callable stage: rows with "pixels" -> rows with "lr_png", the exact bytes to write.

    With `verify`, the LR is decoded back from those bytes and upscaled again (a real
    reconstruction) to fill psnr, ssim and timestep_mean (the mean TPM time step over tiles).
    """

    # The decoded row, less its pixels, and what the model adds.
    columns = (
        *(name for name in DECODE_COLUMNS if name != "pixels"),
        "lr_png",
        "lr_width",
        "lr_height",
        "scale",
        "model_id",
        "psnr",
        "ssim",
        "timestep_mean",
    )

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        verify: bool,
        torch_threads: int | None = None,
    ) -> None:
        super().__init__(model, storage_options, torch_threads)
        self.verify = verify

    def every_row(self) -> Row:
        return {"scale": self.model.scale, "model_id": self.model_id}

    def size(self, row: Row) -> tuple[int, ...]:
        return row["pixels"].shape

    def run(self, group: list[Row]) -> None:
        """Downscale (and verify) images of one size, filling their rows."""
        hr = to_tensor([row["pixels"] for row in group]).to(self.device)  # (B, 3, H, W) uint8
        hr = hr.float().div_(255)  # one float copy of the images, freed after the model call
        lr = self.model.downscale(hr)  # (B, 3, ceil(H/s), ceil(W/s)) uint8
        del hr
        for row, lr_image in zip(group, to_images(lr), strict=True):
            # Ray turns an int column with nulls (error rows) into floats: cast back.
            header = LrHeader(
                int(row["width"]), int(row["height"]), self.model.scale, self.model_id
            )
            row["lr_png"] = encode_lr_png(lr_image, header)
            row["lr_height"], row["lr_width"] = lr_image.shape[:2]
        if self.verify:
            self.reconstruct(group)

    def reconstruct(self, group: list[Row]) -> None:
        """Upscale the LR decoded from the bytes to be written; compare with the source."""
        written = to_tensor([decode_lr_png(row["lr_png"])[0] for row in group]).to(self.device)
        size = (int(group[0]["height"]), int(group[0]["width"]))
        x_hat, t_map = self.model.upscale(written, size=size, return_timesteps=True)
        for row, restored, t in zip(group, restored_images(x_hat), t_map, strict=True):
            row["psnr"] = psnr(restored, row["pixels"])
            row["ssim"] = ssim(restored, row["pixels"])
            t_mean = float(torch.nanmean(t.float()))
            row["timestep_mean"] = None if math.isnan(t_mean) else t_mean
