"""How many model actors, and what each one holds: the graph builders' one place for it."""

from __future__ import annotations

from dataclasses import dataclass

import ray


@dataclass(frozen=True)
class Resources:
    workers: int  # model actors (ActorPoolStrategy size)
    gpus_per_worker: float  # num_gpus of each actor; 0 on a CPU cluster
    torch_threads: int | None  # intra-op threads of a CPU actor; None on GPU


def plan_resources(workers: int | None, gpus_per_worker: float | None) -> Resources:
    """Fill defaults from the running Ray cluster and check the request fits it.

    Defaults: on GPUs, one actor per GPU; on CPUs, one actor whose torch uses every core
    (a TADM forward pass parallelises well inside one process, and one model in memory).
    """
    cluster = ray.cluster_resources()
    cpus, gpus = int(cluster.get("CPU", 1)), cluster.get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus > 0 else 0.0
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
    if gpus_per_worker > 0 and gpus_per_worker > gpus:
        raise ValueError(
            f"--gpus-per-worker {gpus_per_worker:g} but the Ray cluster has {gpus:g} GPUs"
        )
    if workers is None:
        workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker > 0 else 1
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    torch_threads = None if gpus_per_worker > 0 else max(1, cpus // workers)
    return Resources(workers=workers, gpus_per_worker=gpus_per_worker, torch_threads=torch_threads)
