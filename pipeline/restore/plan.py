"""The restore plan: an archive's LR PNGs -> DST/<rel_path>.<format> + DST/manifest/, and its
kept sources -> DST/<rel_path>, byte for byte.

Which images: the archive manifest's ok, kept and skipped rows, or, when the archive has no
manifest, every PNG under ARCHIVE/lr/ (its text chunks carry everything a restore needs) and
every file under ARCHIVE/kept/. Its graph, run by pipeline/job.py: from_items -> read_lr_batch
-> Upscale -> write_restored (kept files pass the model by).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import ray

from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    KEPT,
    KEPT_DIR,
    LR_DIR,
    MANIFEST_DIR,
    OUTPUT_FORMATS,
    PERMANENT,
    RESTORE_SCHEMA,
    Region,
    decode_lr_png,
    is_rel_path,
    kept_key,
    lr_key,
    output_key,
)
from pipeline.job import Plan, Stages
from pipeline.manifest import read_manifest
from pipeline.resources import Resources
from pipeline.restore.config import RestoreConfig
from pipeline.restore.read import read_lr_batch
from pipeline.restore.upscale import Upscale
from pipeline.restore.write import write_restored
from pipeline.sources import is_image_name
from pipeline.stage import Row, load_model
from pipeline.storage import Location, s3_options
from tadm.hub import default_model


@dataclass(frozen=True)
class Item:
    """One image to restore."""

    rel_path: str
    lr_uri: str  # ARCHIVE/lr/<rel_path>.png, wherever the archive lives now; "" when kept
    source_uri: str | None  # from the archive manifest, for psnr/ssim when still readable
    scale: int | None  # from the archive manifest; None when restoring from PNGs alone
    kept_uri: str | None = None  # ARCHIVE/kept/<rel_path>, for a source kept as it was
    source_sha256: str | None = None  # of the source, from the archive manifest
    lr_bytes: int | None = None  # from the archive manifest: the LR file read must match
    lr_sha256: str | None = None  # them; None when it does not say (or there is no manifest)

    def output(self, region: Region | None, image_format: str) -> str:
        """Its key under DST: a kept file as it was, at its rel_path; else an image."""
        if self.kept_uri and region is None:
            return self.rel_path
        return output_key(self.rel_path, image_format)


@dataclass(frozen=True)
class RestoreJob(Plan):
    name: ClassVar[str] = "restore"
    schema: ClassVar[pa.Schema] = RESTORE_SCHEMA
    errors_hint: ClassVar[str] = "their rows in {manifest} say why"

    config: RestoreConfig
    archive: Location
    items: list[Item]

    @property
    def images(self) -> list[Item]:
        return self.items

    def settings(self) -> dict[str, Any]:
        config = self.config
        return {
            "archive": self.archive.uri,
            "dst": self.dst.uri,
            "images": len(self.items),
            "only": config.only,
            "region": None if config.region is None else config.region.text,
            "format": config.image_format,
            "to_srgb": config.to_srgb,
            "model": f"{self.model_ref} (id {self.model_id})",
        }

    def finished(self) -> dict[str, Row]:
        """Rows of the job's images that an earlier restore into DST settled with this model
        and region: those it finished in this format and --to-srgb whose output is still there,
        and, unless --retry-errors, its permanent failures."""
        config, dst = self.config, self.dst
        table = read_manifest(dst.child(MANIFEST_DIR), RESTORE_SCHEMA)
        if table is None:
            return {}
        existing = set(dst.filesystem().find(dst.root))
        region = None if config.region is None else config.region.text
        wanted = {item.rel_path: item for item in self.items if is_rel_path(item.rel_path)}
        done = {}
        for row in table.to_pylist():
            item = wanted.get(row["rel_path"])
            if item is None:
                continue
            path = dst.join(item.output(config.region, config.image_format))
            copied = bool(item.kept_uri) and config.region is None  # bytes, no colours
            if (
                row["status"] in (*DONE, KEPT)
                and row["model_id"] == self.model_id
                and row["region"] == region
                and row["output_uri"] == dst.uri_of(path)
                and path in existing
                and (copied or srgb_note(row["conversion"]) == config.to_srgb)
            ):
                done[row["rel_path"]] = row | {"status": "skipped"}
            elif (
                row["rel_path"] in wanted
                and row["status"] == "error"
                and row["error_kind"] == PERMANENT
                and not config.retry_errors
                and row["model_id"] == self.model_id
                and row["region"] == region
            ):
                done[row["rel_path"]] = row
        return done

    def source(self, todo: Sequence[Item], resources: Resources) -> ray.data.Dataset:
        # "" and -1 for unknown: a column of nothing but None would reach the stage as NaN.
        return ray.data.from_items(
            [
                {
                    "rel_path": i.rel_path,
                    "lr_uri": i.lr_uri,
                    "source_uri": i.source_uri or "",
                    "kept_uri": i.kept_uri or "",
                    "source_sha256": i.source_sha256 or "",
                    "lr_bytes": -1 if i.lr_bytes is None else i.lr_bytes,
                    "lr_sha256": i.lr_sha256 or "",
                }
                for i in todo
            ]
        )

    def stages(self) -> Stages:
        config = self.config
        return Stages(
            read=read_lr_batch,
            read_kwargs={
                "archive": self.archive,
                "model_id": self.model_id,
                "region": config.region,
                "options": self.options,
                "image_format": config.image_format,
                "to_srgb": config.to_srgb,
            },
            model=Upscale,
            model_kwargs={
                "model": self.model_ref,
                "storage_options": self.options,
                "region": config.region,
            },
            write=write_restored,
            write_kwargs={
                "dst": self.dst,
                "image_format": config.image_format,
                "to_srgb": config.to_srgb,
            },
        )

    def lost(self, todo: Sequence[Item]) -> list[Row]:
        """None: every item is a row of from_items, and each stage returns a row per row."""
        return []


def prepare_restore(config: RestoreConfig) -> RestoreJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.image_format not in OUTPUT_FORMATS:
        raise ValueError(f"--format must be png, jpeg or webp, got {config.image_format!r}")
    config.check()
    archive = Location.parse(config.archive, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    check_apart(archive, dst)
    options = s3_options(config.storage_options)
    items = list_items(archive, config.only)
    model_ref = config.model or default_model(archive_scale(archive, items))
    model_id = load_model(model_ref, options).model_id
    return RestoreJob(
        config=config,
        dst=dst,
        options=options,
        model_ref=model_ref,
        model_id=model_id,
        archive=archive,
        items=items,
    )


def list_items(archive: Location, only: str | None) -> list[Item]:
    """The images to restore, from the archive manifest or else from ARCHIVE/lr/*.png and
    ARCHIVE/kept/."""
    try:
        table = read_manifest(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA)
        if table is not None:
            items = [
                manifest_item(archive, r) for r in table.to_pylist() if r["status"] in (*DONE, KEPT)
            ]
        else:
            fs = archive.filesystem()
            lr_root = archive.path(LR_DIR) + "/"
            kept_root = archive.path(KEPT_DIR) + "/"
            items = [
                Item(p[len(lr_root) : -len(".png")], archive.uri_of(p), None, None)
                for p in sorted(fs.find(lr_root))
                if p.endswith(".png") and is_image_name(p.rsplit("/", 1)[-1])
            ] + [
                Item(p[len(kept_root) :], "", None, None, kept_uri=archive.uri_of(p))
                for p in sorted(fs.find(kept_root))
                if not p.rsplit("/", 1)[-1].startswith(".")  # a temporary file of a write
            ]
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if not items:
        raise ValueError(f"no input: ARCHIVE {archive.uri!r} has no manifest rows and no LR PNGs")
    if only is not None:
        matching = [item for item in items if fnmatch.fnmatchcase(item.rel_path, only)]
        if not matching:
            raise ValueError(f"no input: --only {only!r} matches none of the {len(items)} images")
        items = matching
    return items


def check_apart(archive: Location, dst: Location) -> None:
    """ValueError unless a restore into `dst` cannot overwrite `archive`: DST must not hold
    ARCHIVE (its output tree would cover the archive's files) nor lie in ARCHIVE's lr/, kept/
    or manifest/. Anywhere else, even inside ARCHIVE, is apart."""
    if archive.within(dst):
        where = "is" if dst == archive else "holds"
        raise ValueError(
            f"DST {dst.uri!r} {where} ARCHIVE {archive.uri!r}: restored files could overwrite "
            "the archive; restore elsewhere"
        )
    for name in (LR_DIR, KEPT_DIR, MANIFEST_DIR):
        if dst.within(archive.child(name)):
            raise ValueError(
                f"DST {dst.uri!r} lies in ARCHIVE's {name}/ folder: restored files would "
                "overwrite the archive; restore elsewhere"
            )


def manifest_item(archive: Location, row: Row) -> Item:
    """The item of an archive manifest row: its LR file (with the size and SHA-256 the row
    records), or its kept source."""
    rel_path = row["rel_path"]
    if row["kept_uri"]:
        kept = archive.uri_of(archive.path(kept_key(rel_path)))
        return Item(rel_path, "", row["source_uri"], row["scale"], kept, row["source_sha256"])
    return Item(
        rel_path,
        lr_uri(archive, rel_path),
        row["source_uri"],
        row["scale"],
        lr_bytes=row["lr_bytes"],
        lr_sha256=row["lr_sha256"],
    )


def lr_uri(archive: Location, rel_path: str) -> str:
    """ARCHIVE/lr/<rel_path>.png as a URI, for the row; read_lr_batch checks rel_path before it
    reads anything."""
    return archive.uri_of(archive.path(lr_key(rel_path)))


def srgb_note(conversion: str | None) -> bool:
    """Whether a restore row's conversion says --to-srgb made it (restore/write.py)."""
    return conversion is not None and conversion.endswith("sRGB")


def archive_scale(archive: Location, items: list[Item]) -> int:
    """The scale the default model must have: the manifest's, or the first LR PNG's (16
    when every item is a kept source, which needs no model)."""
    scales = {item.scale for item in items if item.scale is not None}
    if len(scales) > 1:
        raise ValueError(f"the archive mixes scales {sorted(scales)}: pass --model")
    if scales:
        return scales.pop()
    lr_items = [item for item in items if not item.kept_uri]
    if not lr_items:
        return 16
    first = next((item for item in lr_items if is_rel_path(item.rel_path)), lr_items[0])
    try:
        path = archive.join(lr_key(first.rel_path))
        return decode_lr_png(archive.filesystem().cat_file(path))[1].scale
    except (OSError, ValueError) as e:
        raise ValueError(f"{first.lr_uri}: {e}; pass --model") from None
