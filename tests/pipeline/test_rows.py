"""Ray Data batches as rows, and the rows each model call takes."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa

from pipeline.format import PERMANENT, TRANSIENT
from pipeline.rows import NO_TIME, column, error_kind, model_calls, nanoseconds, to_batch, to_rows


def test_batch_columns_round_trip():
    images = [np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)]
    assert column([1, 2]).dtype == np.int64
    assert column([1, 2.5]).dtype == np.float64
    assert column(images).dtype == object and column(images)[0].shape == (2, 2, 3)
    rows = [{"a": 1, "b": "x"}, {"a": 2}]
    batch = to_batch(rows, ["a", "b"])
    assert list(batch["b"]) == ["x", None]
    assert to_rows(batch)[1] == {"a": 2, "b": None}


def test_model_calls_stack_same_size_images_only_when_asked():
    rows = [{"n": 0, "size": (4, 4)}, {"n": 1, "size": (2, 2)}, {"n": 2, "size": (4, 4)}]
    stacked = model_calls(rows, lambda row: row["size"], stack=True)
    assert [[row["n"] for row in call] for call in stacked] == [[0, 2], [1]]
    alone = model_calls(rows, lambda row: row["size"], stack=False)  # on a CPU
    assert [[row["n"] for row in call] for call in alone] == [[0], [1], [2]]


def test_a_string_column_has_none_where_ray_handed_nan():
    """A stage sets an error on one row of a batch whose error column came in as NaN (Ray
    hands a column of None from a fused stage as float32: np.float32 is no Python float)."""
    errors = column([np.float64("nan"), "cannot write x", float("nan"), np.float32("nan")])
    assert list(errors) == [None, "cannot write x", None, None]
    pa.array(errors)  # a column Arrow takes: Ray need not pickle it
    assert np.isnan(column([float("nan"), 1.5])[0])  # numbers stay numbers


def test_a_lost_s3_connection_is_transient_a_bad_input_permanent():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    assert error_kind(EndpointConnectionError(endpoint_url="http://127.0.0.1:9")) == TRANSIENT
    assert error_kind(ReadTimeoutError(endpoint_url="http://127.0.0.1:9")) == TRANSIENT
    assert error_kind(TimeoutError("read")) == TRANSIENT
    assert error_kind(ValueError("not an image")) == PERMANENT
    assert error_kind(KeyError("a bug")) == PERMANENT


def test_times_as_ray_hands_them_over_in_nanoseconds_past_2262_too():
    """int64 nanoseconds end in 2262: a file dated 2300 must not come back dated 1901."""
    in_2300 = 10_413_792_000_000_000_000
    for value in (
        np.datetime64("2300-01-01", "us"),
        datetime.datetime(2300, 1, 1, tzinfo=datetime.timezone.utc),
        datetime.datetime(2300, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        in_2300 // 1000,  # microseconds
    ):
        assert nanoseconds(value) == in_2300, value
    assert nanoseconds(np.datetime64("1969-12-31T23:59:59.5", "us")) == -500_000_000
    assert nanoseconds(-1) == -1000  # a time, before 1970
    for none in (None, NO_TIME, np.datetime64("NaT", "us"), float("nan")):
        assert nanoseconds(none) is None
