"""How many model actors, and what each one holds: the graph builders' one place for it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

from pipeline.summary import plural
from tadm.precision import resolve_precision

logger = logging.getLogger("tadm")

CPU_ACTORS = 4  # the most model actors a CPU-only job starts by default


@dataclass(frozen=True)
class Resources:
    workers: int  # model actors (ActorPoolStrategy size)
    gpus_per_worker: float  # num_gpus of each actor; 0 on a CPU cluster
    torch_threads: int | None  # intra-op threads of a CPU actor; None on GPU
    precision: str  # what each actor's model runs in (tadm/precision.py)

    @property
    def io_tasks(self) -> int:
        """Concurrent read and write tasks. They reserve no CPU (the model actors may hold
        every one), so Ray would otherwise start one worker process per block at once: on a
        small machine dozens of processes importing at the same time, starving the actors."""
        return 2 * self.workers


def cluster_can_grow() -> bool:
    """Whether the job runs on a cluster it did not start (RAY_ADDRESS set, as under `ray job
    submit` and KubeRay), whose autoscaler may add nodes; a local Ray has what it has."""
    return bool(os.environ.get("RAY_ADDRESS"))


def default_gpus_per_worker(gpus_per_worker: float | None, cluster_gpus: float) -> float:
    return (1.0 if cluster_gpus > 0 else 0.0) if gpus_per_worker is None else gpus_per_worker


def check_request(
    workers: int | None,
    gpus_per_worker: float | None,
    precision: str | None = None,
    can_grow: bool | None = None,
) -> None:
    """ValueError naming the option when the request cannot run on the running Ray cluster:
    what plan_resources refuses, checked before a job touches DST. GPUs asked for beyond what
    the cluster has now are refused on a local Ray; a cluster that can grow (`can_grow`,
    default `cluster_can_grow()`) is left to its autoscaler (cluster.yaml starts with no GPU
    node). fp16 is refused for CPU actors."""
    gpus = ray.cluster_resources().get("GPU", 0)
    gpus_per_worker = default_gpus_per_worker(gpus_per_worker, gpus)
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    wanted = gpus_per_worker * (workers or 1)
    can_grow = cluster_can_grow() if can_grow is None else can_grow
    if gpus_per_worker > 0 and wanted > gpus and not can_grow:
        raise ValueError(
            f"--gpus-per-worker {gpus_per_worker:g} x {plural(workers or 1, 'worker')} needs "
            f"{wanted:g} GPU{'s' * (wanted != 1)} but this local Ray has {gpus:g}: drop "
            "--gpus-per-worker to run on CPU, or submit the job to a GPU cluster (RAY_ADDRESS)"
        )
    if precision == "fp16" and gpus_per_worker == 0:
        raise ValueError(
            "--precision fp16 needs a GPU, and this job's model actors run on the CPU (no GPU "
            "in the Ray cluster, or --gpus-per-worker 0): use fp32 (the CPU default) or bf16"
        )
    resolve_precision(precision, "cuda" if gpus_per_worker > 0 else "cpu")


def plan_resources(
    workers: int | None,
    gpus_per_worker: float | None,
    can_grow: bool | None = None,
    batches: int | None = None,
    precision: str | None = None,
) -> Resources:
    """Fill defaults from the running Ray cluster and check the request fits it (check_request).

    Defaults: on GPUs, one actor per GPU; on CPUs, one actor per core up to CPU_ACTORS, the
    cores shared out as their torch threads. Several actors beat one that uses every core: in a
    Ray Data actor the model's many small ops run slower than in a bare process
    (benchmarks/README.md). Each actor holds its own model, so the count stays small; `workers=1`
    keeps one model in memory (a large preset on CPUs). A default plan starts no more actors
    than the job has `batches` (when given): an actor with nothing to do costs its start-up;
    the cores are still shared out as for the whole pool, so that the job's outputs are the
    same bytes whatever is left to do (a model's float sums depend on its torch threads, and a
    re-run takes what a killed restore wrote only when it restores the same bytes).
    `precision` defaults to fp16 for GPU actors and fp32 for CPU ones.
    """
    check_request(workers, gpus_per_worker, precision, can_grow)
    cluster = ray.cluster_resources()
    cpus, gpus = int(cluster.get("CPU", 1)), cluster.get("GPU", 0)
    gpus_per_worker = default_gpus_per_worker(gpus_per_worker, gpus)
    wanted = gpus_per_worker * (workers or 1)
    if gpus_per_worker > 0 and wanted > gpus:
        logger.warning(
            "the Ray cluster has %g GPU%s now and the job needs %g: its model actors wait "
            "for the autoscaler to start GPU nodes",
            gpus,
            "s" * (gpus != 1),
            wanted,
        )
    pool = workers  # the actors whose cores the torch threads share
    if workers is None:
        if gpus_per_worker > 0:
            pool = max(1, int(gpus // gpus_per_worker))
        else:
            pool = max(1, min(cpus, CPU_ACTORS))
        workers = pool if batches is None else max(1, min(pool, batches))
    torch_threads = None if gpus_per_worker > 0 else max(1, cpus // pool)
    precision = resolve_precision(precision, "cuda" if gpus_per_worker > 0 else "cpu")
    return Resources(workers, gpus_per_worker, torch_threads, precision)
