"""The restore plan: an archive's LR PNGs -> DST/<rel_path>.<format> + DST/manifest/.

Which images: the archive manifest's ok and skipped rows, or, when the archive has no manifest,
every PNG under ARCHIVE/lr/ (its text chunks carry everything a restore needs). Its graph, run
by pipeline/job.py: the plan's blocks -> read_lr_batch -> Upscale -> write_restored.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.buckets import Buckets
from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    LR_DIR,
    MANIFEST_DIR,
    OUTPUT_FORMATS,
    RESTORE_SCHEMA,
    Region,
    decode_lr_png,
)
from pipeline.job import OUTPUT_SCHEMA, JobOptions, Plan, Stages
from pipeline.manifest import latest, list_parts, merged_buckets
from pipeline.resources import Resources
from pipeline.restore.read import read_lr_batch
from pipeline.restore.upscale import Upscale
from pipeline.restore.write import write_restored
from pipeline.sources import IMAGE_NAME, walk
from pipeline.stage import load_model
from pipeline.storage import Location, s3_options
from tadm.hub import default_model


@dataclass(frozen=True)
class RestoreConfig(JobOptions):
    archive: str  # URI of an archive written by archive
    dst: str  # URI to restore into
    region: Region | None = None  # the same window of every image; None: whole images
    only: str | None = None  # fnmatch pattern on rel_path ("*" also matches "/")
    model: str | None = None  # None: default_model(the archive's scale)
    image_format: str = "png"  # png, jpeg or webp
    batch_size: int = field(default=4, kw_only=True)  # images per batch


# The images to restore: one row each.
ITEM_SCHEMA = pa.schema(
    [
        ("rel_path", pa.string()),
        ("lr_uri", pa.string()),  # ARCHIVE/lr/<rel_path>.png, wherever the archive lives now
        ("source_uri", pa.string()),  # from the archive manifest, for psnr/ssim when readable
        ("scale", pa.int64()),  # from the archive manifest; null when restoring from PNGs alone
    ]
)


@dataclass(frozen=True)
class RestoreJob(Plan):
    name: ClassVar[str] = "restore"
    schema: ClassVar[pa.Schema] = RESTORE_SCHEMA

    config: RestoreConfig
    archive: Location
    items: Buckets  # of ITEM_SCHEMA

    @property
    def images(self) -> Buckets:
        return self.items

    def settings(self) -> dict[str, Any]:
        config = self.config
        return {
            "archive": self.archive.uri,
            "dst": self.dst.uri,
            "images": self.items.rows,
            "only": config.only,
            "region": None if config.region is None else config.region.text,
            "format": config.image_format,
            "model": f"{self.model_ref} (id {self.model_id})",
        }

    def outputs(self) -> Iterator[pa.Table]:
        """The restored files in DST in this job's format, by the rel_path of their image."""
        suffix = "." + self.config.image_format
        for table in walk(self.dst):
            table = table.filter(pc.ends_with(table["rel_path"], suffix))
            rel_paths = pc.utf8_slice_codeunits(table["rel_path"], 0, -len(suffix))
            yield pa.table({"rel_path": rel_paths, "size": table["size"]}, schema=OUTPUT_SCHEMA)

    def split(
        self, images: pa.Table, done: pa.Table | None, outputs: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """ "skipped" rows of the images an earlier restore into DST finished with this model,
        region and format, whose output is still there; the rest to run."""
        images = images.set_column(2, "source_uri", pc.fill_null(images["source_uri"], ""))
        if done is None:
            return RESTORE_SCHEMA.empty_table(), images
        config, dst = self.config, self.dst
        region = "" if config.region is None else config.region.text
        expected = pc.binary_join_element_wise(
            dst.uri_of(dst.root + "/"), done["rel_path"], "." + config.image_format, ""
        )
        keep = pc.and_(
            pc.and_(
                pc.is_in(done["status"], pa.array(DONE)), pc.equal(done["model_id"], self.model_id)
            ),
            pc.and_(
                pc.equal(pc.fill_null(done["region"], ""), region),
                pc.equal(done["output_uri"], expected),
            ),
        )
        rows = done.filter(pc.fill_null(keep, False))
        rows = rows.filter(pc.is_in(rows["rel_path"], images["rel_path"]))
        rows = rows.filter(pc.is_in(rows["rel_path"], outputs["rel_path"]))
        status = RESTORE_SCHEMA.get_field_index("status")
        rows = rows.set_column(status, "status", pa.array(["skipped"] * len(rows), pa.string()))
        todo = images.filter(pc.invert(pc.is_in(images["rel_path"], rows["rel_path"])))
        return rows, todo

    def source(self, blocks: list[ray.ObjectRef], resources: Resources) -> ray.data.Dataset:
        return ray.data.from_arrow_refs(blocks)

    def stages(self) -> Stages:
        config = self.config
        return Stages(
            read=read_lr_batch,
            read_kwargs={
                "model_id": self.model_id,
                "region": config.region,
                "options": self.options,
            },
            model=Upscale,
            model_kwargs={
                "model": self.model_ref,
                "storage_options": self.options,
                "region": config.region,
            },
            write=write_restored,
            write_kwargs={"dst": self.dst, "image_format": config.image_format},
        )


def prepare_restore(config: RestoreConfig) -> RestoreJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.image_format not in OUTPUT_FORMATS:
        raise ValueError(f"--format must be png, jpeg or webp, got {config.image_format!r}")
    config.check()
    archive = Location.parse(config.archive, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    if dst == archive:
        raise ValueError(f"DST {dst.uri!r} is ARCHIVE: both keep a manifest/, restore elsewhere")
    options = s3_options(config.storage_options)
    items = list_items(archive, config.only)
    model_ref = config.model or default_model(archive_scale(items, options))
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


def list_items(archive: Location, only: str | None) -> Buckets:
    """The images to restore, from the archive manifest or else from ARCHIVE/lr/*.png, by
    bucket."""
    items = Buckets(ITEM_SCHEMA)
    try:
        manifest = archive.child(MANIFEST_DIR)
        if list_parts(manifest):
            with merged_buckets(manifest, ARCHIVE_SCHEMA) as rows:
                for k in range(rows.n):
                    items.add(manifest_items(archive, latest(rows.bucket(k, rows.n)), only))
        else:
            items.extend(lr_items(archive, table, only) for table in walk(archive.child(LR_DIR)))
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if not items.rows:
        if only is not None and (list_parts(archive.child(MANIFEST_DIR)) or lr_pngs(archive)):
            raise ValueError(f"no input: --only {only!r} matches none of the images")
        raise ValueError(f"no input: ARCHIVE {archive.uri!r} has no manifest rows and no LR PNGs")
    return items


def lr_pngs(archive: Location) -> bool:
    return any(len(lr_items(archive, t, None)) for t in walk(archive.child(LR_DIR)))


def matching(table: pa.Table, only: str | None) -> pa.Table:
    """The rows whose rel_path matches the --only pattern (fnmatch; "*" also matches "/")."""
    if only is None:
        return table
    hits = [fnmatch.fnmatchcase(p, only) for p in table["rel_path"].to_pylist()]
    return table.filter(pa.array(hits, pa.bool_()))


def manifest_items(archive: Location, rows: pa.Table, only: str | None) -> pa.Table:
    rows = matching(rows.filter(pc.is_in(rows["status"], pa.array(DONE))), only)
    return pa.table(
        {
            "rel_path": rows["rel_path"],
            "lr_uri": lr_uris(archive, rows["rel_path"]),
            "source_uri": rows["source_uri"],
            "scale": rows["scale"],
        },
        schema=ITEM_SCHEMA,
    )


def lr_items(archive: Location, listing: pa.Table, only: str | None) -> pa.Table:
    """LR PNGs listed under ARCHIVE/lr/ (named <rel_path>.png, rel_path an image name)."""
    names = listing["rel_path"]
    keep = pc.and_(
        pc.ends_with(names, ".png"),
        pc.match_substring_regex(
            names, r"(^|/)[^./][^/]*" + IMAGE_NAME[:-2] + r"\.png\z", ignore_case=True
        ),
    )
    rel_paths = pc.utf8_slice_codeunits(names.filter(keep), 0, -len(".png"))
    table = matching(pa.table({"rel_path": rel_paths}), only)
    n = len(table)
    return pa.table(
        {
            "rel_path": table["rel_path"],
            "lr_uri": lr_uris(archive, table["rel_path"]),
            "source_uri": pa.nulls(n, pa.string()),
            "scale": pa.nulls(n, pa.int64()),
        },
        schema=ITEM_SCHEMA,
    )


def lr_uris(archive: Location, rel_paths: pa.ChunkedArray) -> pa.ChunkedArray:
    lr_root = archive.uri_of(archive.path(LR_DIR) + "/")
    return pc.binary_join_element_wise(lr_root, rel_paths, ".png", "")


def archive_scale(items: Buckets, options: dict[str, Any]) -> int:
    """The scale the default model must have: the manifest's, or the first LR PNG's."""
    scales: set[int] = set()
    first = None
    for k in range(items.n):
        bucket = items.bucket(k, items.n)
        scales.update(s for s in pc.unique(bucket["scale"]).to_pylist() if s is not None)
        if first is None and len(bucket):
            first = bucket["lr_uri"][0].as_py()
    if len(scales) > 1:
        raise ValueError(f"the archive mixes scales {sorted(scales)}: pass --model")
    if scales:
        return scales.pop()
    location = Location.parse(first, options)
    try:
        return decode_lr_png(location.filesystem().cat_file(location.root))[1].scale
    except ValueError as e:
        raise ValueError(f"{first}: {e}; pass --model") from None
