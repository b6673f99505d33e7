"""The driver of the archive and restore jobs: one shape, two plans.

A plan (pipeline/archive/plan.py, pipeline/restore/plan.py) is a job prepared in the driver,
without Ray: its images (a table by bucket, pipeline/buckets.py), how one bucket splits into
rows to write now (skipped, errors) and images to run, and its Ray Data stages. `run` then
does, on the running Ray cluster, holding DST's lease (pipeline/lease.py):

    split bucket by bucket (columnar joins against the manifest) -> blocks of images put in
    the object store -> source -> read and model in one actor pool (crashes.Guarded, one
    TADM each) -> write (tasks) -> manifest rows to the writer actor, which appends parts ->
    counts by status back to the driver -> compact

`build_graph` is the one place that picks actors, GPUs and batch sizes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.buckets import Buckets
from pipeline.crashes import Attempts, Guarded
from pipeline.format import KEPT, MANIFEST_DIR
from pipeline.lease import Fence, Lease
from pipeline.manifest import (
    ManifestWriter,
    compact,
    latest,
    list_parts,
    merged_buckets,
    read_parts,
    to_table,
)
from pipeline.rows import error_text, to_rows
from pipeline.storage import Location, no_room, stale_temps
from pipeline.summary import plural
from pipeline.tally import Batch, Tally, TallyingWriter, summarize

# Ray and torch are imported where a job runs: the CLI builds its parsers from JobOptions
# without them.
if TYPE_CHECKING:
    import ray

    from pipeline.resources import Resources
    from pipeline.stage import ModelStage

logger = logging.getLogger("tadm")


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """What archive and restore configure alike: the model actors, batches, re-runs, storage."""

    workers: int | None = None  # model actors; None: one per GPU, or one per core up to 4
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    precision: str | None = None  # fp32 | fp16 | bf16; None: fp16 on GPU actors, fp32 on CPU
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


@dataclass(frozen=True)
class Stages:
    """A job's Ray Data graph after its source: functions and the keyword arguments they take."""

    read: Callable[..., Batch]  # CPU stage, run in the model actors (crashes.Guarded)
    read_kwargs: dict[str, Any]
    model: type[ModelStage]  # constructed once per actor, with torch_threads and precision
    model_kwargs: dict[str, Any]
    write: Callable[..., Batch]  # I/O stage: returns the manifest rows
    write_kwargs: dict[str, Any]


# What a plan lists of the outputs already in DST, to tell which earlier rows still hold.
OUTPUT_SCHEMA = pa.schema(
    [
        ("rel_path", pa.string()),  # of the image the file is the output of
        ("size", pa.int64()),
        # which output: archive "lr" or "kept"; restore "image", "kept" or another format
        ("kind", pa.string()),
    ]
)


def output_table(rel_paths: pa.ChunkedArray, sizes: pa.ChunkedArray, kind: str) -> pa.Table:
    """Outputs of one `kind` in DST, by the rel_path of their image (OUTPUT_SCHEMA)."""
    kinds = pa.array([kind] * len(rel_paths), pa.string())
    return pa.table({"rel_path": rel_paths, "size": sizes, "kind": kinds}, schema=OUTPUT_SCHEMA)


PLAN_PART_ROWS = 100_000  # rows of a manifest part the driver writes (skipped, plan errors)


