"""scripts/prepare_unseen_photos.py's own rules: photos prepared as the held-out set was, and a
pickle from a wheel read with no global allowed."""

import io
import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "prepare_unseen_photos.py"))


@pytest.mark.parametrize(
    ("size", "prepared"),
    [((2560, 1600), (1280, 800)), ((600, 900), (600, 900)), ((1000, 500), None)],
)
def test_photos_are_shrunk_to_1280_on_the_long_side_never_grown_and_small_ones_skipped(
    size, prepared
):
    out = SCRIPT["prepare"](Image.new("L", size, 128))
    assert (out.size, out.mode) == (prepared, "RGB") if prepared else out is None


def test_a_pickle_is_read_as_plain_values_only():
    grey = [[0, 128], [255, 7]]
    read = SCRIPT["PlainValues"](io.BytesIO(pickle.dumps(grey))).load()
    assert read == grey
    with pytest.raises(pickle.UnpicklingError, match="only plain values are read"):
        SCRIPT["PlainValues"](io.BytesIO(pickle.dumps(np.zeros(2)))).load()
