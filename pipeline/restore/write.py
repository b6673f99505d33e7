"""Write stage of restore: HR pixels -> DST/<rel_path>.<format>, written atomically."""

from __future__ import annotations

import numpy as np

from pipeline.format import RESTORE_SCHEMA, encode_output, output_key
from pipeline.rows import to_batch, to_rows
from pipeline.stage import Row, write_files
from pipeline.storage import Location


def write_restored(
    batch: dict[str, np.ndarray], *, dst: Location, image_format: str
) -> dict[str, np.ndarray]:
    """Ray Data stage: encode and write each ok row's "restored"; return manifest rows."""

    def output(row: Row) -> tuple[str, bytes]:
        key = output_key(row["rel_path"], image_format)
        return key, encode_output(row["restored"], image_format)

    return to_batch(write_files(to_rows(batch), dst, "output_uri", output), RESTORE_SCHEMA.names)
