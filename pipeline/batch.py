"""Ray Data batches as rows: stages read a batch as dicts and build a batch from dicts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def to_rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """{"a": [1, 2], "b": [x, y]} -> [{"a": 1, "b": x}, {"a": 2, "b": y}]."""
    names = list(batch)
    n = len(batch[names[0]]) if names else 0
    return [{name: batch[name][i] for name in names} for i in range(n)]


def to_batch(rows: list[dict[str, Any]], columns: Iterable[str]) -> dict[str, np.ndarray]:
    """The inverse of to_rows, keeping `columns` only; a missing value becomes None."""
    return {name: column([row.get(name) for row in rows]) for name in columns}


def column(values: list[Any]) -> np.ndarray:
    """A batch column: int64 or float64 when every value is a number, else an object array
    (strings, None, bytes, or images of different shapes)."""
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return np.asarray(values, dtype=np.int64)
    if values and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out
