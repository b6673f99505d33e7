"""Model stage of restore: LR pixels -> HR pixels (paper Sec. 3.3-3.4, one-step enhancement
with tiled inference), the whole image or one region of it."""

from __future__ import annotations

from typing import Any

from pipeline.format import Region
from pipeline.restore.read import READ_COLUMNS
from pipeline.rows import NO_PIXELS
from pipeline.stage import ModelStage, Row, restored_images
from tadm.images import to_tensor
from tadm.metrics import psnr, ssim

# What the model consumes
READ_ONLY = ("hr_width", "hr_height", "lr_pixels", "source_pixels", "source_levels")


class Upscale(ModelStage):
    """Callable stage: rows with "lr_pixels" -> rows with "restored" (H, W, 3) uint8, and
    psnr/ssim where "source_pixels" is not empty."""

    columns = (
        *(name for name in READ_COLUMNS if name not in READ_ONLY),
        "restored",
        "precision",
        "psnr",
        "ssim",
    )

    def __init__(
        self,
        model: str,
        storage_options: dict[str, Any],
        region: Region | None,
        torch_threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__(model, storage_options, torch_threads, precision)
        self.region = region

    def every_row(self) -> Row:
        return {"restored": NO_PIXELS}

    def size(self, row: Row) -> tuple[Any, ...]:
        return (row["lr_pixels"].shape, row["hr_height"], row["hr_width"])

    def run(self, group: list[Row]) -> None:
        lr = to_tensor([row["lr_pixels"] for row in group]).to(self.device)  # (B, 3, h, w)
        size = (int(group[0]["hr_height"]), int(group[0]["hr_width"]))
        x_hat = self.model.upscale(lr, size=size, region=self.region)  # (B, 3, H, W) in [0, 1]
        for row, restored in zip(group, restored_images(x_hat), strict=True):
            row["restored"] = restored
            source = row["source_pixels"]
            if source.size:
                row["psnr"] = psnr(restored, source, float(row["source_levels"]))
                row["ssim"] = ssim(restored, source)
