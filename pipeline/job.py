"""The driver of the archive and restore jobs: one shape, two plans.

A plan (pipeline/archive/plan.py, pipeline/restore/plan.py) is a job prepared in the driver,
without Ray: its images (a table by bucket, pipeline/buckets.py), how one bucket splits into
rows to write now (skipped, errors) and images to run, and its Ray Data stages. `run` then
does, on the running Ray cluster, holding DST's lease (pipeline/lease.py):

    split bucket by bucket (columnar joins against the manifest) -> blocks of images put in
    the object store -> source -> read (fused into the model actors) -> model (actor pool, one
    TADM each) -> write (tasks) -> manifest rows to the writer actor, which appends parts ->
    counts by status back to the driver -> compact

`build_graph` is the one place that picks actors, GPUs and batch sizes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.buckets import Buckets
from pipeline.format import MANIFEST_DIR
from pipeline.lease import Lease
from pipeline.manifest import ManifestWriter, compact, latest, merged_buckets, to_table
from pipeline.resources import Resources, plan_resources
from pipeline.rows import to_rows
from pipeline.stage import ModelStage
from pipeline.storage import Location, remove_stale_temps

logger = logging.getLogger("tadm")

Batch = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """What archive and restore configure alike: the model actors, batches, re-runs, storage."""

    workers: int | None = None  # model actors; None: one per GPU, or one per core up to 4
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    batch_size: int = 8  # images per batch (on a GPU same-size ones share one forward pass)
    overwrite: bool = False  # redo images an earlier run finished
    storage_options: dict[str, Any] = field(default_factory=dict)  # s3fs options

    def check(self) -> None:
        """ValueError naming the option that is out of range (the rest is checked against
        the Ray cluster by plan_resources)."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class Stages:
    """A job's Ray Data graph after its source: functions and the keyword arguments they take."""

    read: Callable[..., Batch]  # CPU stage, fused into the model actors
    read_kwargs: dict[str, Any]
    model: type[ModelStage]  # constructed once per actor, with torch_threads added
    model_kwargs: dict[str, Any]
    write: Callable[..., Batch]  # I/O stage: returns the manifest rows
    write_kwargs: dict[str, Any]


# What a plan lists of the outputs already in DST, to tell which earlier rows still hold.
OUTPUT_SCHEMA = pa.schema([("rel_path", pa.string()), ("size", pa.int64())])
PLAN_PART_ROWS = 100_000  # rows of a manifest part the driver writes (skipped, plan errors)