@dataclass(frozen=True)
class Plan(ABC):
    """A job resolved against storage and the model, without Ray; what differs between
    archive and restore is in the subclasses' fields and methods."""

    name: ClassVar[str]  # "archive" or "restore": the log lines' prefix
    schema: ClassVar[pa.Schema]  # of the manifest under dst
    errors_hint: ClassVar[str]  # where to read the errors; {dst}, {manifest}: their URIs
    # Where to read the images archived with a loss their conversion notes (a restore's:
    # those it restored); {dst}, {manifest}: their URIs; None: the job counts none
    losses_hint: ClassVar[str | None] = None

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
    def settings(self, images: int) -> dict[str, Any]:
        """What to log about the job, before the options every job shares; `images`: how many
        it has, one per rel_path (an inventory may list several versions of one)."""

    @abstractmethod
    def outputs(self) -> Iterator[pa.Table]:
        """The outputs in DST, as tables of OUTPUT_SCHEMA (rel_path of the image, size)."""

    @abstractmethod
    def split(
        self, images: pa.Table, done: pa.Table | None, outputs: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """One bucket of images -> (manifest rows to write now: "skipped" for images an
        earlier run finished, its permanent failures as they were unless --retry-errors,
        errors the plan finds; the images to run). `done`: the latest manifest rows of the
        bucket, also with --overwrite, which skips nothing but must know what earlier runs
        wrote (None: no manifest at all); `outputs`: its outputs in DST."""

    @abstractmethod
    def source(self, blocks: list[ray.ObjectRef], resources: Resources) -> ray.data.Dataset:
        """One row per image to run, for the read stage, from the blocks of images put."""

    @abstractmethod
    def stages(self) -> Stages:
        """The read, model and write stages."""

    @abstractmethod
    def temp_folders(self) -> list[Location]:
        """The folders under DST the job writes into, where a stopped job leaves its
        temporary files (stale_temps): never SRC inside DST, nor a user's files beside."""

    def own_temps(self, keys: set[str], todo: pa.Table) -> set[str]:
        """Of the temporary files at `keys` ("/"-separated paths under DST) in temp_folders,
        those of the job's writes that this run may remove: here all of them, the folders
        being the job's own. `todo`: one bucket of the images this run writes (split)."""
        return keys

    @abstractmethod
    def output_rel_path(self, key: str) -> str | None:
        """The rel_path of the image whose output in DST the file at `key` (a "/"-separated
        path under DST) may be, where a file of any name may be one (a kept source); None
        where no output has its name."""

    def recorded(self, keys: dict[str, str]) -> set[str]:
        """Of the local files under DST `keys` names ({path: its key under DST}), those that
        may be the output of an image its manifest has a row of (output_rel_path): files
        stale_temps finds that are not to be deleted, as kept sources may be named so."""
        of = {path: self.output_rel_path(key) for path, key in keys.items()}
        wanted = pa.array(sorted({r for r in of.values() if r is not None}), pa.string())
        if not len(wanted):
            return set()
        manifest = self.dst.child(MANIFEST_DIR)
        schema = pa.schema([f for f in self.schema if f.name in ("rel_path", "output_uri")])
        named: set[str] = set()
        for table in read_parts(manifest, list_parts(manifest), schema):
            rel_paths = table["rel_path"]
            named.update(rel_paths.filter(pc.is_in(rel_paths, value_set=wanted)).to_pylist())
        return {path for path, rel_path in of.items() if rel_path in named}

    def local_files(self) -> list[tuple[str, str, str]]:
        """(what, as given, a file of it) for each local path other than DST that the job's
        tasks read, for check_nodes: here a local --model folder (its weights file); the plans
        add SRC's or ARCHIVE's. A shipped model is in every node's install."""
        from tadm.hub import shipped_names
        from tadm.model import WEIGHTS_FILE

        ref = self.model_ref
        if ("://" in ref and not ref.startswith("file://")) or ref in shipped_names():
            return []
        folder = os.path.abspath(os.path.expanduser(ref.removeprefix("file://")))
        return [("--model", ref, os.path.join(folder, WEIGHTS_FILE))]


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
    kept_bytes: int | None = None  # of the sources kept as they are (kept or skipped); archive
    # ok or kept files whose conversion notes a loss; a restore's, images archived with one
    with_losses: int | None = None
    losses_hint: str = ""  # where to read them
    other_files: int = 0  # of the rows counted: files that are not images (--keep-failed)
    permanent: int = 0  # an earlier run's permanent failures, not retried
    not_attempted: int | None = None  # stopped early at --max-errors: images left undone
    max_errors: int | None = None  # the --max-errors it stopped at
    interrupted: bool = False  # by SIGINT or SIGTERM: the counts are of the images done until then
    # A second signal stopped the job while it wrote the manifest rows of the images done: the
    # manifest may lack some of them, whose images a re-run does again.
    rows_unwritten: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130  # as a shell reports SIGINT
        return 1 if self.counts.get("error") else 0

    @property
    def compression_ratio(self) -> float | None:
        return self.source_bytes / self.lr_bytes if self.source_bytes and self.lr_bytes else None

    @property
    def images(self) -> int:
        """The images among the rows counted, and the earlier permanent failures."""
        return sum(self.counts.values()) + self.permanent - self.other_files

    def what(self) -> str:
        """ "12 images", or with files that are not images, "12 images and 2 other files"."""
        if not self.other_files:
            return plural(self.images, "image")
        return f"{plural(self.images, 'image')} and {plural(self.other_files, 'other file')}"

    def line(self) -> str:
        """In words: "archive: 120 images: 118 ok, 2 errors (see ...), 54.1x smaller, 3m12s"."""
        done = ("ok", KEPT, "skipped")
        counts = [f"{self.counts[s]} {s}" for s in done if self.counts.get(s)]
        errors = self.counts.get("error", 0)
        counts.append(f"{plural(errors, 'error')} ({self.errors_hint})" if errors else "no errors")
        if self.with_losses:
            counts.append(
                f"{self.with_losses} archived with something not carried ({self.losses_hint})"
            )
        parts = [f"{self.what()}: {', '.join(counts)}"]
        if self.permanent:
            parts.append(
                f"{plural(self.permanent, 'permanent failure')} of an earlier run not retried "
                "(--retry-errors retries them)"
            )
        if self.not_attempted:
            parts.append(
                f"stopped early: more than --max-errors {self.max_errors} images failed, "
                f"{plural(self.not_attempted, 'image')} not attempted (a re-run does them)"
            )
        elif self.not_attempted == 0:  # the last batches were in flight when it stopped
            parts.append(f"more than --max-errors {self.max_errors} images failed")
        if self.compression_ratio is not None:
            ratio = f"{self.compression_ratio:.1f}x smaller"
            if self.kept_bytes:  # the kept files take as much room as before
                assert self.source_bytes is not None and self.lr_bytes is not None
                stored = self.lr_bytes + self.kept_bytes
                ratio += f" ({(self.source_bytes + self.kept_bytes) / stored:.1f}x with kept files)"
            parts.append(ratio)
        if self.rows_unwritten:
            parts.append(
                "interrupted before the manifest rows of the last images were written "
                "(a re-run does those images again)"
            )
        elif self.interrupted:
            parts.append("interrupted")
        return f"{self.job}: {', '.join(parts)}, {duration(self.seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "images": self.images,
            "other_files": self.other_files,
            "counts": {s: self.counts.get(s, 0) for s in ("ok", KEPT, "skipped", "error")},
            "source_bytes": self.source_bytes,
            "lr_bytes": self.lr_bytes,
            "kept_bytes": self.kept_bytes,
            "compression_ratio": self.compression_ratio,
            "with_losses": self.with_losses,
            "seconds": round(self.seconds, 3),
            "permanent_not_retried": self.permanent,
            "not_attempted": self.not_attempted,
            "interrupted": self.interrupted,
            "rows_unwritten": self.rows_unwritten,
            "exit_code": self.exit_code,
            "manifest": self.manifest,
        }


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a job: `result` is what it did until then."""

    def __init__(self, result: JobResult) -> None:
        super().__init__(result.line())
        self.result = result


class WriterDied(RuntimeError):
    """The job's ManifestWriter actor died: the rows it held, not yet in a part, are lost."""


