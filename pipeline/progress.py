"""Progress lines on stderr: images done / total, errors, images per second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints "<job>: 40/120 images, 2 errors, 3.1 images/s" at most every `every` seconds."""

    def __init__(self, job: str, total: int, every: float = 2.0, out: TextIO = sys.stderr):
        self.job = job
        self.total = total
        self.every = every
        self.out = out
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
            self.print()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def print(self) -> None:
        print(
            f"{self.job}: {self.done}/{self.total} images, {self.errors} errors, "
            f"{self.rate():.2f} images/s",
            file=self.out,
            flush=True,
        )
