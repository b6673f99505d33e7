"""TileService without Ray: a tile carries its image's ICC profile; views no larger than the
LR are made from it; the list of images."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import display_p3_icc, photo, record_lrs
from PIL import Image

import pipeline.serve.tiles as tiles_module
from pipeline.format import ARCHIVE_SCHEMA, LrHeader, encode_lr_png
from pipeline.lease import Lease
from pipeline.manifest import to_table, write_part
from pipeline.metadata import Metadata
from pipeline.restore.plan import recorded_items as read
from pipeline.serve.iiif import parse_view
from pipeline.serve.tiles import TileError, TileService
from pipeline.srgb import png_colour_to_srgb
from pipeline.storage import Location
from tadm import TADM

LIMIT = 10_000  # max_region_pixels of the services


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def add_lr(archive: Path, rel_path: str, lr: np.ndarray, header: LrHeader) -> None:
    path = archive / "lr" / f"{rel_path}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_lr_png(lr, header))


def service(archive: Path, model: str) -> TileService:
    return TileService(str(archive), model, {}, LIMIT, 2**20, torch.device("cpu"))


def test_png_tiles_carry_the_icc_profile(tiny_model: str, tmp_path: Path):
    model_id = TADM.from_pretrained(tiny_model).model_id
    lr = photo(4, 3)  # of a 64 x 48 image
    for name, metadata in (("p3.png", Metadata(icc=display_p3_icc())), ("plain.png", Metadata())):
        add_lr(tmp_path, name, lr, LrHeader(64, 48, 16, model_id, metadata))
    tiles = service(tmp_path, tiny_model)
    region = [("x", "8"), ("y", "8"), ("w", "32"), ("h", "24")]
    with Image.open(io.BytesIO(tiles.tile("p3.png", region).data)) as img:
        assert img.size == (32, 24) and img.info["icc_profile"] == display_p3_icc()
    with Image.open(io.BytesIO(tiles.tile("plain.png", region).data)) as img:
        assert "icc_profile" not in img.info


def test_tiles_of_a_png_with_gama_alone_are_converted_to_srgb(tiny_model: str, tmp_path: Path):
    """A PNG that states its colours with gAMA (and cHRM) but no ICC profile: its tiles, in any
    format, hold sRGB pixels (a JPEG or WebP has no place for the chunks), restored or made
    from the LR."""
    model_id = TADM.from_pretrained(tiny_model).model_id
    lr = photo(4, 3)
    linear = Metadata(png_colour=b"gAMA" + struct.pack(">I", 100000))
    add_lr(tmp_path, "plain.png", lr, LrHeader(64, 48, 16, model_id))
    add_lr(tmp_path, "linear.png", lr, LrHeader(64, 48, 16, model_id, linear))
    tiles = service(tmp_path, tiny_model)
    for region, size in (("8,8,32,24", "max"), ("full", "4,")):  # restored; from the LR
        view = parse_view(region, size, "0", "default.png", 64, 48, LIMIT, 16)
        plain = decode(tiles.view("plain.png", view).data)
        expected, _ = png_colour_to_srgb(plain, linear.png_colour)
        assert np.abs(expected.astype(int) - plain).max() > 20  # linear light looks different
        data = tiles.view("linear.png", view).data
        assert np.array_equal(decode(data), expected)
        with Image.open(io.BytesIO(data)) as img:
            assert "gamma" not in img.info


def test_views_no_larger_than_the_lr_are_its_pixels_resized(tiny_model, tmp_path, monkeypatch):
    """A 1600 x 1200 image (160 times max_region_pixels): thumbnails and zoomed-out tiles come
    from its 100 x 75 LR, resized with Lanczos, without the model."""
    model_id = TADM.from_pretrained(tiny_model).model_id
    lr = photo(100, 75, 5)
    add_lr(tmp_path, "big.png", lr, LrHeader(1600, 1200, 16, model_id))
    tiles = service(tmp_path, tiny_model)
    monkeypatch.setattr(tiles.model, "upscale", None)  # any model call fails
    image = Image.fromarray(lr)
    for region, size, box in [
        ("full", "!50,50", (0, 0, 100, 75)),
        ("0,0,400,400", "40,", None),  # over the LR's 25 x 25: restored, over the limit
        ("0,0,512,512", "32,", (0, 0, 32, 32)),  # a tile at scale factor 16
        ("1024,1024,576,176", "36,11", (64, 64, 100, 75)),  # the last one
        ("40,24,100,80", "7,5", (2.5, 1.5, 8.75, 6.5)),  # between LR pixels
    ]:
        view = parse_view(region, size, "0", "default.png", 1600, 1200, LIMIT, 16)
        if box is None:
            with pytest.raises(TileError) as e:
                tiles.view("big.png", view)
            assert e.value.status == 413
            continue
        tile = tiles.view("big.png", view)
        assert tile.from_lr and (tile.tiles_run, tile.tiles_total) == (0, 0)
        expected = image.resize(view.size, Image.Resampling.LANCZOS, box=box)
        assert np.array_equal(decode(tile.data), np.asarray(expected))


def test_the_image_list_has_the_images_with_an_lr(tiny_model, tmp_path):
    model_id = TADM.from_pretrained(tiny_model).model_id
    for rel_path in ("b.png", "a/c.jpg"):
        add_lr(tmp_path, rel_path, photo(4, 3), LrHeader(64, 48, 16, model_id))
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("kept as it is: no LR")
    tiles = service(tmp_path, tiny_model)
    assert tiles.images() == ["a/c.jpg", "b.png"]
    assert tiles.view("b.png", parse_view("full", "4,", "0", "default.png", 64, 48, LIMIT, 16))


def test_an_unreadable_manifest_makes_the_image_list_503(tiny_model, tmp_path):
    model_id = TADM.from_pretrained(tiny_model).model_id
    add_lr(tmp_path, "b.png", photo(4, 3), LrHeader(64, 48, 16, model_id))
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "part-zzz.parquet").write_bytes(b"not parquet")
    with pytest.raises(TileError) as e:
        service(tmp_path, tiny_model).images()
    assert e.value.status == 503
    assert "manifest part ARCHIVE/manifest/part-zzz.parquet cannot be read" in e.value.message
    assert str(tmp_path) not in e.value.message  # where the archive is goes to the log only


def test_an_lr_file_is_served_only_as_the_archive_manifest_records_it(tiny_model, tmp_path):
    """An LR file changed by hand is not served, nor one no row records (as a restore does);
    a job's new rows are taken as they come."""
    model_id = TADM.from_pretrained(tiny_model).model_id
    for rel_path in ("a.png", "b.png", "c.png"):
        add_lr(tmp_path, rel_path, photo(4, 3), LrHeader(64, 48, 16, model_id))

    record_lrs(tmp_path, ["a.png", "b.png"], model_id)
    hostile = {"rel_path": "../a.png", "status": "ok", "lr_sha256": "0" * 64, "model_id": model_id}
    write_part(Location.parse(str(tmp_path / "manifest")), to_table([hostile], ARCHIVE_SCHEMA))
    view = parse_view("full", "4,", "0", "default.png", 64, 48, LIMIT, 16)
    tiles = service(tmp_path, tiny_model)
    assert tiles.images() == ["a.png", "b.png"]  # not one whose viewer would answer 400
    assert tiles.view("a.png", view)
    add_lr(tmp_path, "b.png", photo(4, 3, seed=1), LrHeader(64, 48, 16, model_id))
    for rel_path, status, message in (
        ("b.png", 500, "image 'b.png': its LR file changed since it was archived: `tadm"),
        ("c.png", 404, "no image 'c.png' in this archive"),
    ):
        with pytest.raises(TileError) as e:
            tiles.view(rel_path, view)
        assert (e.value.status, e.value.message[: len(message)]) == (status, message)
        assert str(tmp_path) not in e.value.message  # where the archive is goes to the log only
    with Lease(Location.parse(str(tmp_path)), "archive"):  # a job writes b.png's row soon
        with pytest.raises(TileError) as e:
            tiles.view("b.png", view)
        assert (e.value.status, e.value.message) == (
            503,
            "image 'b.png' is being archived again: retry",
        )
    record_lrs(tmp_path, ["b.png", "c.png"], model_id)  # a job archived them again
    assert tiles.view("b.png", view) and tiles.view("c.png", view)
    assert tiles.images() == ["a.png", "b.png", "c.png"]