def split_buckets(plan: Plan) -> Iterator[tuple[pa.Table, pa.Table, pa.Array]]:
    """plan.split of each bucket of the plan's images, the manifest and the outputs lined up,
    with which of its rows the manifest holds already (as_recorded): memory bounded by one
    bucket of each."""
    images, manifest = plan.images, plan.dst.child(MANIFEST_DIR)
    with contextlib.ExitStack() as stack:
        done = stack.enter_context(merged_buckets(manifest, plan.schema))
        outputs = stack.enter_context(Buckets(OUTPUT_SCHEMA)).extend(plan.outputs())
        n = max(images.n, outputs.n, done.n)
        for k in range(n):
            earlier = latest(done.bucket(k, n), ordered=False)
            rows, todo = plan.split(images.bucket(k, n), earlier, outputs.bucket(k, n))
            yield rows, todo, as_recorded(rows, earlier)


def as_recorded(rows: pa.Table, earlier: pa.Table) -> pa.Array:
    """Which of `rows` the manifest's rows (`earlier`, the latest of each rel_path) hold as
    they are: the same value, or null, in every column but written_at. Written again they
    would change nothing but that time: a re-run of an archive skipped whole (its rows
    "skipped" already) or of the same failures writes no row, and compacts nothing."""
    at = pc.index_in(rows["rel_path"], value_set=earlier["rel_path"].combine_chunks())
    same = pc.is_valid(at)
    for name in rows.column_names:
        if name != "written_at":
            now, then = rows[name], pc.take(earlier[name], at)
            equal = pc.or_kleene(pc.equal(now, then), pc.and_(pc.is_null(now), pc.is_null(then)))
            same = pc.and_(same, pc.fill_null(equal, False))
    return same


