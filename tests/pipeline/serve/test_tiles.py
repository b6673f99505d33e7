"""TileService without Ray: a tile carries its image's ICC profile."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from conftest import display_p3_icc, photo
from PIL import Image

from pipeline.format import LrHeader, Metadata, encode_lr_png
from pipeline.serve.tiles import TileService
from tadm import TADM


def test_png_tiles_carry_the_icc_profile(tiny_model: str, tmp_path: Path):
    model_id = TADM.from_pretrained(tiny_model).model_id
    lr = photo(4, 3)  # of a 64 x 48 image
    for name, metadata in (("p3.png", Metadata(icc=display_p3_icc())), ("plain.png", Metadata())):
        header = LrHeader(64, 48, 16, model_id, metadata)
        (tmp_path / "lr").mkdir(exist_ok=True)
        (tmp_path / "lr" / f"{name}.png").write_bytes(encode_lr_png(lr, header))
    service = TileService(str(tmp_path), tiny_model, {}, 10_000, 2**20, torch.device("cpu"))
    region = [("x", "8"), ("y", "8"), ("w", "32"), ("h", "24")]
    with Image.open(io.BytesIO(service.tile("p3.png", region).png)) as img:
        assert img.size == (32, 24) and img.info["icc_profile"] == display_p3_icc()
    with Image.open(io.BytesIO(service.tile("plain.png", region).png)) as img:
        assert "icc_profile" not in img.info
