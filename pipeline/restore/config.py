"""What `tadm restore` takes: RestoreConfig (no torch or Ray: the CLI parses into it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.format import Region
from pipeline.job import JobOptions


@dataclass(frozen=True)
class RestoreConfig(JobOptions):
    archive: str  # URI of an archive written by archive
    dst: str  # URI to restore into
    region: Region | None = None  # the same window of every image; None: whole images
    only: str | None = None  # fnmatch pattern on rel_path ("*" also matches "/")
    model: str | None = None  # None: default_model(the archive's scale)
    image_format: str = "png"  # png, jpeg or webp
    to_srgb: bool = False  # convert pixels with an ICC profile to sRGB, profile left out
    batch_size: int = field(default=4, kw_only=True)  # images per batch
