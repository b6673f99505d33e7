"""The restore job: an archive's LR PNGs -> DST/<rel_path>.<format> + DST/manifest/.

Which images: the archive manifest's ok and skipped rows, or, when the archive has no manifest,
every PNG under ARCHIVE/lr/ (its text chunks carry everything a restore needs). Then:

    from_items -> read_lr_batch (tasks) -> Upscale (actor pool, one TADM each)
               -> write_restored (tasks) -> rows back to the driver -> manifest parts
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline.archive.write import lr_key
from pipeline.format import decode_lr_png
from pipeline.manifest import (
    ARCHIVE_SCHEMA,
    DONE,
    MANIFEST_DIR,
    RESTORE_SCHEMA,
    ManifestWriter,
    compact,
    read_manifest,
)
from pipeline.model_loading import default_model, load_model
from pipeline.progress import Progress
from pipeline.resources import Resources, plan_resources
from pipeline.restore.read import Region, read_lr_batch, region_text
from pipeline.restore.upscale import Upscale
from pipeline.restore.write import OUTPUT_FORMATS, output_key, write_restored
from pipeline.rows import to_rows
from pipeline.sources import is_image_name
from pipeline.storage import Location, remove_stale_temps, s3_options

logger = logging.getLogger("tadm")


@dataclass(frozen=True)
class RestoreConfig:
    archive: str  # URI of an archive written by archive
    dst: str  # URI to restore into
    region: Region | None = None  # (x, y, w, h) in HR pixels, the same for every image
    only: str | None = None  # fnmatch pattern on rel_path ("*" also matches "/")
    model: str | None = None  # None: default_model(the archive's scale)
    image_format: str = "png"  # png, jpeg or webp
    workers: int | None = None  # model actors; None: one per GPU, or one on a CPU cluster
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    batch_size: int = 4  # images per batch (on a GPU same-size ones share one forward pass)
    overwrite: bool = False  # redo images an earlier restore into DST finished
    storage_options: dict[str, Any] = field(default_factory=dict)  # s3fs options


@dataclass(frozen=True)
class Item:
    """One image to restore."""

    rel_path: str
    lr_uri: str  # ARCHIVE/lr/<rel_path>.png, wherever the archive lives now
    source_uri: str | None  # from the archive manifest, for psnr/ssim when still readable
    scale: int | None  # from the archive manifest; None when restoring from PNGs alone


@dataclass(frozen=True)
class RestoreResult:
    counts: dict[str, int]  # this run's rows by status
    model_id: str

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("error") else 0


@dataclass(frozen=True)
class RestoreJob:
    """The configuration resolved against storage and the model (no Ray needed yet)."""

    config: RestoreConfig
    archive: Location
    dst: Location
    options: dict[str, Any]  # resolved S3 options, passed to every worker
    items: list[Item]
    model_ref: str
    model_id: str


def prepare_restore(config: RestoreConfig) -> RestoreJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.image_format not in OUTPUT_FORMATS:
        raise ValueError(f"--format must be png, jpeg or webp, got {config.image_format!r}")
    if config.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {config.batch_size}")
    archive = Location.parse(config.archive, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    if dst == archive:
        raise ValueError(f"DST {dst.uri!r} is ARCHIVE: both keep a manifest/, restore elsewhere")
    options = s3_options(config.storage_options)
    items = list_items(archive, config.only)
    model_ref = config.model or default_model(archive_scale(items, options))
    model_id = load_model(model_ref, options).model_id
    return RestoreJob(config, archive, dst, options, items, model_ref, model_id)


def run_restore(job: RestoreJob) -> RestoreResult:
    """Run a prepared job on the running Ray cluster."""
    config = job.config
    batches = -(-len(job.items) // config.batch_size)
    resources = plan_resources(config.workers, config.gpus_per_worker, batches=batches)
    settings = {
        "archive": job.archive.uri,
        "dst": job.dst.uri,
        "images": len(job.items),
        "only": config.only,
        "region": region_text(config.region),
        "format": config.image_format,
        "model": f"{job.model_ref} (id {job.model_id})",
        "overwrite": config.overwrite,
        "batch_size": config.batch_size,
        "workers": resources.workers,
        "gpus_per_worker": resources.gpus_per_worker,
        "torch_threads": resources.torch_threads,
        "storage_options": job.dst.redacted_options(),
    }
    logger.info("restore: %s", " ".join(f"{k}={v}" for k, v in settings.items()))
    stale = remove_stale_temps(job.dst.filesystem(), job.dst.root)
    if stale:
        logger.info("restore: removed %d temporary files of an interrupted run", stale)
    manifest = job.dst.child(MANIFEST_DIR)
    previous = {} if config.overwrite else done_rows(job)
    todo = [item for item in job.items if item.rel_path not in previous]
    skipped = [
        previous[i.rel_path] | {"status": "skipped"} for i in job.items if i.rel_path in previous
    ]
    writer = ManifestWriter(manifest, RESTORE_SCHEMA)
    writer.add(skipped)
    counts = Counter({"skipped": len(skipped)} if skipped else {})
    if skipped:
        logger.info(
            "restore: %d of %d images restored by an earlier run, skipped",
            len(skipped),
            len(job.items),
        )
    if todo:
        counts += stream(build_graph(job, resources, todo), len(todo), writer)
    writer.flush()
    compact(manifest, RESTORE_SCHEMA)
    logger.info("restore: done, %s; manifest at %s", dict(sorted(counts.items())), manifest.uri)
    return RestoreResult(counts=dict(counts), model_id=job.model_id)


def list_items(archive: Location, only: str | None) -> list[Item]:
    """The images to restore, from the archive manifest or else from ARCHIVE/lr/*.png."""
    try:
        table = read_manifest(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA)
        if table is not None:
            items = [
                Item(r["rel_path"], lr_uri(archive, r["rel_path"]), r["source_uri"], r["scale"])
                for r in table.to_pylist()
                if r["status"] in DONE
            ]
        else:
            lr_root = archive.path("lr") + "/"
            paths = archive.filesystem().find(lr_root)
            items = [
                Item(p[len(lr_root) : -len(".png")], archive.uri_of(p), None, None)
                for p in sorted(paths)
                if p.endswith(".png") and is_image_name(p.rsplit("/", 1)[-1])
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


def lr_uri(archive: Location, rel_path: str) -> str:
    return archive.uri_of(archive.path(lr_key(rel_path)))


def archive_scale(items: list[Item], options: dict[str, Any]) -> int:
    """The scale the default model must have: the manifest's, or the first LR PNG's."""
    scales = {item.scale for item in items if item.scale is not None}
    if len(scales) > 1:
        raise ValueError(f"the archive mixes scales {sorted(scales)}: pass --model")
    if scales:
        return scales.pop()
    location = Location.parse(items[0].lr_uri, options)
    try:
        return decode_lr_png(location.filesystem().cat_file(location.root))[1].scale
    except ValueError as e:
        raise ValueError(f"{items[0].lr_uri}: {e}; pass --model") from None


def done_rows(job: RestoreJob) -> dict[str, dict[str, Any]]:
    """Rows, by rel_path, of the job's images that an earlier restore into DST finished with
    this model, region and format, whose output is still there."""
    config, dst = job.config, job.dst
    table = read_manifest(dst.child(MANIFEST_DIR), RESTORE_SCHEMA)
    if table is None:
        return {}
    existing = set(dst.filesystem().find(dst.root))
    region = region_text(config.region)
    wanted = {item.rel_path for item in job.items}
    done = {}
    for row in table.to_pylist():
        path = dst.path(output_key(row["rel_path"], config.image_format))
        if (
            row["rel_path"] in wanted
            and row["status"] in DONE
            and row["model_id"] == job.model_id
            and row["region"] == region
            and row["output_uri"] == dst.uri_of(path)
            and path in existing
        ):
            done[row["rel_path"]] = row
    return done


def build_graph(job: RestoreJob, resources: Resources, todo: list[Item]) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes."""
    # "" for no source: a column of nothing but None would reach the stage as NaN floats.
    items = [
        {"rel_path": i.rel_path, "lr_uri": i.lr_uri, "source_uri": i.source_uri or ""} for i in todo
    ]
    ds = ray.data.from_items(items)
    config = job.config
    # No compute strategy of its own: Ray Data fuses it into the Upscale actors. As a separate
    # stage it would need a CPU, and with --workers equal to the cluster's CPUs never run.
    ds = ds.map_batches(
        read_lr_batch,
        fn_kwargs={"model_id": job.model_id, "region": config.region, "options": job.options},
        batch_size=config.batch_size,
    )
    ds = ds.map_batches(
        Upscale,
        fn_constructor_kwargs={
            "model": job.model_ref,
            "storage_options": job.options,
            "region": config.region,
            "torch_threads": resources.torch_threads,
        },
        batch_size=config.batch_size,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_gpus=resources.gpus_per_worker,
    )
    # I/O: reserves no CPU, or with --workers equal to the cluster's CPUs it would never run.
    return ds.map_batches(
        write_restored,
        fn_kwargs={"dst": job.dst, "image_format": config.image_format},
        batch_size=config.batch_size,
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=resources.io_tasks),
    )


def stream(ds: ray.data.Dataset, total: int, writer: ManifestWriter) -> Counter:
    """Run the graph, writing its rows to the manifest as they come; rows by status."""
    counts: Counter = Counter()
    progress = Progress("restore", total=total)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = to_rows(batch)
        writer.add(rows)
        statuses = Counter(row["status"] for row in rows)
        counts += statuses
        progress.update(len(rows), statuses["error"])
    return counts
