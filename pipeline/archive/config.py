"""What `tadm archive` takes: ArchiveConfig (no torch or Ray: the CLI parses into it)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.job import JobOptions


@dataclass(frozen=True)
class ArchiveConfig(JobOptions):
    src: str  # URI of the images: local path, file:// or s3://
    dst: str  # URI of the archive
    scale: int | None = None  # 16 or 32; None: the model's scale (16 for the default model)
    model: str | None = None  # shipped name, folder or URI; None: default_model(scale)
    verify: bool = False  # reconstruct each image to fill psnr, ssim, timestep_mean
    min_psnr: float | None = None  # quality floor: keep the source of an image below it
    min_ssim: float | None = None
    keep_failed: bool = False  # keep the source of every file that cannot be archived
    inventory: str | None = None  # S3 Inventory manifest.json or a listing, instead of listing
    drop_thumbnails: bool = False  # leave EXIF's, Photoshop's, XMP's thumbnails out of LRs

    @property
    def verifies(self) -> bool:
        """Whether each image is reconstructed: with --verify, or to check a quality floor."""
        return self.verify or self.min_psnr is not None or self.min_ssim is not None
