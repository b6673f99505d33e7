"""Model stage of archive: HR pixels -> LR PNG bytes (paper Sec. 3.2, DFRM downscaling)."""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.decode import DECODE_COLUMNS
from pipeline.format import KEPT, TRANSPARENT_REASON, LrHeader, decode_lr_png, encode_lr_png
from pipeline.metadata import METADATA_FIELDS, Metadata
from pipeline.stage import ModelStage, Row, restored_images
from tadm.images import to_images, to_tensor
from tadm.metrics import psnr, ssim


class Downscale(ModelStage):
    """Callable stage: rows with "pixels" -> rows with "lr_png", the exact bytes to write.

    With `verify`, the LR is decoded back from those bytes and upscaled again (a real
    reconstruction) to fill psnr, ssim and timestep_mean (the mean TPM time step over tiles).
    With a quality floor (`min_psnr`, `min_ssim`), so it is too, and an image below the floor
    gets status "kept" and its kept_reason: the write stage keeps its source as it is, as it
    does for the rows the decode stage made "kept", which pass through.
    """

    # The decoded row, less its pixels and metadata (now in the LR), and what the model adds.
    columns = (
        *(name for name in DECODE_COLUMNS if name not in ("pixels", *METADATA_FIELDS)),
        "lr_png",
        "lr_width",
        "lr_height",
        "scale",
        "model_id",
        "precision",
        "psnr",
        "ssim",
        "timestep_mean",
    )

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        verify: bool,
        min_psnr: float | None = None,
        min_ssim: float | None = None,
        torch_threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__(model, storage_options, torch_threads, precision)
        self.min_psnr = min_psnr
        self.min_ssim = min_ssim
        self.verify = verify or min_psnr is not None or min_ssim is not None

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
            metadata = Metadata.from_row(row)
            header = LrHeader(
                int(row["width"]), int(row["height"]), self.model.scale, self.model_id, metadata
            )
            row["lr_png"] = encode_lr_png(lr_image, header)
            row["lr_height"], row["lr_width"] = lr_image.shape[:2]
        if self.verify:
            self.reconstruct(group)
        for row in group:
            reason = self.below_floor(row)
            if reason:
                row.update(status=KEPT, kept_reason=reason, lr_png=None)
                row.update(lr_width=None, lr_height=None)

    def below_floor(self, row: Row) -> str | None:
        """Why the image's round trip is below the quality floor; None when it is not. Pixels
        not fully opaque, whose alpha the LR drops, which psnr and ssim of RGB do not see, are
        below any floor."""
        if self.min_psnr is None and self.min_ssim is None:
            return None
        reasons = []
        if row["transparent"]:
            reasons.append(TRANSPARENT_REASON)
        if self.min_psnr is not None and row["psnr"] < self.min_psnr:
            levels = float(row["levels"])
            bits = round(math.log2(levels + 1)) + 8
            span = f" over the {levels:.0f} levels of its {bits}-bit values" if levels < 255 else ""
            reasons.append(f"psnr {row['psnr']:.2f} dB{span} below --min-psnr {self.min_psnr:g}")
        if self.min_ssim is not None and row["ssim"] < self.min_ssim:
            reasons.append(f"ssim {row['ssim']:.4f} below --min-ssim {self.min_ssim:g}")
        return "; ".join(reasons) or None

    def reconstruct(self, group: list[Row]) -> None:
        """Upscale the LR decoded from the bytes to be written; compare with the source."""
        written = to_tensor([decode_lr_png(row["lr_png"])[0] for row in group]).to(self.device)
        size = (int(group[0]["height"]), int(group[0]["width"]))
        x_hat, t_map = self.model.upscale(written, size=size, return_timesteps=True)
        for row, restored, t in zip(group, restored_images(x_hat), t_map, strict=True):
            row["psnr"] = psnr(restored, row["pixels"], float(row["levels"]))
            row["ssim"] = ssim(restored, row["pixels"])
            t_mean = float(torch.nanmean(t.float()))
            row["timestep_mean"] = None if math.isnan(t_mean) else t_mean
