"""Archive's read stage: each source's bytes, or its row's error."""

from __future__ import annotations

import socket

import numpy as np

from pipeline.archive.read import MISSING, read_sources
from pipeline.storage import Location


def plan_rows(*rel_paths: str) -> dict[str, np.ndarray]:
    n = len(rel_paths)
    return {
        "rel_path": np.array(rel_paths, dtype=object),
        "size": np.ones(n, np.int64),
        "mtime": np.zeros(n, np.int64),
        "etag": np.array([None] * n, dtype=object),
    }


def test_a_file_gone_since_the_listing_is_its_rows_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"A")
    src = Location.parse(str(tmp_path))
    out = read_sources(plan_rows("a.png", "b.png"), src=src, prefix=f"{tmp_path}/")
    assert list(out["bytes"]) == [b"A", b""]
    assert list(out["error"]) == ["", MISSING]


def test_a_file_without_an_image_name_is_not_read(tmp_path):
    """It can only be kept (--keep-failed), and the write stage copies it a chunk at a time:
    a video larger than memory must not be read whole here."""
    (tmp_path / "a.png").write_bytes(b"A")
    (tmp_path / "clip.mp4").write_bytes(b"a video")
    src = Location.parse(str(tmp_path))
    out = read_sources(plan_rows("a.png", "clip.mp4"), src=src, prefix=f"{tmp_path}/")
    assert list(out["bytes"]) == [b"A", b""]
    assert list(out["error"]) == ["", ""]


def test_an_s3_endpoint_that_stops_answering_gives_error_rows_not_a_crash(monkeypatch):
    """botocore's EndpointConnectionError is not an OSError: it becomes the row's error too."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    src = Location.parse("s3://bucket/photos", {"config_kwargs": {"retries": {"max_attempts": 1}}})
    out = read_sources(plan_rows("a.png", "b.png"), src=src, prefix="bucket/photos/")
    assert list(out["bytes"]) == [b"", b""]
    for error in out["error"]:
        assert error.startswith("cannot read the source: EndpointConnectionError: Could not")
