"""The read stage of a restore (pipeline/restore/read.py), without Ray."""

from __future__ import annotations

import pytest

from pipeline.restore.read import read_kept
from pipeline.storage import Location


def test_a_missing_kept_file_says_where_to_look_and_what_to_do(tmp_path):
    (tmp_path / "kept").mkdir()
    archive = Location.parse(str(tmp_path))
    row = {"rel_path": "motion.jpg", "kept_uri": str(tmp_path / "kept/motion.jpg")}
    with pytest.raises(OSError) as raised:
        read_kept(row, archive, None, "png", False)
    assert str(raised.value) == (
        f"kept file {tmp_path}/kept/motion.jpg is missing, and the archive holds no other copy "
        f"of the source: put it back from a backup (`tadm inspect {tmp_path} --check` lists "
        "what else is missing) and run the restore again"
    )
