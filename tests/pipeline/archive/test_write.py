"""Archive's write stage: one output per image, the earlier one of the other kind removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.archive.write import write_lr
from pipeline.storage import Location


def kept_rows(outputs: str) -> dict[str, np.ndarray]:
    """One image below the quality floor, to be kept; DST held `outputs` for it before."""
    row = {
        "rel_path": "a.png",
        "status": "kept",
        "kept_reason": "psnr 20.00 dB below --min-psnr 30",
        "error": None,
        "error_kind": None,
        "source_data": b"source bytes",
        "source_bytes": 12,
        "lr_png": None,
        "outputs": outputs,
        "seconds": 0.0,
    }
    return {name: np.array([value], dtype=object) for name, value in row.items()}


def test_an_image_kept_now_loses_its_earlier_lr(tmp_path: Path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "lr/a.png.png").write_bytes(b"old LR")
    out = write_lr(kept_rows("lr"), dst=Location.parse(str(tmp_path)))
    assert out["status"][0] == "kept"
    assert (tmp_path / "kept/a.png").read_bytes() == b"source bytes"
    assert not (tmp_path / "lr/a.png.png").exists()


def test_an_earlier_lr_that_cannot_be_removed_is_a_transient_error(tmp_path: Path):
    (tmp_path / "lr/a.png.png").mkdir(parents=True)  # a folder in the way
    (tmp_path / "lr/a.png.png/x").write_bytes(b"")
    out = write_lr(kept_rows("lr"), dst=Location.parse(str(tmp_path)))
    assert (out["status"][0], out["error_kind"][0]) == ("error", "transient")
    assert out["error"][0].startswith(f"cannot remove the earlier LR {tmp_path}/lr/a.png.png: ")
    assert (tmp_path / "kept/a.png").read_bytes() == b"source bytes"  # a re-run finishes it
