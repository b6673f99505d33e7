"""Archive's read stage: each source's bytes, or its row's error."""

from __future__ import annotations

import hashlib
import os
import socket

import boto3
import numpy as np
import pytest
from conftest import CuttingProxy, make_bucket

from pipeline.archive.read import MISSING, read_sources
from pipeline.metadata import parse_s3_metadata, parse_s3_tags
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


@pytest.fixture
def s3_photos(s3_env: str) -> Location:
    """s3://read-test/photos on the moto server, holding a.png with user metadata."""
    make_bucket(s3_env, "read-test")
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1", **keys)
    client.put_object(Bucket="read-test", Key="photos/a.png", Body=PHOTO, Metadata=USER)
    tagging = "project=apollo&class=raw%20scan"
    client.put_object(Bucket="read-test", Key="photos/b.png", Body=PHOTO, Tagging=tagging)
    return Location.parse("s3://read-test/photos")


PHOTO = bytes(range(256)) * 1000
USER = {"my_key": "kept as S3 gives it", "camera": "x100"}


@pytest.mark.parametrize("cuts", [0, 1])
def test_an_s3_source_is_read_with_its_metadata_and_etag_in_one_get(s3_photos, cuts, monkeypatch):
    """One GET gives the bytes, the user metadata and the ETag of one version (no HEAD, which
    could see another); a body cut short is read again, never taken as the file. An object
    written since it was listed is recorded with the ETag of the version read."""
    proxy = CuttingProxy(os.environ["AWS_ENDPOINT_URL"], cuts)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    src = Location.parse(s3_photos.uri)
    batch = plan_rows("a.png") | {"etag": np.array(["listed before a rewrite"], dtype=object)}
    out = read_sources(batch, src=src, prefix="read-test/photos/")
    assert list(out["error"]) == [""] and bytes(out["bytes"][0]) == PHOTO
    assert parse_s3_metadata(bytes(out["s3_metadata"][0])) == USER
    assert out["etag"][0] == hashlib.md5(PHOTO).hexdigest()  # a single PUT's ETag
    assert proxy.requests == {"GET": 1 + cuts}


def test_an_s3_sources_tags_are_read_in_a_request_of_their_own_when_it_has_any(
    s3_photos, monkeypatch
):
    proxy = CuttingProxy(os.environ["AWS_ENDPOINT_URL"], cuts=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    out = read_sources(
        plan_rows("b.png"), src=Location.parse(s3_photos.uri), prefix="read-test/photos/"
    )
    assert list(out["error"]) == [""] and bytes(out["bytes"][0]) == PHOTO
    assert parse_s3_tags(bytes(out["s3_tags"][0])) == [("project", "apollo"), ("class", "raw scan")]
    assert bytes(out["s3_metadata"][0]) == b""
    assert proxy.requests == {"GET": 2}  # the object, then its tags


def test_an_s3_source_whose_tags_cannot_be_read_is_read_and_says_so(s3_photos, monkeypatch):
    """A policy that grants s3:GetObject but not s3:GetObjectTagging: the image is archived all
    the same, and its row names the tags not carried (decode_batch puts not_read there)."""
    proxy = CuttingProxy(os.environ["AWS_ENDPOINT_URL"], cuts=0, refuse_tags=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    src = Location.parse(s3_photos.uri)
    out = read_sources(plan_rows("b.png"), src=src, prefix="read-test/photos/")
    assert list(out["error"]) == [""] and bytes(out["bytes"][0]) == PHOTO
    assert bytes(out["s3_tags"][0]) == b""
    assert out["not_read"][0] == (
        "S3 object tags (2: reading them was refused; s3:GetObjectTagging reads them)"
    )


def test_an_s3_source_whose_body_is_always_cut_short_is_its_rows_error(s3_photos, monkeypatch):
    proxy = CuttingProxy(os.environ["AWS_ENDPOINT_URL"], cuts=100)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    src = Location.parse(s3_photos.uri)
    out = read_sources(plan_rows("a.png"), src=src, prefix="read-test/photos/")
    retries = src.filesystem().retries  # s3fs's, 5
    assert list(out["bytes"]) == [b""] and proxy.requests == {"GET": retries}
    assert out["error"][0].startswith("cannot read the source: ClientPayloadError: Response pay")
