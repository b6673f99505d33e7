"""The archive job: every image under SRC -> DST/lr/<rel_path>.png + DST/manifest/.

Plan in the driver (list SRC, skip what an earlier run finished), then one Ray Data graph:

    read_binary_files -> decode_batch (tasks) -> Downscale (actor pool, one TADM each)
                      -> write_lr (tasks) -> rows back to the driver -> manifest parts
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline.archive.downscale import Downscale
from pipeline.archive.write import lr_key, write_lr
from pipeline.decode import MAX_PIXELS, decode_batch
from pipeline.manifest import (
    ARCHIVE_SCHEMA,
    DONE,
    MANIFEST_DIR,
    ManifestWriter,
    compact,
    read_manifest,
)
from pipeline.model_loading import default_model, load_model
from pipeline.progress import Progress
from pipeline.resources import Resources, plan_resources
from pipeline.rows import to_rows
from pipeline.sources import IMAGE_EXTENSIONS, SourceFile, list_sources
from pipeline.storage import Location, remove_stale_temps, s3_options
from tadm.config import SCALES

logger = logging.getLogger("tadm")


@dataclass(frozen=True)
class ArchiveConfig:
    src: str  # URI of the images: local path, file:// or s3://
    dst: str  # URI of the archive
    scale: int | None = None  # 16 or 32; None: the model's scale (16 for the default model)
    model: str | None = None  # shipped name, folder or URI; None: default_model(scale)
    verify: bool = False  # reconstruct each image to fill psnr, ssim, timestep_mean
    workers: int | None = None  # model actors; None: one per GPU, or one on a CPU cluster
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    batch_size: int = 8  # images per batch (on a GPU same-size ones share one forward pass)
    overwrite: bool = False  # redo images an earlier run finished
    storage_options: dict[str, Any] = field(default_factory=dict)  # s3fs options


@dataclass(frozen=True)
class ArchiveJob:
    """The configuration resolved against storage and the model (no Ray needed yet)."""

    config: ArchiveConfig
    src: Location
    dst: Location
    options: dict[str, Any]  # resolved S3 options, passed to every worker
    model_ref: str
    model_id: str
    scale: int
    sources: list[SourceFile]
    prefix: str  # stripped from a source path to give its rel_path


@dataclass(frozen=True)
class ArchiveResult:
    counts: dict[str, int]  # this run's rows by status
    model_id: str
    scale: int

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("error") else 0


def run_archive(job: ArchiveJob) -> ArchiveResult:
    """Run a prepared job on the running Ray cluster."""
    config = job.config
    batches = -(-len(job.sources) // config.batch_size)
    resources = plan_resources(config.workers, config.gpus_per_worker, batches=batches)
    settings = {
        "src": job.src.uri,
        "dst": job.dst.uri,
        "images": len(job.sources),
        "model": f"{job.model_ref} (id {job.model_id}, x{job.scale})",
        "verify": config.verify,
        "overwrite": config.overwrite,
        "batch_size": config.batch_size,
        "workers": resources.workers,
        "gpus_per_worker": resources.gpus_per_worker,
        "torch_threads": resources.torch_threads,
        "storage_options": job.dst.redacted_options(),
    }
    logger.info("archive: %s", " ".join(f"{k}={v}" for k, v in settings.items()))
    stale = remove_stale_temps(job.dst.filesystem(), job.dst.root)
    if stale:
        logger.info("archive: removed %d temporary files of an interrupted run", stale)
    manifest = job.dst.child(MANIFEST_DIR)
    previous = {} if config.overwrite else done_rows(job)
    todo = [s for s in job.sources if not is_done(previous.get(s.rel_path), s)]
    skipped = [
        previous[s.rel_path] | {"status": "skipped", "source_uri": job.src.uri_of(s.path)}
        for s in job.sources
        if is_done(previous.get(s.rel_path), s)
    ]
    writer = ManifestWriter(manifest, ARCHIVE_SCHEMA)
    writer.add(skipped)
    counts = Counter({"skipped": len(skipped)} if skipped else {})
    if skipped:
        logger.info(
            "archive: %d of %d images done by an earlier run, skipped",
            len(skipped),
            len(job.sources),
        )
    if todo:
        counts += stream(job, build_graph(job, resources, todo), todo, writer)
    writer.flush()
    compact(manifest, ARCHIVE_SCHEMA)
    logger.info("archive: done, %s; manifest at %s", dict(sorted(counts.items())), manifest.uri)
    return ArchiveResult(counts=dict(counts), model_id=job.model_id, scale=job.scale)


def prepare_archive(config: ArchiveConfig) -> ArchiveJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.scale is not None and config.scale not in SCALES:
        raise ValueError(f"--scale must be 16 or 32, got {config.scale}")
    if config.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {config.batch_size}")
    src = Location.parse(config.src, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    if dst == src:
        raise ValueError(f"DST {dst.uri!r} is SRC: write the archive somewhere else")
    options = s3_options(config.storage_options)
    try:
        sources, prefix = list_sources(src, exclude=dst)
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
    return ArchiveJob(config, src, dst, options, model_ref, model_id, scale, sources, prefix)


def done_rows(job: ArchiveJob) -> dict[str, dict[str, Any]]:
    """Rows, by rel_path, of images an earlier run finished with this model and scale whose LR
    file is still there with the recorded size. With --verify, rows without psnr don't count."""
    table = read_manifest(job.dst.child(MANIFEST_DIR), ARCHIVE_SCHEMA)
    if table is None:
        return {}
    fs = job.dst.filesystem()
    lr_sizes = {p: i["size"] for p, i in fs.find(job.dst.path("lr"), detail=True).items()}
    return {
        row["rel_path"]: row
        for row in table.to_pylist()
        if row["status"] in DONE
        and row["model_id"] == job.model_id
        and row["scale"] == job.scale
        and lr_sizes.get(job.dst.path(lr_key(row["rel_path"]))) == row["lr_bytes"]
        and not (job.config.verify and row["psnr"] is None)
    }


