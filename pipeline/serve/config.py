"""Defaults of the tile server's arguments, as plain values: `tadm serve --help` reads them
without Ray Serve or pydantic; TileAppArgs (app.py) takes its defaults from here."""

MAX_REGION_PIXELS = 4096 * 4096  # larger regions (w * h) get 413
CACHE_MB = 256  # per replica, each of: decoded LR images, tile latents, rendered tiles
MIN_REPLICAS = 1  # 0 lets an idle app give its GPUs back
MAX_REPLICAS = 4
CPUS_PER_REPLICA = 1.0  # also the replica's torch threads on a CPU
GPUS_PER_REPLICA = 0.0  # 0: the model runs on CPU