@dataclass(frozen=True)
class Plan(ABC):
    """A job resolved against storage and the model, without Ray; what differs between
    archive and restore is in the subclasses' fields and methods."""

    name: ClassVar[str]  # "archive" or "restore": the log lines' prefix
    schema: ClassVar[pa.Schema]  # of the manifest under dst

    config: JobOptions
    dst: Location
    options: dict[str, Any]  # resolved S3 options, passed to every worker
    model_ref: str  # as given, or the default for the scale
    model_id: str

    @property
    @abstractmethod
    def images(self) -> Buckets:
        """Every image of the job (a table with rel_path), finished by an earlier run or not."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What to log about the job, before the options every job shares."""

    @abstractmethod
    def outputs(self) -> Iterator[pa.Table]:
        """The outputs in DST, as tables of OUTPUT_SCHEMA (rel_path of the image, size)."""

    @abstractmethod
    def split(
        self, images: pa.Table, done: pa.Table | None, outputs: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """One bucket of images -> (manifest rows to write now: "skipped" for images an
        earlier run finished, errors the plan finds; the images to run). `done`: the latest
        manifest rows of the bucket (None with --overwrite); `outputs`: its outputs in DST."""

    @abstractmethod
    def source(self, blocks: list[ray.ObjectRef], resources: Resources) -> ray.data.Dataset:
        """One row per image to run, for the read stage, from the blocks of images put."""

    @abstractmethod
    def stages(self) -> Stages:
        """The read, model and write stages."""


@dataclass(frozen=True)
class JobResult:
    counts: dict[str, int]  # this run's rows by status

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("error") else 0


def split_buckets(plan: Plan) -> Iterator[tuple[pa.Table, pa.Table]]:
    """plan.split of each bucket of the plan's images, the manifest and the outputs lined up:
    memory bounded by one bucket of each."""
    overwrite, images = plan.config.overwrite, plan.images
    manifest = plan.dst.child(MANIFEST_DIR)
    with contextlib.ExitStack() as stack:
        done = None if overwrite else stack.enter_context(merged_buckets(manifest, plan.schema))
        outputs = stack.enter_context(Buckets(OUTPUT_SCHEMA))
        if not overwrite:
            outputs.extend(plan.outputs())
        n = max(images.n, outputs.n, 1 if done is None else done.n)
        for k in range(n):
            rows = None if done is None else latest(done.bucket(k, n), ordered=False)
            yield plan.split(images.bucket(k, n), rows, outputs.bucket(k, n))


def block_rows(total: int, batch_size: int) -> int:
    """Rows of a block of the graph's source: a few batches for small jobs (each block is a
    read task), up to 10,000 for large ones (each block is an object in the driver)."""
    return min(10_000, max(batch_size, -(-total // 256)))


def run(plan: Plan) -> JobResult:
    """Run a prepared job on the running Ray cluster, holding DST's lease."""
    with plan.images, Lease(plan.dst, plan.name):  # the images' spilled buckets are removed
        return run_held(plan)


def run_held(plan: Plan) -> JobResult:
    config, name = plan.config, plan.name
    stale = remove_stale_temps(plan.dst.filesystem(), plan.dst.root)
    if stale:
        logger.info("%s: removed %d temporary files of an interrupted run", name, stale)
    manifest = plan.dst.child(MANIFEST_DIR)
    writer = ManifestWriter(manifest, plan.schema, flush_rows=PLAN_PART_ROWS)
    counts: Counter = Counter()
    blocks, todo = [], 0
    size = block_rows(plan.images.rows, config.batch_size)
    for rows, images in split_buckets(plan):
        writer.add(rows)
        counts += Counter(dict(zip(*status_counts(rows["status"]), strict=True)))
        for start in range(0, len(images), size):
            blocks.append(ray.put(images.slice(start, size)))
        todo += len(images)
    writer.flush()
    resources = plan_resources(
        config.workers, config.gpus_per_worker, batches=-(-todo // config.batch_size)
    )
    settings = plan.settings() | {
        "overwrite": config.overwrite,
        "batch_size": config.batch_size,
        "workers": resources.workers,
        "gpus_per_worker": resources.gpus_per_worker,
        "torch_threads": resources.torch_threads,
        "storage_options": plan.dst.redacted_options(),
    }
    logger.info("%s: %s", name, " ".join(f"{k}={v}" for k, v in settings.items()))
    if counts["skipped"]:
        logger.info(
            "%s: %d of %d images done by an earlier run, skipped",
            name,
            counts["skipped"],
            plan.images.rows,
        )
    if counts["error"]:
        logger.info("%s: %d images are errors before reading them", name, counts["error"])
    if blocks:
        sink = ray.remote(ManifestWriter).options(num_cpus=0).remote(manifest, plan.schema)
        try:
            counts += stream(plan, build_graph(plan, resources, blocks, sink), todo)
            ray.get(sink.flush.remote())
        finally:
            ray.kill(sink)
    compact(manifest, plan.schema)
    logger.info("%s: done, %s; manifest at %s", name, dict(sorted(counts.items())), manifest.uri)
    return JobResult(counts=dict(counts))


def build_graph(
    plan: Plan, resources: Resources, blocks: list[ray.ObjectRef], sink: ray.actor.ActorHandle
) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes."""
    stages, batch_size = plan.stages(), plan.config.batch_size
    # The read stage has no compute strategy of its own: Ray Data fuses it into the model
    # actors. As a separate stage it would need a CPU, and with --workers equal to the
    # cluster's CPUs never run.
    ds = plan.source(blocks, resources).map_batches(
        stages.read, fn_kwargs=stages.read_kwargs, batch_size=batch_size
    )
    ds = ds.map_batches(
        stages.model,
        fn_constructor_kwargs=stages.model_kwargs | {"torch_threads": resources.torch_threads},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_gpus=resources.gpus_per_worker,
    )
    # I/O: reserves no CPU, or with --workers equal to the cluster's CPUs it would never run.
    io = {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=resources.io_tasks)}
    ds = ds.map_batches(stages.write, fn_kwargs=stages.write_kwargs, batch_size=batch_size, **io)
    return ds.map_batches(
        send_rows, fn_kwargs={"sink": sink, "schema": plan.schema}, batch_size=None, **io
    )


def send_rows(batch: Batch, *, sink: ray.actor.ActorHandle, schema: pa.Schema) -> Batch:
    """Write stage's tail: hand the batch's manifest rows to the job's writer actor, and give
    the driver only their count by status."""
    table = to_table(to_rows(batch), schema)
    ray.get(sink.add.remote(table))
    statuses, counts = status_counts(table["status"])
    return {"status": np.array(statuses, dtype=object), "count": np.array(counts, dtype=np.int64)}


def status_counts(statuses: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    counts = pc.value_counts(statuses)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def stream(plan: Plan, ds: ray.data.Dataset, total: int) -> Counter:
    """Run the graph, whose rows go to the manifest from the workers; rows by status."""
    counts: Counter = Counter()
    progress = Progress(plan.name, total=total)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        statuses = dict(zip(batch["status"].tolist(), batch["count"].tolist(), strict=True))
        counts += Counter(statuses)
        progress.update(sum(statuses.values()), statuses.get("error", 0))
    return counts


class Progress:
    """Logs "<job>: 40/120 images, 2 errors, 3.10 images/s" on stderr (the "tadm" logger) at
    most every `every` seconds, and always when the last image is done."""

    def __init__(self, job: str, total: int, every: float = 2.0) -> None:
        self.job = job
        self.total = total
        self.every = every
        self.done = 0
        self.errors = 0
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, errors: int) -> None:
        self.done += done
        self.errors += errors
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            logger.info("%s", self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.job}: {self.done}/{self.total} images, {self.errors} errors, "
            f"{rate:.2f} images/s"
        )
