"""The driver of the archive and restore jobs: one shape, two plans.

A plan (pipeline/archive/plan.py, pipeline/restore/plan.py) is a job prepared in the driver,
without Ray: its images, the rows of those an earlier run finished, and its Ray Data stages.
`run` then does, on the running Ray cluster:

    skip what is finished -> source -> read (fused into the model actors) -> model (actor pool,
    one TADM each) -> write (tasks) -> rows back to the driver -> manifest parts -> compact

`build_graph` is the one place that picks actors, GPUs and batch sizes.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import ray

from pipeline.format import MANIFEST_DIR
from pipeline.manifest import ManifestWriter, compact
from pipeline.resources import Resources, plan_resources
from pipeline.rows import to_rows
from pipeline.stage import ModelStage, Row
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
    max_errors: int | None = None  # stop the job once more images than this failed
    retry_errors: bool = False  # retry an earlier run's permanent failures too

    def check(self) -> None:
        """ValueError naming the option that is out of range (the rest is checked against
        the Ray cluster by plan_resources)."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_errors is not None and self.max_errors < 0:
            raise ValueError(f"--max-errors must be at least 0, got {self.max_errors}")


class Entry(Protocol):
    """One image a job is to do: a source file, an LR file."""

    @property
    def rel_path(self) -> str: ...


@dataclass(frozen=True)
class Stages:
    """A job's Ray Data graph after its source: functions and the keyword arguments they take."""

    read: Callable[..., Batch]  # CPU stage, fused into the model actors
    read_kwargs: dict[str, Any]
    model: type[ModelStage]  # constructed once per actor, with torch_threads added
    model_kwargs: dict[str, Any]
    write: Callable[..., Batch]  # I/O stage: returns the manifest rows
    write_kwargs: dict[str, Any]


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
    def images(self) -> Sequence[Entry]:
        """Every image of the job, finished by an earlier run or not."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What to log about the job, before the options every job shares."""

    @abstractmethod
    def finished(self) -> dict[str, Row]:
        """Rows an earlier run settled, by rel_path, written again as they are and not redone:
        images it finished (status "skipped") and, unless --retry-errors, its permanent
        failures (status "error", error_kind PERMANENT)."""

    @abstractmethod
    def source(self, todo: Sequence[Entry], resources: Resources) -> ray.data.Dataset:
        """One row per image in `todo`, for the read stage."""

    @abstractmethod
    def stages(self) -> Stages:
        """The read, model and write stages."""

    @abstractmethod
    def lost(self, todo: Sequence[Entry]) -> list[Row]:
        """Error rows for the images in `todo` whose row never came back from the graph."""


@dataclass(frozen=True)
class JobResult:
    """What a run did. An earlier run's permanent failures, not retried, are not this run's
    errors: a job where nothing new failed exits 0."""

    counts: dict[str, int]  # this run's rows by status (earlier permanent failures apart)
    permanent: int = 0  # an earlier run's permanent failures, not retried
    stopped: bool = False  # stopped early: more images than --max-errors failed

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("error") else 0


def run(plan: Plan) -> JobResult:
    """Run a prepared job on the running Ray cluster."""
    config, images, name = plan.config, plan.images, plan.name
    batches = -(-len(images) // config.batch_size)
    resources = plan_resources(config.workers, config.gpus_per_worker, batches=batches)
    settings = plan.settings() | {
        "overwrite": config.overwrite,
        "batch_size": config.batch_size,
        "workers": resources.workers,
        "gpus_per_worker": resources.gpus_per_worker,
        "torch_threads": resources.torch_threads,
        "storage_options": plan.dst.redacted_options(),
    }
    logger.info("%s: %s", name, " ".join(f"{k}={v}" for k, v in settings.items()))
    stale = remove_stale_temps(plan.dst.filesystem(), plan.dst.root)
    if stale:
        logger.info("%s: removed %d temporary files of an interrupted run", name, stale)
    manifest = plan.dst.child(MANIFEST_DIR)
    finished = {} if config.overwrite else plan.finished()
    todo = [image for image in images if image.rel_path not in finished]
    settled = [finished[image.rel_path] for image in images if image.rel_path in finished]
    writer = ManifestWriter(manifest, plan.schema)
    writer.add(settled)
    skipped = sum(row["status"] == "skipped" for row in settled)
    permanent = len(settled) - skipped
    counts = Counter({"skipped": skipped} if skipped else {})
    if skipped:
        logger.info(
            "%s: %d of %d images done by an earlier run, skipped", name, skipped, len(images)
        )
    if permanent:
        logger.info("%s: %s", name, not_retried(permanent))
    stopped = False
    try:
        if todo:
            streamed, stopped = stream(plan, build_graph(plan, resources, todo), todo, writer)
            counts += streamed
    finally:  # also when interrupted or crashed: the rows received are kept, a re-run resumes
        writer.flush()
    compact(manifest, plan.schema)
    result = JobResult(counts=dict(counts), permanent=permanent, stopped=stopped)
    logger.info("%s: %s; manifest at %s", name, summary(result, len(todo), config), manifest.uri)
    return result


def not_retried(permanent: int) -> str:
    return (
        f"{permanent} permanent failures of an earlier run not retried "
        "(--retry-errors retries them)"
    )


def summary(result: JobResult, todo: int, config: JobOptions) -> str:
    """The end of a job in words: "done, {'ok': 3, 'skipped': 2}", and what was not done."""
    counts = dict(sorted(result.counts.items()))
    parts = [f"done, {counts}"]
    if result.stopped:
        attempted = sum(n for status, n in counts.items() if status != "skipped")
        parts = [
            f"stopped early, {counts}: more than --max-errors {config.max_errors} images "
            f"failed; {todo - attempted} images not attempted (a re-run does them)"
        ]
    if result.permanent:
        parts.append(not_retried(result.permanent))
    return "; ".join(parts)


def build_graph(plan: Plan, resources: Resources, todo: Sequence[Entry]) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes."""
    stages, batch_size = plan.stages(), plan.config.batch_size
    # The read stage has no compute strategy of its own: Ray Data fuses it into the model
    # actors. As a separate stage it would need a CPU, and with --workers equal to the
    # cluster's CPUs never run.
    ds = plan.source(todo, resources).map_batches(
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
    return ds.map_batches(
        stages.write,
        fn_kwargs=stages.write_kwargs,
        batch_size=batch_size,
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=resources.io_tasks),
    )


def stream(
    plan: Plan, ds: ray.data.Dataset, todo: Sequence[Entry], writer: ManifestWriter
) -> tuple[Counter, bool]:
    """Run the graph, writing its rows to the manifest as they come; rows by status, and
    whether it stopped early because more images than --max-errors failed."""
    counts: Counter = Counter()
    progress = Progress(plan.name, total=len(todo))
    seen = set()
    max_errors = plan.config.max_errors
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = to_rows(batch)
        writer.add(rows)
        seen.update(row["rel_path"] for row in rows)
        statuses = Counter(row["status"] for row in rows)
        counts += statuses
        progress.update(len(rows), statuses["error"])
        if max_errors is not None and counts["error"] > max_errors:
            return counts, True
    lost = plan.lost([image for image in todo if image.rel_path not in seen])
    if lost:
        writer.add(lost)
        counts["error"] += len(lost)
        progress.update(len(lost), len(lost))
    return counts, False


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
