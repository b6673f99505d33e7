"""What `tadm serve` takes: ServeConfig (no torch or Ray: the CLI parses into it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServeConfig:
    archive: str  # URI of an archive written by archive
    model: str | None = None  # None: default_model(the archive's scale)
    host: str = "127.0.0.1"  # address the HTTP proxy listens on (0.0.0.0: every interface)
    port: int = 8000
    max_region_pixels: int = 4096 * 4096  # larger regions (w * h) get 413
    cache_mb: int = 256  # per replica, each of: decoded LR images, tile latents, rendered tiles
    min_replicas: int = 1  # 0 lets an idle app give its GPUs back
    max_replicas: int = 4
    cpus_per_replica: float = 1.0  # also the replica's torch threads on a CPU
    gpus_per_replica: float = 0.0  # 0: the model runs on CPU
    storage_options: dict[str, Any] = field(default_factory=dict)  # s3fs options
