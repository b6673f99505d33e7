"""The rows of an archive's merged manifest worst first, and the figures of all of them, in the
memory of a bucket of rel_paths (manifest.merged): the report of ten million images holds a
bucket, a batch of rows of each bucket, and a float per verified image.

Each bucket is sorted on its own into a run, kept in memory when the manifest is one bucket,
else written to a local Parquet file; `Ranking.rows` merges the runs, a batch of rows of each
at a time. The order: by group (groups), then by PSNR, ties by rel_path.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.buckets import remove_spill, spill_folder
from pipeline.format import DONE, KEPT, is_rel_path
from pipeline.manifest import Merged
from pipeline.sources import image_names
from pipeline.summary import Summary, Totals, archived

RUN_BATCH = 1024  # rows of each run read, then turned into Python rows, at a time
GROUP, PSNR = "_group", "_psnr"  # a run's sort keys beside the rows' columns
ORDER = [(GROUP, "ascending"), (PSNR, "ascending"), ("rel_path", "ascending")]
# The rank of the first row of these statuses: each is one group
FIRST = {KEPT: 2, "error": 3}


def kept_sources(table: pa.Table) -> pa.Array:
    """Which rows of a manifest `table` are of a source kept as it was: status kept, or
    skipped as done by a later run (with the kept_uri of its copy)."""
    has_copy = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    done = pc.is_in(table["status"], pa.array(DONE))
    return pc.or_(pc.fill_null(pc.equal(table["status"], KEPT), False), pc.and_(done, has_copy))


def groups(table: pa.Table) -> pa.Array:
    """The order's first key for each row of a manifest `table`: 0 for an image with a PSNR
    (a number: inf too), 1 for one without (archived without --verify), 2 for a source kept
    as it was, 3 for an error row, 4 for a row of no status the format knows."""
    status, psnr = table["status"], table["psnr"]
    kept = kept_sources(table)
    error = pc.fill_null(pc.equal(status, "error"), False)
    done = pc.is_in(status, pa.array(DONE))
    scored = pc.fill_null(pc.invert(pc.is_nan(psnr)), False)
    group = pc.if_else(scored, 0, 1)
    return pc.if_else(kept, 2, pc.if_else(done, group, pc.if_else(error, 3, 4))).cast(pa.int8())


def sorted_run(table: pa.Table) -> pa.Table:
    """The rows of `table` worst first, with their sort keys (GROUP, PSNR) as two columns.
    Sorted by Arrow: the rows stay columns until a batch of them is merged."""
    group = groups(table)
    table = table.append_column(GROUP, group)
    table = table.append_column(PSNR, pc.if_else(pc.equal(group, 0), table["psnr"], 0.0))
    keys = table.select([GROUP, PSNR]).append_column(
        "rel_path", pc.fill_null(table["rel_path"], "")
    )
    return table.take(pc.sort_indices(keys, sort_keys=ORDER))


def verified(table: pa.Table, *, kept: bool) -> np.ndarray:
    """The PSNR of each image of a manifest that --verify measured and that was archived as an
    LR (ok or skipped), or with `kept`, that was kept as it is after all (below --min-psnr or
    --min-ssim): summary.archived tells them apart by their kept_uri, as the totals do."""
    is_kept = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    output = pc.is_in(table["status"], pa.array((*DONE, KEPT)))
    measured = pc.and_(output, pc.fill_null(pc.invert(pc.is_nan(table["psnr"])), False))
    chosen = is_kept if kept else pc.invert(is_kept)
    return table.filter(pc.and_(measured, chosen))["psnr"].to_numpy().astype(np.float64)


def other_files(table: pa.Table) -> int:
    """How many rows of a manifest are of files that archive takes for no image by their name
    (sources.image_names): files kept as they are with --keep-failed, such as notes.txt."""
    image = image_names(table["rel_path"])
    return pc.sum(pc.invert(pc.fill_null(image, True))).as_py() or 0


def lr_rows(table: pa.Table) -> int:
    """How many rows of a manifest have an LR file to show (build.Entry.has_lr)."""
    done = archived(table)["rel_path"]
    return sum(is_rel_path(rel_path or "") for rel_path in done.to_pylist())


class Ranking:
    """A merged manifest's rows ranked (`rows`), and what the report says of all of them.
    Built in one pass over `merged`'s buckets; a context manager: leaving it removes the runs
    it wrote."""

    def __init__(self, merged: Merged) -> None:
        self.runs: list[pa.Table | str] = []  # sorted tables, or their Parquet files
        self.folder: str | None = None
        self.lock: int | None = None
        try:
            self.read(merged)
        except BaseException:
            self.close()
            raise

    def read(self, merged: Merged) -> None:
        totals = Totals()
        psnrs: list[np.ndarray] = []
        kept_psnrs: list[np.ndarray] = []
        counts = np.zeros(5, dtype=np.int64)  # rows per group
        self.other_files = self.lr_rows = 0
        for bucket in merged:
            totals.add(bucket)
            psnrs.append(verified(bucket, kept=False))
            kept_psnrs.append(verified(bucket, kept=True))
            self.other_files += other_files(bucket)
            self.lr_rows += lr_rows(bucket)
            run = sorted_run(bucket)
            counts += np.bincount(run[GROUP].to_numpy(), minlength=5)
            self.add_run(run, spill=merged.n > 1)
        self.summary: Summary = totals.summary()
        self.psnrs = np.concatenate([np.empty(0), *psnrs])
        self.kept_psnrs = np.concatenate([np.empty(0), *kept_psnrs])
        self.n = int(counts.sum())
        before = np.cumsum(counts) - counts  # rows ranked before each group
        self.first = {s: int(before[g]) + 1 for s, g in FIRST.items() if counts[g]}

    def add_run(self, run: pa.Table, *, spill: bool) -> None:
        if not len(run):
            return
        if not spill:
            self.runs.append(run)
            return
        if self.folder is None:
            self.folder, self.lock = spill_folder()
        path = os.path.join(self.folder, f"run-{len(self.runs)}.parquet")
        pq.write_table(run, path, row_group_size=RUN_BATCH)
        self.runs.append(path)

    def rows(self) -> Iterator[dict]:
        """Each row, worst first, as a dict of its manifest columns."""
        merged = heapq.merge(*(self.run_rows(i) for i in range(len(self.runs))))
        for *_, row in merged:
            yield row

    def run_rows(self, i: int) -> Iterator[tuple]:
        """Run i's rows after their sort keys, its number and their place in it (no two rows
        compare equal before their dicts)."""
        run = self.runs[i]
        if isinstance(run, str):
            batches = pq.ParquetFile(run).iter_batches(batch_size=RUN_BATCH)
        else:
            batches = iter(run.to_batches(max_chunksize=RUN_BATCH))
        place = 0
        for batch in batches:
            group, psnr = batch.column(GROUP).to_pylist(), batch.column(PSNR).to_pylist()
            rows = batch.drop_columns([GROUP, PSNR]).to_pylist()
            for g, p, row in zip(group, psnr, rows, strict=True):
                yield g, p, row["rel_path"] or "", i, place, row
                place += 1

    def close(self) -> None:
        if self.folder is not None and self.lock is not None:
            remove_spill(self.folder, self.lock)
        self.folder = self.lock = None
        self.runs = []

    def __enter__(self) -> Ranking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
