"""Images that kill a model actor's process: the kernel's OOM killer or Ray's memory monitor
ending it, or a crash in a native decoder. Ray restarts the actor and runs its batch again, and
without a guard would do so for ever: one such image would hang the job.

`Attempts` is a job's record, in an actor of its own on the driver's node, of the images a
model actor began and did not finish. `Guarded` is what each model actor runs: the read stage's
function, then the model stage, on a batch. A batch seen begun before (its actor died) runs
one image at a time; an image begun alone before (the actor died on it alone) is not run again:
it becomes an error row, a transient one, which the next run tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.rows import to_batch, to_rows

if TYPE_CHECKING:
    import ray

    from pipeline.stage import ModelStage

Batch = dict[str, np.ndarray]

IN_BATCH = "batch"  # begun in a batch
ALONE = "alone"  # begun alone, after the actor died on a batch that held it

DIED = (
    "the model actor's process died twice while it read this image or ran the model on it (the "
    "operating system or Ray killed it for memory, or a native library crashed): not tried again "
    "in this run; a machine with more memory may take it"
)


class Attempts:
    """Which images (rel_paths) a model actor began and did not finish, and how."""

    def __init__(self) -> None:
        self.begun: dict[str, str] = {}

    def begin(self, keys: list[str]) -> list[str | None]:
        """Record `keys` as begun in a batch; how each was begun before (None: never)."""
        before = [self.begun.get(key) for key in keys]
        for key in keys:
            self.begun.setdefault(key, IN_BATCH)
        return before

    def alone(self, key: str) -> None:
        self.begun[key] = ALONE

    def finish(self, keys: list[str]) -> None:
        for key in keys:
            self.begun.pop(key, None)


class Guarded:
    """A model actor's stage: `read(batch, **read_kwargs)`, then one `model(**model_kwargs)`
    on what it gives, with `attempts` (an Attempts actor) told what is begun and finished."""

    def __init__(
        self,
        *,
        read: Callable[..., Batch],
        read_kwargs: dict[str, Any],
        model: type[ModelStage],
        model_kwargs: dict[str, Any],
        attempts: ray.actor.ActorHandle,
    ) -> None:
        self.read, self.read_kwargs = read, read_kwargs
        self.model = model(**model_kwargs)
        self.attempts = attempts

    def run(self, batch: Batch) -> Batch:
        return self.model(self.read(batch, **self.read_kwargs))

    def __call__(self, batch: Batch) -> Batch:
        import ray

        keys = [str(key) for key in batch["rel_path"]]
        before = ray.get(self.attempts.begin.remote(keys))
        if not any(before):
            out = self.run(batch)
            ray.get(self.attempts.finish.remote(keys))
            return out
        # The actor died on this batch before: one image at a time finds the one it died on.
        rows = []
        for i, key in enumerate(keys):
            one = {name: values[i : i + 1] for name, values in batch.items()}
            if before[i] == ALONE:  # read_sources' and read_lr_batch's "error": not read
                one["error"] = np.array([DIED], dtype=object)
                rows += to_rows(self.run(one))
                continue
            ray.get(self.attempts.alone.remote(key))
            rows += to_rows(self.run(one))
            ray.get(self.attempts.finish.remote([key]))
        return to_batch(rows, self.model.columns)
