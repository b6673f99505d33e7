"""Progress lines on stderr (the "tadm" logger): images done / total, errors, images per second."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("tadm")


class Progress:
    """Logs "<job>: 40/120 images, 2 errors, 3.10 images/s" at most every `every` seconds,
    and always when the last image is done."""

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
