"""Ray Data batches as rows: stages read a batch as dicts and build a batch from dicts."""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from pipeline.format import PERMANENT, TRANSIENT

# botocore's EndpointConnectionError, ReadTimeoutError and the like, and aiohttp's: an S3 request
# that did not get an answer.
NETWORK_MODULES = frozenset({"botocore", "aiobotocore", "aiohttp", "urllib3"})

ZERO = datetime.timedelta(0)
EPOCH = datetime.datetime(1970, 1, 1)
NO_TIME = -(2**63)  # microseconds since the epoch: none (-1 is a time, before 1970)
NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)  # the image cell of a row that has none


def error_text(e: Exception) -> str:
    """An image's error message from the exception that failed it: a ValueError or OSError
    (the failures stages expect) as its message, anything else with its type first."""
    if isinstance(e, (ValueError, OSError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def from_storage_client(e: BaseException) -> bool:
    """Whether `e` is an exception of the S3 client's stack that s3fs lets through (no
    credentials, no connection, a timeout), not an OSError."""
    return any(kind.__module__.split(".")[0] in NETWORK_MODULES for kind in type(e).__mro__)


def io_failure(e: BaseException) -> bool:
    """Whether `e` is a failure of I/O: an OSError, or an exception of the S3 client's stack
    (a response cut short, a server error after its retries)."""
    return isinstance(e, OSError) or from_storage_client(e)


def error_kind(e: Exception) -> str:
    """TRANSIENT for I/O (io_failure: a re-run may get past it), PERMANENT for anything else:
    the stages' decoders turn every failure of the input itself into a ValueError."""
    return TRANSIENT if io_failure(e) else PERMANENT


def nanoseconds(value: Any) -> int | None:
    """A time a row holds (numpy's datetime64 or a datetime, as Ray hands a timestamp column
    over; microseconds as an int, NO_TIME for none) in nanoseconds since the epoch, a Python
    int (after 2262 it would not fit numpy's int64); None for none."""
    if isinstance(value, np.datetime64):
        return (
            None if np.isnat(value) else int(value.astype("datetime64[us]").astype(np.int64)) * 1000
        )
    if isinstance(value, datetime.datetime) and value == value:  # pandas' NaT is one too
        utc = value.replace(tzinfo=None) - (value.utcoffset() or ZERO)
        return (utc - EPOCH) // datetime.timedelta(microseconds=1) * 1000
    if isinstance(value, (int, np.integer)) and value != NO_TIME:
        return int(value) * 1000
    return None


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
    (strings, None, bytes, or images of different shapes) in which NaN is None: Ray hands a
    column of nothing but None to the next stage as NaN, and strings beside NaN are no column
    Arrow takes (Ray would pickle it, warning)."""
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return np.asarray(values, dtype=np.int64)
    if values and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = None if isinstance(value, (float, np.floating)) and math.isnan(value) else value
    return out


def model_calls(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable], stack: bool
) -> list[list[dict[str, Any]]]:
    """The rows each model call takes: rows with the same `key` (the same image size) together
    when `stack`, else one row per call. Stack on a GPU, which a larger batch keeps busy; not on
    a CPU, where one image at a time runs faster per image (benchmarks/README.md)."""
    if not stack:
        return [[row] for row in rows]
    groups: dict[Hashable, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return list(groups.values())
