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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa

from pipeline.format import DONE, KEPT, MANIFEST_DIR
from pipeline.manifest import ManifestWriter, compact
from pipeline.rows import to_rows
from pipeline.storage import Location, remove_stale_temps

# Ray and torch are imported where a job runs: the CLI builds its parsers from JobOptions
# without them.
if TYPE_CHECKING:
    import ray

    from pipeline.resources import Resources
    from pipeline.stage import ModelStage, Row

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
    errors_hint: ClassVar[str]  # where to read the errors; {dst}, {manifest}: their URIs

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
    """What a job did: its last log line, and the JSON object of --json. An earlier run's
    permanent failures, not retried, are not this run's errors: a job where nothing new failed
    exits 0."""

    job: str  # "archive" or "restore"
    counts: dict[str, int]  # this run's rows by status (earlier permanent failures apart)
    manifest: str  # URI of the manifest the rows are in
    seconds: float  # the job's wall time
    errors_hint: str  # where to read the errors
    source_bytes: int | None = None  # of the images shrunk (ok or skipped); archive only
    lr_bytes: int | None = None  # of their LR PNGs; archive only
    permanent: int = 0  # an earlier run's permanent failures, not retried
    not_attempted: int | None = None  # stopped early at --max-errors: images left undone
    max_errors: int | None = None  # the --max-errors it stopped at

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.get("error") else 0

    @property
    def compression_ratio(self) -> float | None:
        return self.source_bytes / self.lr_bytes if self.source_bytes and self.lr_bytes else None

    def line(self) -> str:
        """In words: "archive: 120 images: 118 ok, 2 errors (see ...), 54.1x smaller, 3m12s"."""
        done = ("ok", KEPT, "skipped")
        counts = [f"{self.counts[s]} {s}" for s in done if self.counts.get(s)]
        errors = self.counts.get("error", 0)
        counts.append(f"{errors} errors ({self.errors_hint})" if errors else "no errors")
        parts = [f"{sum(self.counts.values()) + self.permanent} images: {', '.join(counts)}"]
        if self.permanent:
            parts.append(
                f"{self.permanent} permanent failures of an earlier run not retried "
                "(--retry-errors retries them)"
            )
        if self.not_attempted is not None:
            parts.append(
                f"stopped early: more than --max-errors {self.max_errors} images failed, "
                f"{self.not_attempted} images not attempted (a re-run does them)"
            )
        if self.compression_ratio is not None:
            parts.append(f"{self.compression_ratio:.1f}x smaller")
        return f"{self.job}: {', '.join(parts)}, {duration(self.seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "images": sum(self.counts.values()) + self.permanent,
            "counts": {s: self.counts.get(s, 0) for s in ("ok", KEPT, "skipped", "error")},
            "source_bytes": self.source_bytes,
            "lr_bytes": self.lr_bytes,
            "compression_ratio": self.compression_ratio,
            "seconds": round(self.seconds, 3),
            "permanent_not_retried": self.permanent,
            "not_attempted": self.not_attempted,
            "exit_code": self.exit_code,
            "manifest": self.manifest,
        }


@dataclass
class Tally:
    """A run's rows by status, and the bytes of the images done where its rows have them."""

    counts: Counter = field(default_factory=Counter)
    source_bytes: int = 0
    lr_bytes: int = 0

    def attempted(self) -> int:
        """Rows of images this run did (not skipped)."""
        return sum(n for status, n in self.counts.items() if status != "skipped")

    def add(self, rows: Sequence[Row]) -> None:
        self.counts.update(row["status"] for row in rows)
        for row in rows:
            # shrunk, not kept (Ray may turn a column of None into NaN: test for a URI)
            if row["status"] in DONE and not isinstance(row.get("kept_uri"), str):
                self.source_bytes += int(row.get("source_bytes") or 0)  # numpy ints from Ray
                self.lr_bytes += int(row.get("lr_bytes") or 0)


def run(plan: Plan) -> JobResult:
    """Run a prepared job on the running Ray cluster."""
    from pipeline.resources import plan_resources

    start = time.monotonic()
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
    skipped = [row for row in settled if row["status"] == "skipped"]
    permanent = len(settled) - len(skipped)  # an earlier run's permanent failures
    writer = ManifestWriter(manifest, plan.schema)
    writer.add(settled)
    tally = Tally()
    tally.add(skipped)
    if skipped:
        logger.info(
            "%s: %d of %d images done by an earlier run, skipped", name, len(skipped), len(images)
        )
    if permanent:
        logger.info("%s: %d permanent failures of an earlier run, not retried", name, permanent)
    stopped = False
    try:
        if todo:
            stopped = stream(plan, build_graph(plan, resources, todo), todo, writer, tally)
    finally:  # also when interrupted or crashed: the rows received are kept, a re-run resumes
        writer.flush()
    compact(manifest, plan.schema)
    has_bytes = "lr_bytes" in plan.schema.names
    result = JobResult(
        job=name,
        counts=dict(tally.counts),
        manifest=manifest.uri,
        seconds=time.monotonic() - start,
        errors_hint=plan.errors_hint.format(dst=plan.dst.uri, manifest=manifest.uri),
        source_bytes=tally.source_bytes if has_bytes else None,
        lr_bytes=tally.lr_bytes if has_bytes else None,
        permanent=permanent,
        not_attempted=len(images) - len(settled) - tally.attempted() if stopped else None,
        max_errors=config.max_errors,
    )
    logger.info("%s", result.line(), extra={"summary": True})
    return result


def build_graph(plan: Plan, resources: Resources, todo: Sequence[Entry]) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes."""
    import ray

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
    plan: Plan, ds: ray.data.Dataset, todo: Sequence[Entry], writer: ManifestWriter, tally: Tally
) -> bool:
    """Run the graph, writing its rows to the manifest as they come and adding them to
    `tally`; True when it stopped early because more images than --max-errors failed."""
    progress = Progress(plan.name, total=len(todo))
    seen = set()
    max_errors = plan.config.max_errors
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = to_rows(batch)
        writer.add(rows)
        seen.update(row["rel_path"] for row in rows)
        tally.add(rows)
        progress.update(len(rows), sum(row["status"] == "error" for row in rows))
        if max_errors is not None and tally.counts["error"] > max_errors:
            return True
    lost = plan.lost([image for image in todo if image.rel_path not in seen])
    if lost:
        writer.add(lost)
        tally.add(lost)
        progress.update(len(lost), len(lost))
    return False


class Progress:
    """Logs "<job>: 40/120 images (33%), 2 errors, 3.10 images/s, ETA 26s" on stderr (the
    "tadm" logger) at most every `every` seconds, and always when the last image is done."""

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
        percent = 100 * self.done // self.total if self.total else 100
        line = (
            f"{self.job}: {self.done}/{self.total} images ({percent}%), {self.errors} errors, "
            f"{rate:.2f} images/s"
        )
        if 0 < self.done < self.total:
            line += f", ETA {duration((self.total - self.done) / rate)}"
        return line


def duration(seconds: float) -> str:
    """12.3 -> "12.3s", 192 -> "3m12s", 7500 -> "2h05m"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
