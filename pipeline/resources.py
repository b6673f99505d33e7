"""How many model actors, and what each one holds: the graph builders' one place for it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

logger = logging.getLogger("tadm")

CPU_ACTORS = 4  # the most model actors a CPU-only job starts by default


@dataclass(frozen=True)
class Resources:
    workers: int  # model actors (ActorPoolStrategy size)
    gpus_per_worker: float  # num_gpus of each actor; 0 on a CPU cluster
    torch_threads: int | None  # intra-op threads of a CPU actor; None on GPU

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


def plan_resources(
    workers: int | None,
    gpus_per_worker: float | None,
    can_grow: bool | None = None,
    batches: int | None = None,
) -> Resources:
    """Fill defaults from the running Ray cluster and check the request fits it.

    Defaults: on GPUs, one actor per GPU; on CPUs, one actor per core up to CPU_ACTORS, the
    cores shared out as their torch threads. Several actors beat one that uses every core: in a
    Ray Data actor the model's many small ops run slower than in a bare process
    (benchmarks/README.md). Each actor holds its own model, so the count stays small; `workers=1`
    keeps one model in memory (a large preset on CPUs). A default plan starts no more actors
    than the job has `batches` (when given): an actor with nothing to do costs its start-up.
    GPUs asked for beyond what the cluster has now are refused on a local Ray, and on a cluster
    that can grow (`can_grow`, default `cluster_can_grow()`) left to its autoscaler: an
    autoscaling cluster (cluster.yaml) starts with no GPU node.
    """
    cluster = ray.cluster_resources()
    cpus, gpus = int(cluster.get("CPU", 1)), cluster.get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus > 0 else 0.0
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
    wanted = gpus_per_worker * (workers or 1)
    if gpus_per_worker > 0 and wanted > gpus:
        if not (cluster_can_grow() if can_grow is None else can_grow):
            raise ValueError(
                f"--gpus-per-worker {gpus_per_worker:g} x {workers or 1} workers needs "
                f"{wanted:g} GPUs but this local Ray has {gpus:g}: drop --gpus-per-worker to "
                "run on CPU, or submit the job to a GPU cluster (RAY_ADDRESS)"
            )
        logger.warning(
            "the Ray cluster has %g GPUs now and the job needs %g: its model actors wait for "
            "the autoscaler to start GPU nodes",
            gpus,
            wanted,
        )
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, int(gpus // gpus_per_worker))
        else:
            workers = max(1, min(cpus, CPU_ACTORS))
        if batches is not None:
            workers = max(1, min(workers, batches))
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    torch_threads = None if gpus_per_worker > 0 else max(1, cpus // workers)
    return Resources(workers=workers, gpus_per_worker=gpus_per_worker, torch_threads=torch_threads)
