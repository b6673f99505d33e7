"""pipeline.summary: what inspect prints of a manifest."""

from __future__ import annotations

import pyarrow as pa

from pipeline.format import ARCHIVE_SCHEMA
from pipeline.manifest import conform
from pipeline.summary import summarize


def test_one_verified_image_is_one_image():
    rows = pa.table(
        {
            "rel_path": ["a.png"],
            "status": ["ok"],
            "psnr": [25.0],
            "ssim": [0.8],
            "source_bytes": [1000],
            "lr_bytes": [10],
        }
    )
    lines = summarize(conform(rows, ARCHIVE_SCHEMA)).lines()
    assert "mean psnr: 25.00 dB over 1 image" in lines
