"""An image that kills a model actor's process (pipeline/crashes.py): Ray restarts the actor and
runs its batch again; the job finds the image, makes it an error row, and finishes the rest."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

from conftest import encode, photo, write_tree
from PIL import Image

from pipeline.archive.plan import ArchiveConfig, prepare_archive
from pipeline.crashes import ALONE, DIED, IN_BATCH, Attempts
from pipeline.format import ARCHIVE_SCHEMA, TRANSIENT
from pipeline.job import Stages, run
from pipeline.manifest import read_manifest
from pipeline.restore.plan import RestoreConfig, prepare_restore
from pipeline.storage import Location


def test_attempts_say_how_each_image_was_begun_before():
    attempts = Attempts()
    assert attempts.begin(["a", "b"]) == [None, None]
    attempts.finish(["a"])
    assert attempts.begin(["a", "b"]) == [None, IN_BATCH]  # b's actor died
    attempts.alone("b")
    assert attempts.begin(["a", "b"]) == [IN_BATCH, ALONE]  # and died on b alone
    attempts.finish(["a", "b"])
    assert attempts.begin(["a", "b"]) == [None, None]


def killing(stages: Stages, victim: str) -> Stages:
    """`stages` whose read stage kills its own process when it reads `victim`, as the kernel's
    OOM killer would (SIGKILL: nothing in the process runs after it). A row with an "error" is
    not read."""
    read = stages.read

    def read_or_die(batch: dict, **kwargs: object) -> dict:
        errors = batch.get("error", [None] * len(batch["rel_path"]))
        if any(k == victim and not e for k, e in zip(batch["rel_path"], errors, strict=True)):
            os.kill(os.getpid(), signal.SIGKILL)
        return read(batch, **kwargs)

    return replace(stages, read=read_or_die)


def rows_of(root: Path) -> dict[str, dict]:
    table = read_manifest(Location.parse(str(root / "manifest")), ARCHIVE_SCHEMA)
    return {row["rel_path"]: row for row in table.to_pylist()}


def test_an_image_that_kills_its_model_actor_is_an_error_row_and_the_rest_finish(
    ray_cluster, tiny_model, tmp_path, monkeypatch
):
    names = [f"img{i}.png" for i in range(6)]
    src = write_tree(
        tmp_path / "src",
        {name: encode(Image.fromarray(photo(96, 64, i)), "PNG") for i, name in enumerate(names)},
    )
    dst = tmp_path / "archive"
    config = ArchiveConfig(src=str(src), dst=str(dst), model=tiny_model, batch_size=3, workers=1)
    plan = prepare_archive(config)
    stages = killing(plan.stages(), "img4.png")
    monkeypatch.setattr(type(plan), "stages", lambda self: stages)
    result = run(plan)
    monkeypatch.undo()
    assert result.counts == {"ok": 5, "error": 1} and result.exit_code == 1
    rows = rows_of(dst)
    assert rows["img4.png"]["status"] == "error"
    assert rows["img4.png"]["error"] == DIED and rows["img4.png"]["error_kind"] == TRANSIENT
    assert {name for name, row in rows.items() if row["status"] == "ok"} == set(names) - {
        "img4.png"
    }
    assert not (dst / "lr" / "img4.png.png").exists()

    # A re-run tries it again (a machine with more memory may take it).
    assert run(prepare_archive(config)).counts == {"skipped": 5, "ok": 1}

    # A restore finds such an image the same way.
    out = tmp_path / "restored"
    restore = RestoreConfig(
        archive=str(dst), dst=str(out), model=tiny_model, batch_size=3, workers=1
    )
    plan = prepare_restore(restore)
    stages = killing(plan.stages(), "img1.png")
    monkeypatch.setattr(type(plan), "stages", lambda self: stages)
    result = run(plan)
    assert result.counts == {"ok": 5, "error": 1}
    restored = sorted(p.name for p in out.iterdir() if p.is_file())
    assert restored == sorted(f"{name}.png" for name in names if name != "img1.png")