def carried_failures(rows: pa.Table) -> pa.Array:
    """Which of a split's rows are an earlier run's failures, carried over as they are: errors
    that have a written_at already (the rows a plan makes get theirs from the writer)."""
    errors = pc.equal(rows["status"], "error")
    return pc.fill_null(pc.and_(errors, pc.is_valid(rows["written_at"])), False)


def block_rows(total: int, batch_size: int) -> int:
    """Rows of a block of the graph's source: a few batches for small jobs (each block is a
    read task), up to 10,000 for large ones (each block is an object in the driver)."""
    return min(10_000, max(batch_size, -(-total // 256)))


def run(plan: Plan) -> JobResult:
    """Run a prepared job on the running Ray cluster, holding DST's lease; a request the
    cluster cannot run is refused (ValueError) before DST is touched."""
    from pipeline.resources import check_request

    config = plan.config
    with plan.images:  # its spilled buckets are removed
        check_request(config.workers, config.gpus_per_worker, config.precision)
        with Lease(plan.dst, plan.name) as lease:
            return run_held(plan, lease)


def stale_temp_keys(plan: Plan, lease: Lease) -> dict[str, str]:
    """The temporary files a stopped job left in DST (stale_temps) where the job writes
    (temp_folders): {its "/"-separated key under DST: its path}."""
    fs, found = plan.dst.filesystem(), {}
    for folder in plan.temp_folders():
        for path in stale_temps(fs, folder.root, lease.stopped_since, lease.acquired_at):
            found[os.path.relpath(path, plan.dst.root).replace(os.sep, "/")] = path
    return found


def remove_stale_temps(plan: Plan, found: dict[str, str], own: set[str]) -> None:
    """Delete the temporary files `found` (stale_temp_keys) of the job's writes (`own`,
    Plan.own_temps of each bucket split), but those its manifest may record (Plan.recorded)."""
    keys = {found[key]: key for key in own}
    stale = keys.keys() - (plan.recorded(keys) if keys else set())
    for path in stale:
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            os.remove(path)
    if stale:
        logger.info("%s: removed %d temporary files of a stopped run", plan.name, len(stale))


def run_held(plan: Plan, lease: Lease) -> JobResult:
    """`run`, DST's `lease` held. A local path that some node of the Ray cluster does not see
    is refused (check_nodes) before anything but the lease is written to DST. SIGINT or SIGTERM
    raises Interrupted with the rows written until then (the manifest keeps them); so does
    losing the lease raise LeaseLost, before the manifest is compacted."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipeline.resources import plan_resources

    start = time.monotonic()
    config, name = plan.config, plan.name
    manifest = plan.dst.child(MANIFEST_DIR)
    tally = Tally()
    todo, taken, stopped = 0, 0, False
    unwritten = False  # a second signal stopped the writing of the last rows
    permanent = 0  # an earlier run's permanent failures, carried over and not retried

    def result(interrupted: bool = False) -> JobResult:
        has_bytes = "lr_bytes" in plan.schema.names
        return JobResult(
            job=name,
            counts=dict(tally.counts),
            manifest=manifest.uri,
            seconds=time.monotonic() - start,
            errors_hint=plan.errors_hint.format(dst=plan.dst.uri, manifest=manifest.uri),
            source_bytes=tally.source_bytes if has_bytes else None,
            lr_bytes=tally.lr_bytes if has_bytes else None,
            kept_bytes=tally.kept_bytes if has_bytes else None,
            with_losses=tally.with_losses if plan.losses_hint else None,
            losses_hint=(plan.losses_hint or "").format(dst=plan.dst.uri, manifest=manifest.uri),
            other_files=tally.other_files,
            permanent=permanent,
            not_attempted=todo - taken if stopped else None,
            max_errors=config.max_errors,
            interrupted=interrupted,
            rows_unwritten=unwritten,
        )

    try:
        check_nodes(plan, lease)
        temps, own_temps = stale_temp_keys(plan, lease), set()
        writer = ManifestWriter(manifest, plan.schema, flush_rows=PLAN_PART_ROWS)
        blocks, total = [], 0
        size = block_rows(plan.images.rows, config.batch_size)
        for rows, images, recorded in split_buckets(plan):
            if temps:
                own_temps |= plan.own_temps(set(temps), images)
            writer.add(rows.filter(pc.invert(recorded)))
            earlier = carried_failures(rows)
            permanent += pc.sum(earlier).as_py() or 0
            tally.add(summarize(rows.filter(pc.invert(earlier))))
            for start_row in range(0, len(images), size):
                blocks.append(ray.put(images.slice(start_row, size)))
            todo += len(images)
            total += len(rows) + len(images)
        writer.close()
        remove_stale_temps(plan, temps, own_temps)  # before any write of this run
        resources = plan_resources(
            config.workers,
            config.gpus_per_worker,
            batches=-(-todo // config.batch_size),
            precision=config.precision,
        )
        settings = plan.settings(total) | {
            "overwrite": config.overwrite,
            "batch_size": config.batch_size,
            "workers": resources.workers,
            "gpus_per_worker": resources.gpus_per_worker,
            "precision": resources.precision,
            "torch_threads": resources.torch_threads,
            "storage_options": plan.dst.redacted_options(),
        }
        logger.info("%s: %s", name, " ".join(f"{k}={v}" for k, v in settings.items()))
        if tally.counts["skipped"]:
            logger.info(
                "%s: %d of %d images done by an earlier run, skipped",
                name,
                tally.counts["skipped"],
                total,
            )
        if permanent:
            logger.info("%s: %d permanent failures of an earlier run, not retried", name, permanent)
        if tally.counts["error"]:
            logger.info("%s: %d images are errors before reading them", name, tally.counts["error"])
        planned = tally + Tally()  # a copy: stream adds to `tally`
        if blocks:
            # On the driver's node: a node lost mid-job must not take the rows received with it.
            here = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            )
            sink = (
                ray.remote(TallyingWriter)
                .options(num_cpus=0, scheduling_strategy=here)
                .remote(manifest, plan.schema)
            )
            attempts = ray.remote(Attempts).options(num_cpus=0, scheduling_strategy=here).remote()
            try:
                graph = build_graph(plan, resources, blocks, sink, attempts, lease.fence())
                stopped = stream(plan, graph, todo, tally, lease)
            except KeyboardInterrupt:
                logger.info(
                    "%s: interrupted: writing the manifest rows of the images done (a second "
                    "signal stops without them, and a re-run does those images again)",
                    name,
                )
                raise
            finally:  # also when interrupted or crashed: the rows received are kept
                try:
                    written = ray.get(sink.close_tallied.remote())  # no row in between
                except KeyboardInterrupt:
                    unwritten = True
                    raise
                except ray.exceptions.RayActorError as e:
                    raise WriterDied(
                        "the manifest writer's process died (the operating system or Ray killed "
                        "it, or it crashed): the rows it held of the images done since its last "
                        "part are lost; run the same command again, which does those images again"
                    ) from e
                finally:  # no row written after the lease is given back
                    ray.kill(sink)
                    ray.kill(attempts)
                # What the writer took: after an early stop, rows of batches in flight too.
                tally = planned + written
                taken = sum(written.counts.values())
        lease.check()  # another job may be writing DST's manifest now: no compaction
        try:
            compact(manifest, plan.schema)
        except Exception as e:  # the rows are in their parts: a re-run compacts them
            logger.warning(
                "%s: the manifest %s was not compacted (%s): its rows are all in its part "
                "files, which readers merge (pipeline.manifest.read_manifest); the next run "
                "compacts them%s",
                name,
                manifest.uri,
                error_text(e),
                ", once DST's disk has room for a copy of them" if no_room(e) else "",
            )
    except KeyboardInterrupt:
        interrupted = result(interrupted=True)
        logger.info("%s", interrupted.line(), extra={"summary": True})
        raise Interrupted(interrupted) from None
    done = result()
    logger.info("%s", done.line(), extra={"summary": True})
    return done


NODE_CHECK_S = 60.0  # how long check_nodes waits for every node's answer


def check_nodes(plan: Plan, lease: Lease) -> None:
    """ValueError naming the node and the path when a node of the Ray cluster does not see the
    job's local paths as this machine does: any node runs the job's tasks, which would read,
    and write, that node's own disk. One zero-CPU task pinned to each alive node reads there
    the token of DST's `lease` (this job's, written by now) and the size of each of
    plan.local_files; a node that has not answered within NODE_CHECK_S is named too. A
    single-node cluster, or a job without local paths, is not asked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2:
        return
    files = []  # (what, as given, path, its size here)
    for what, given, path in plan.local_files():
        size = size_of(path)
        if size is not None:  # only a file seen here can tell: a restore's first LR may be gone
            files.append((what, given, path, size))
    lease_path = lease.path if plan.dst.protocol == "file" else None
    if lease_path is None and not files:
        return
    view, paths = ray.remote(node_view), [path for _, _, path, _ in files]
    asked = {
        view.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(lease_path, paths): node["NodeManagerAddress"]
        for node in nodes
    }
    ready, late = ray.wait(list(asked), num_returns=len(asked), timeout=NODE_CHECK_S)
    for ref in late:
        ray.cancel(ref)
    local = ", ".join(
        ([f"DST {plan.dst.uri!r}"] if lease_path else []) + [f"{w} {g!r}" for w, g, _, _ in files]
    )
    if late:
        why = f"no answer within {NODE_CHECK_S:.0f} s"
        raise ValueError(unanswered(asked[late[0]], local, why))
    for ref in ready:
        node = asked[ref]
        try:
            token, sizes = ray.get(ref)
        except ray.exceptions.RayError as e:  # the node died since, say
            raise ValueError(unanswered(node, local, error_text(e))) from None
        if lease_path is not None and token != lease.record["token"]:
            raise ValueError(unseen("DST", plan.dst.uri, node, "write", "no lease of this job"))
        for (what, given, path, size), seen in zip(files, sizes, strict=True):
            if seen != size:
                there = "missing there" if seen is None else f"{seen} bytes there, {size} here"
                raise ValueError(unseen(what, given, node, "read", f"{path}: {there}"))
    logger.debug("%s: the %d nodes of the Ray cluster see %s", plan.name, len(nodes), local)


def unseen(what: str, given: str, node: str, verb: str, detail: str) -> str:
    """Why a job refuses a local path (`what`: "DST", "SRC", ...) that `node` does not see."""
    return (
        f"{what} {given!r} is a local path that node {node} of the Ray cluster does not see "
        f"({detail}): every node runs the job's tasks, so each would {verb} its own disk. "
        "Give s3:// URIs, or a folder every node mounts at the same path"
    )


def unanswered(node: str, local: str, why: str) -> str:
    """Why a job stops when `node` could not say whether it sees the `local` paths."""
    return (
        f"node {node} of the Ray cluster could not say whether it sees {local}, local paths "
        f"that every node must see ({why}): check the node (`ray status`) and run the job "
        "again, or give s3:// URIs"
    )


def size_of(path: str) -> int | None:
    """The size of the file at `path`, None when there is none."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def node_view(lease: str | None, paths: list[str]) -> tuple[str | None, list[int | None]]:
    """What the node this runs on sees of a job's local paths (a check_nodes task): the token
    in the lease file at `lease` (None: no lease, or none readable there), and the size of
    each of `paths` (None where it has no such file)."""
    token = None
    if lease is not None:
        with contextlib.suppress(OSError, ValueError):
            with open(lease, "rb") as f:
                held = json.load(f)
            token = held.get("token") if isinstance(held, dict) else None
    return token, [size_of(path) for path in paths]


def build_graph(
    plan: Plan,
    resources: Resources,
    blocks: list[ray.ObjectRef],
    sink: ray.actor.ActorHandle,
    attempts: ray.actor.ActorHandle,
    fence: Fence,
) -> ray.data.Dataset:
    """The Ray Data graph; the one place that picks actors, GPUs and batch sizes. Its model
    actors tell `attempts` (a crashes.Attempts actor) what they begin and finish; its write
    stage writes a batch only while DST's lease is the job's (`fence`)."""
    import ray

    stages, batch_size = plan.stages(), plan.config.batch_size
    # The read stage runs in the model actors: as a stage of its own it would need a CPU, and
    # with --workers equal to the cluster's CPUs never run. An image that kills an actor's
    # process is found and not run again (pipeline/crashes.py).
    model_kwargs = stages.model_kwargs | {
        "torch_threads": resources.torch_threads,
        "precision": resources.precision,
    }
    ds = plan.source(blocks, resources).map_batches(
        Guarded,
        fn_constructor_kwargs={
            "read": stages.read,
            "read_kwargs": stages.read_kwargs,
            "model": stages.model,
            "model_kwargs": model_kwargs,
            "attempts": attempts,
        },
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_gpus=resources.gpus_per_worker,
    )
    # I/O: reserves no CPU, or with --workers equal to the cluster's CPUs it would never run.
    io = {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=resources.io_tasks)}
    # One model batch at a time (batch_size=None): joining two batches into one would make Ray
    # unify their columns, and a column of None in one (NaN after the model stage) does not
    # unify with the strings of another.
    write = stages.write_kwargs | {"write": stages.write, "fence": fence}
    ds = ds.map_batches(write_fenced, fn_kwargs=write, batch_size=None, **io)
    return ds.map_batches(
        send_rows, fn_kwargs={"sink": sink, "schema": plan.schema}, batch_size=None, **io
    )


def write_fenced(
    batch: Batch, *, write: Callable[..., Batch], fence: Fence, **kwargs: Any
) -> Batch:
    """Write stage: `write(batch, **kwargs)`, or LeaseLost if another job took DST over."""
    fence.check()
    return write(batch, **kwargs)


def send_rows(batch: Batch, *, sink: ray.actor.ActorHandle, schema: pa.Schema) -> Batch:
    """Write stage's tail: hand the batch's manifest rows to the job's writer actor, and give
    the driver only their summary by status."""
    import ray

    table = to_table(to_rows(batch), schema)
    ray.get(sink.add.remote(table))
    return summarize(table)


def stream(plan: Plan, ds: ray.data.Dataset, total: int, tally: Tally, lease: Lease) -> bool:
    """Run the graph, whose rows go to the manifest from the workers, adding their summaries
    to `tally`; True when it stopped early because more images than --max-errors failed.
    LeaseLost when DST's `lease` is lost meanwhile."""
    progress = Progress(plan.name, total=total)
    max_errors = plan.config.max_errors
    for summary in ds.iter_batches(batch_size=None, batch_format="numpy"):
        lease.check()
        tally.add(summary)
        counts = dict(zip(summary["status"].tolist(), summary["count"].tolist(), strict=True))
        progress.update(sum(counts.values()), counts.get("error", 0))
        if max_errors is not None and tally.counts["error"] > max_errors:
            return True
    return False


class Progress:
    """Logs "<job>: 40/120 images (33%), 2 errors, 3.10 images/s, ETA 26s" on stderr (the
    "tadm" logger) at most every `every` seconds, and always when the last image is done. The
    ETA is at the rate since the first images came back: before them, the model actors
    start and warm up, which the images left do not wait for again."""

    def __init__(self, job: str, total: int, every: float = 2.0) -> None:
        self.job = job
        self.total = total
        self.every = every
        self.done = 0
        self.errors = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # when the first images came back, how many

    def update(self, done: int, errors: int) -> None:
        self.done += done
        self.errors += errors
        now = time.monotonic()
        if self.first is None:
            self.first = now, self.done
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            logger.info("%s", self.line())

    def line(self) -> str:
        now = time.monotonic()
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        percent = 100 * self.done // self.total if self.total else 100
        line = (
            f"{self.job}: {self.done}/{self.total} images ({percent}%), "
            f"{plural(self.errors, 'error')}, "
            f"{rate:.2f} images/s"
        )
        if self.first and 0 < self.done < self.total and self.done > self.first[1]:
            since = (self.done - self.first[1]) / (now - self.first[0])
            line += f", ETA {duration((self.total - self.done) / since)}"
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
