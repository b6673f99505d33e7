"""The archive plan: every image under SRC -> DST/lr/<rel_path>.png + DST/manifest/, and the
sources kept as they are (quality floor, --keep-failed) -> DST/kept/<rel_path>.

Its graph, run by pipeline/job.py: read_binary_files -> decode_batch -> Downscale -> write_lr.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import ray

from pipeline.archive.config import ArchiveConfig
from pipeline.archive.downscale import Downscale
from pipeline.archive.write import write_lr
from pipeline.decode import MAX_PIXELS, decode_batch
from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    KEPT,
    KEPT_DIR,
    LR_DIR,
    MANIFEST_DIR,
    PERMANENT,
    TRANSIENT,
    kept_key,
    lr_key,
)
from pipeline.job import Plan, Stages
from pipeline.manifest import read_manifest
from pipeline.resources import Resources
from pipeline.sources import IMAGE_EXTENSIONS, SourceFile, list_sources
from pipeline.stage import Row, load_model
from pipeline.storage import Location, s3_options
from tadm.config import SCALES
from tadm.hub import default_model


@dataclass(frozen=True)
class ArchiveJob(Plan):
    name: ClassVar[str] = "archive"
    schema: ClassVar[pa.Schema] = ARCHIVE_SCHEMA
    errors_hint: ClassVar[str] = "see `tadm inspect {dst} --errors`"

    config: ArchiveConfig
    src: Location
    scale: int
    sources: list[SourceFile]
    prefix: str  # stripped from a source path to give its rel_path

    @property
    def images(self) -> list[SourceFile]:
        return self.sources

    def settings(self) -> dict[str, Any]:
        return {
            "src": self.src.uri,
            "dst": self.dst.uri,
            "images": len(self.sources),
            "model": f"{self.model_ref} (id {self.model_id}, x{self.scale})",
            "verify": self.config.verify,
            "min_psnr": self.config.min_psnr,
            "min_ssim": self.config.min_ssim,
            "keep_failed": self.config.keep_failed,
        }

    def finished(self) -> dict[str, Row]:
        """Rows an earlier run settled with this model and scale, from a source of the same
        size: images it finished whose LR file (or kept source) is still there with the
        recorded size (with --verify or a quality floor, LR rows without psnr, or below the
        floor, don't count), and, unless --retry-errors, its permanent failures."""
        table = read_manifest(self.dst.child(MANIFEST_DIR), ARCHIVE_SCHEMA)
        if table is None:
            return {}
        fs = self.dst.filesystem()
        sizes = {
            p: i["size"]
            for folder in (LR_DIR, KEPT_DIR)
            for p, i in fs.find(self.dst.path(folder), detail=True).items()
        }
        sources = {s.rel_path: s for s in self.sources}

        def done(row: Row) -> bool:
            if row["status"] not in (*DONE, KEPT):
                return False
            if row["kept_uri"]:
                return self.kept_is_there(row, sizes)
            return self.lr_is_good(row, sizes)

        def failed_for_good(row: Row) -> bool:
            return (
                row["status"] == "error"
                and row["error_kind"] == PERMANENT
                and not self.config.retry_errors
            )

        return {
            row["rel_path"]: row
            | {
                "status": "skipped" if row["status"] in (*DONE, KEPT) else row["status"],
                "source_uri": self.src.uri_of(sources[row["rel_path"]].path),
            }
            for row in table.to_pylist()
            if row["rel_path"] in sources
            and row["source_bytes"] == sources[row["rel_path"]].size
            and row["model_id"] == self.model_id
            and row["scale"] == self.scale
            and (done(row) or failed_for_good(row))
        }

    def kept_is_there(self, row: Row, sizes: dict[str, int]) -> bool:
        return sizes.get(self.dst.path(kept_key(row["rel_path"]))) == row["source_bytes"]

    def lr_is_good(self, row: Row, sizes: dict[str, int]) -> bool:
        """The LR file is there, and the row has the figures this run asks for."""
        config, psnr, ssim = self.config, row["psnr"], row["ssim"]
        return (
            sizes.get(self.dst.path(lr_key(row["rel_path"]))) == row["lr_bytes"]
            and not (config.verify and psnr is None)
            and (config.min_psnr is None or (psnr is not None and psnr >= config.min_psnr))
            and (config.min_ssim is None or (ssim is not None and ssim >= config.min_ssim))
        )

    def source(self, todo: Sequence[SourceFile], resources: Resources) -> ray.data.Dataset:
        return ray.data.read_binary_files(
            [s.path for s in todo],
            filesystem=self.src.arrow_filesystem(),
            include_paths=True,
            ignore_missing_paths=True,
            num_cpus=0,  # I/O: runs while the model actors hold every CPU
            concurrency=resources.io_tasks,
        )

    def stages(self) -> Stages:
        return Stages(
            read=decode_batch,
            read_kwargs={
                "prefix": self.prefix,
                "uri_prefix": self.src.uri_of(""),
                "scale": self.scale,
                "max_pixels": MAX_PIXELS,
                "keep": self.config.keeps,
            },
            model=Downscale,
            model_kwargs={
                "model": self.model_ref,
                "storage_options": self.options,
                "verify": self.config.verify,
                "min_psnr": self.config.min_psnr,
                "min_ssim": self.config.min_ssim,
            },
            write=write_lr,
            write_kwargs={"dst": self.dst, "keep_failed": self.config.keep_failed},
        )

    def lost(self, todo: Sequence[SourceFile]) -> list[Row]:
        """A source listed but gone before it was read: read_binary_files skips it."""
        return [
            {
                "source_uri": self.src.uri_of(s.path),
                "rel_path": s.rel_path,
                "status": "error",
                "error": "source file disappeared before it was read",
                "error_kind": TRANSIENT,
                "source_bytes": s.size,
                "scale": self.scale,
                "model_id": self.model_id,
            }
            for s in todo
        ]


def prepare_archive(config: ArchiveConfig) -> ArchiveJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.scale is not None and config.scale not in SCALES:
        raise ValueError(f"--scale must be 16 or 32, got {config.scale}")
    config.check()
    if config.min_ssim is not None and not 0 < config.min_ssim <= 1:
        raise ValueError(f"--min-ssim must be in (0, 1], got {config.min_ssim}")
    src = Location.parse(config.src, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    if dst == src:
        raise ValueError(f"DST {dst.uri!r} is SRC: write the archive somewhere else")
    options = s3_options(config.storage_options)
    try:
        sources, prefix = list_sources(src, exclude=dst, every_file=config.keep_failed)
    except OSError as e:
        raise ValueError(f"SRC {src.uri!r} cannot be listed: {e}") from None
    if not sources:
        kinds = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise ValueError(f"no input: no {kinds} images under SRC {src.uri!r}")
    model_ref = config.model or default_model(config.scale or 16)
    model = load_model(model_ref, options)
    model_id, scale = model.model_id, model.scale
    del model
    if config.scale is not None and config.scale != scale:
        raise ValueError(f"--scale {config.scale} does not match model {model_ref!r} (x{scale})")
    return ArchiveJob(
        config=config,
        dst=dst,
        options=options,
        model_ref=model_ref,
        model_id=model_id,
        src=src,
        scale=scale,
        sources=sources,
        prefix=prefix,
    )