def is_done(row: dict[str, Any] | None, source: SourceFile) -> bool:
    """Finished by an earlier run, from a file of the same size."""
    return row is not None and row["source_bytes"] == source.size


def build_graph(job: ArchiveJob, resources: Resources, todo: list[SourceFile]) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes."""
    batch_size = job.config.batch_size
    ds = ray.data.read_binary_files(
        [s.path for s in todo],
        filesystem=job.src.arrow_filesystem(),
        include_paths=True,
        ignore_missing_paths=True,
        num_cpus=0,  # I/O: runs while the model actors hold every CPU
        concurrency=resources.io_tasks,
    )
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={
            "prefix": job.prefix,
            "uri_prefix": job.src.uri_of(""),
            "scale": job.scale,
            "max_pixels": MAX_PIXELS,
        },
        batch_size=batch_size,
    )
    ds = ds.map_batches(
        Downscale,
        fn_constructor_kwargs={
            "model": job.model_ref,
            "storage_options": job.options,
            "verify": job.config.verify,
            "torch_threads": resources.torch_threads,
        },
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_gpus=resources.gpus_per_worker,
    )
    # I/O again: with --workers equal to the cluster's CPUs, a task that needs a CPU never runs.
    return ds.map_batches(
        write_lr,
        fn_kwargs={"dst": job.dst},
        batch_size=batch_size,
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=resources.io_tasks),
    )


def stream(
    job: ArchiveJob, ds: ray.data.Dataset, todo: list[SourceFile], writer: ManifestWriter
) -> Counter:
    """Run the graph, writing its rows to the manifest as they come; rows by status."""
    counts: Counter = Counter()
    progress = Progress("archive", total=len(todo))
    seen = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = to_rows(batch)
        writer.add(rows)
        seen.update(row["rel_path"] for row in rows)
        statuses = Counter(row["status"] for row in rows)
        counts += statuses
        progress.update(len(rows), statuses["error"])
    vanished = [
        {
            "source_uri": job.src.uri_of(s.path),
            "rel_path": s.rel_path,
            "status": "error",
            "error": "source file disappeared before it was read",
            "source_bytes": s.size,
            "scale": job.scale,
            "model_id": job.model_id,
        }
        for s in todo
        if s.rel_path not in seen
    ]
    if vanished:
        writer.add(vanished)
        counts["error"] += len(vanished)
        progress.update(len(vanished), len(vanished))
    return counts