def test_a_kept_source_is_said_to_be_kept_with_no_lr_to_serve(tiny_model, tmp_path):
    """A source the archive keeps as it is has no LR to serve: its 404 says so, and how to
    have it back, where an image the archive has no row of is unknown."""
    model_id = TADM.from_pretrained(tiny_model).model_id
    add_lr(tmp_path, "a.png", photo(4, 3), LrHeader(64, 48, 16, model_id))
    record_lrs(tmp_path, ["a.png"], model_id)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "page.png").write_bytes(b"kept as it is")
    kept = {"rel_path": "page.png", "status": "kept", "kept_uri": str(tmp_path / "kept/page.png")}
    write_part(Location.parse(str(tmp_path / "manifest")), to_table([kept], ARCHIVE_SCHEMA))
    tiles = service(tmp_path, tiny_model)
    view = parse_view("full", "4,", "0", "default.png", 64, 48, LIMIT, 16)
    for rel_path, message in (
        (
            "page.png",
            "image 'page.png' is kept as it is under kept/, with no LR to serve: "
            "`tadm restore ARCHIVE DST --only 'page.png'` gives it back",
        ),
        ("nope.png", "no image 'nope.png' in this archive"),
    ):
        for ask, args in ((tiles.header, ()), (tiles.view, (view,))):
            with pytest.raises(TileError) as e:
                ask(rel_path, *args)
            assert (e.value.status, e.value.message) == (404, message)
    assert tiles.images() == ["a.png"]


def test_the_manifest_is_read_once_not_at_each_request(tiny_model, tmp_path, monkeypatch):
    model_id = TADM.from_pretrained(tiny_model).model_id
    rel_paths = [f"{i}.png" for i in range(4)]
    for rel_path in rel_paths:
        add_lr(tmp_path, rel_path, photo(4, 3), LrHeader(64, 48, 16, model_id))
    record_lrs(tmp_path, rel_paths, model_id)
    reads = []
    monkeypatch.setattr(tiles_module, "recorded_items", lambda *a: reads.append(a) or read(*a))
    tiles = service(tmp_path, tiny_model)
    view = parse_view("full", "4,", "0", "default.png", 64, 48, LIMIT, 16)
    for rel_path in rel_paths:
        assert tiles.view(rel_path, view) and tiles.images() == rel_paths
    assert len(reads) == 1
