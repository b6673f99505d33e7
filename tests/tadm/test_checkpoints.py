"""The checkpoints shipped inside the package: they load, are small, and are the card's models."""

import re

import pytest
import torch

from tadm import TADM, hub

CARD = hub.SHIPPED_DIR / "MODEL_CARD.md"


@pytest.mark.parametrize(("name", "scale"), [("tiny-x16", 16), ("tiny-x32", 32)])
def test_shipped_checkpoint_loads_and_matches_the_model_card(name, scale):
    assert name in hub.shipped_names()
    model = TADM.from_pretrained(name)
    assert model.scale == scale
    size = sum(p.stat().st_size for p in (hub.SHIPPED_DIR / name).iterdir())
    assert size <= 30 * 2**20
    row = re.search(rf"^\| `{name}` \| `([0-9a-f]{{16}})` \|", CARD.read_text(), re.MULTILINE)
    assert row is not None, f"no row for {name} in {CARD}"
    assert row.group(1) == model.model_id
    hr = torch.rand(1, 3, 64, 80)
    lr = model.downscale(hr)
    assert lr.shape == (1, 3, -(-64 // scale), -(-80 // scale))  # ceil(H / s), ceil(W / s)
    assert model.upscale(lr, size=(64, 80)).shape == hr.shape
