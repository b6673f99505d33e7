"""What a job did, as its summary line and --json say it: its rows by status, the bytes of
the images done, and the files archived with a loss, summed from the rows as they are written
(`summarize` in the write stage's tasks, `TallyingWriter` in the job's manifest writer)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.format import ARCHIVED_NOTE, DONE, KEPT
from pipeline.manifest import ManifestWriter, to_table
from pipeline.sources import image_names
from pipeline.storage import Location
from pipeline.summary import any_loss

Batch = dict[str, np.ndarray]


@dataclass
class Tally:
    """A run's rows by status, the bytes of the images done where its rows have them, and the
    files it archived (shrunk, or kept as they are) with a loss."""

    counts: Counter = field(default_factory=Counter)
    source_bytes: int = 0
    lr_bytes: int = 0
    kept_bytes: int = 0
    with_losses: int = 0
    other_files: int = 0  # rows of files that are not images (kept with --keep-failed)

    def add(self, summary: Batch) -> None:
        """Add a `summarize` of rows."""
        for status, count, source_bytes, lr_bytes, kept_bytes, with_losses, others in zip(
            summary["status"].tolist(),
            summary["count"].tolist(),
            summary["source_bytes"].tolist(),
            summary["lr_bytes"].tolist(),
            summary["kept_bytes"].tolist(),
            summary["with_losses"].tolist(),
            summary["other_files"].tolist(),
            strict=True,
        ):
            self.counts[status] += count
            self.other_files += others
            if status in ("ok", KEPT):
                self.with_losses += with_losses
            if status in DONE or status == KEPT:
                self.source_bytes += source_bytes
                self.lr_bytes += lr_bytes
                self.kept_bytes += kept_bytes

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.counts + other.counts,
            self.source_bytes + other.source_bytes,
            self.lr_bytes + other.lr_bytes,
            self.kept_bytes + other.kept_bytes,
            self.with_losses + other.with_losses,
            self.other_files + other.other_files,
        )


class TallyingWriter(ManifestWriter):
    """The job's ManifestWriter, which tallies the rows it takes: what the job did, with the
    rows of batches still in flight after an early stop, which the driver never sees."""

    def __init__(self, manifest: Location, schema: pa.Schema) -> None:
        super().__init__(manifest, schema)
        self.tally = Tally()

    def add(self, rows: list[dict[str, Any]] | pa.Table) -> bool:
        table = rows if isinstance(rows, pa.Table) else to_table(rows, self.schema)
        taken = super().add(table)
        if taken:
            self.tally.add(summarize(table))
        return taken

    def close_tallied(self) -> Tally:
        """close, and the tally of every row taken."""
        self.close()
        return self.tally


def summarize(rows: pa.Table) -> Batch:
    """Rows by status: how many, and the sums of their source_bytes and lr_bytes, of
    kept_bytes, the source_bytes of kept files (0 where the schema has none; kept files are
    not shrunk, so their source_bytes and lr_bytes count 0), and of with_losses, the files
    whose conversion notes a loss (a restore's: what archiving did, ARCHIVED_NOTE; Tally
    counts those shrunk, kept or restored), and of other_files, the rows of files that are
    not images by their name (sources.image_names): what the driver sees of the rows the
    workers write."""
    sums = [c for c in ("source_bytes", "lr_bytes") if c in rows.column_names]
    if "kept_uri" in rows.column_names:
        kept = pc.fill_null(pc.not_equal(rows["kept_uri"], ""), False)
        kept_bytes = pc.if_else(kept, rows["source_bytes"], 0).cast(pa.int64())
        for c in sums:
            shrunk = pc.if_else(kept, 0, rows[c]).cast(pa.int64())
            rows = rows.set_column(rows.column_names.index(c), c, shrunk)
        rows = rows.append_column("kept_bytes", kept_bytes)
        sums.append("kept_bytes")
        if "conversion" in rows.column_names:
            lossy = any_loss(rows["conversion"]).cast(pa.int64())
            rows = rows.append_column("with_losses", lossy)
            sums.append("with_losses")
    elif "conversion" in rows.column_names:  # a restore's: what archiving did, at its end
        archived = pc.replace_substring_regex(rows["conversion"], f"^.*?{ARCHIVED_NOTE}", "")
        said = pc.match_substring(rows["conversion"], ARCHIVED_NOTE)
        lossy = any_loss(pc.if_else(said, archived, None)).cast(pa.int64())
        rows = rows.append_column("with_losses", lossy)
        sums.append("with_losses")
    if "rel_path" in rows.column_names:
        others = pc.invert(pc.fill_null(image_names(rows["rel_path"]), True)).cast(pa.int64())
        rows = rows.append_column("other_files", others)
        sums.append("other_files")
    groups = (
        rows.select(["status", *sums])
        .group_by("status", use_threads=False)
        .aggregate([("status", "count"), *[(c, "sum") for c in sums]])
    )
    n = len(groups)
    return {
        "status": np.array(groups["status"].to_pylist(), dtype=object),
        "count": groups["status_count"].to_numpy().astype(np.int64),
        **{
            c: pc.fill_null(groups[f"{c}_sum"], 0).to_numpy().astype(np.int64)
            if c in sums
            else np.zeros(n, dtype=np.int64)
            for c in ("source_bytes", "lr_bytes", "kept_bytes", "with_losses", "other_files")
        },
    }
