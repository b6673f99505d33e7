"""tadm bench's plan section: what an archive job costs around the model at 1M-10M images.

No images: a synthetic S3 Inventory listing (Parquet) of N image keys, an archive manifest of
the N/2 images an earlier run finished (in compacted parts of 1M rows) and their LR sizes. Each
step runs in a fresh process (`python -m jobs.bench.plan STEP ...`) that reports its time and
peak RSS (VmHWM):

- plan: the inventory read into buckets, joined bucket by bucket against the manifest and the
  LR sizes (the skip decision), as `tadm archive --inventory` plans a re-run;
- compact: the manifest of N rows in parts of 10,000 rows (as a killed job leaves them)
  merged into parts of one row per image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.rss import peak_rss, run_probe
from pipeline.archive.plan import ArchiveConfig, ArchiveJob, output_table, source_buckets
from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR
from pipeline.job import split_buckets
from pipeline.manifest import compact, list_parts, part_name
from pipeline.storage import Location

CHUNK = 250_000  # rows generated at a time
MODEL_ID = "bench-model"
WRITTEN = pa.scalar(1_700_000_000_000_000, pa.int64()).cast(ARCHIVE_SCHEMA.field("written_at").type)


def rel_paths(start: int, stop: int) -> pa.Array:
    """Image names spread over 1000 folders: "d0042/img_00012345.jpg"."""
    i = np.arange(start, stop)
    return pa.array([f"d{k % 1000:04d}/img_{k:08d}.jpg" for k in i.tolist()], pa.string())


def sizes(start: int, stop: int) -> np.ndarray:
    return 100_000 + (np.arange(start, stop) * 7919) % 900_000


def etags(start: int, stop: int) -> pa.Array:
    return pa.array([f"{k * 2654435761 % (1 << 64):032x}" for k in range(start, stop)])


def write_inventory(path: Path, n: int) -> None:
    """An S3 Inventory Parquet file of n keys under photos/src/."""
    schema = pa.schema(
        [("bucket", pa.string()), ("key", pa.string()), ("size", pa.int64()),
         ("last_modified_date", pa.timestamp("ms", tz="UTC")), ("e_tag", pa.string())]
    )  # fmt: skip
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            keys = pa.compute.binary_join_element_wise("src/", rel_paths(start, stop), "")
            when = pa.array(np.full(stop - start, 1_700_000_000_000), pa.int64())
            writer.write_table(
                pa.table(
                    {
                        "bucket": pa.array(["photos"] * (stop - start)),
                        "key": keys,
                        "size": sizes(start, stop),
                        "last_modified_date": when.cast(schema.field("last_modified_date").type),
                        "e_tag": etags(start, stop),
                    },
                    schema=schema,
                )
            )


def manifest_rows(start: int, stop: int) -> pa.Table:
    """Finished archive rows of images start..stop, as a real run writes them."""
    n = stop - start
    names = rel_paths(start, stop)
    lr_bytes = sizes(start, stop) // 64
    return pa.table(
        {
            "source_uri": pa.compute.binary_join_element_wise("s3://photos/src/", names, ""),
            "rel_path": names,
            "status": pa.array(["ok"] * n),
            "width": np.full(n, 4000),
            "height": np.full(n, 3000),
            "source_bytes": sizes(start, stop),
            "source_sha256": pa.array([f"{k:064x}" for k in range(start, stop)]),
            "lr_uri": pa.compute.binary_join_element_wise("s3://archive/x/lr/", names, ".png", ""),
            "lr_width": np.full(n, 250),
            "lr_height": np.full(n, 188),
            "lr_bytes": lr_bytes,
            "bpp": 8 * lr_bytes / 12e6,
            "compression_ratio": sizes(start, stop) / lr_bytes,
            "scale": np.full(n, 16),
            "model_id": pa.array([MODEL_ID] * n),
            "seconds": np.full(n, 0.5),
            "source_mtime": pa.array(np.full(n, 1_700_000_000_000_000), pa.int64()).cast(
                ARCHIVE_SCHEMA.field("source_mtime").type
            ),
            "source_etag": etags(start, stop),
            "written_at": pa.array([WRITTEN] * n, WRITTEN.type),
        }
    )


def write_manifest(folder: Path, n: int, part_rows: int) -> None:
    """A manifest of n finished rows in parts of part_rows rows."""
    folder.mkdir(parents=True, exist_ok=True)
    from pipeline.manifest import conform

    for start in range(0, n, part_rows):
        with pq.ParquetWriter(folder / part_name(), ARCHIVE_SCHEMA) as writer:
            for chunk in range(start, min(n, start + part_rows), CHUNK):
                stop = min(n, start + part_rows, chunk + CHUNK)
                writer.write_table(conform(manifest_rows(chunk, stop), ARCHIVE_SCHEMA))


@dataclass(frozen=True)
class SimulatedArchive(ArchiveJob):
    """The archive plan with the LR files of the finished images listed from numbers, not
    from a DST holding millions of files."""

    done: int = 0  # images 0..done-1 have their LR file

    def outputs(self) -> Iterator[pa.Table]:
        for start in range(0, self.done, CHUNK):
            stop = min(self.done, start + CHUNK)
            yield output_table(rel_paths(start, stop), sizes(start, stop) // 64, "lr")


def step_plan(work: Path, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    src, dst = Location.parse("s3://photos/src"), Location.parse(str(work / "archive"))
    inventory = Location.parse(str(work / "inventory.parquet"))
    sources, prefix = source_buckets(src, dst, inventory)
    config = ArchiveConfig(src=src.uri, dst=dst.uri, inventory=inventory.uri)
    plan = SimulatedArchive(
        config=config, dst=dst, options={}, model_ref="bench", model_id=MODEL_ID, src=src,
        scale=16, sources=sources, prefix=prefix, done=n // 2,
    )  # fmt: skip
    skipped = todo = 0
    for rows, images, _ in split_buckets(plan):
        skipped += len(rows)
        todo += len(images)
    sources.close()
    seconds = time.perf_counter() - start
    return {"rows": n, "skipped": skipped, "todo": todo, "seconds": seconds}


def step_compact(work: Path, n: int) -> dict[str, Any]:
    manifest = Location.parse(str(work / "parts" / MANIFEST_DIR))
    before = len(list_parts(manifest))
    start = time.perf_counter()
    compact(manifest, ARCHIVE_SCHEMA)
    seconds = time.perf_counter() - start
    rows = sum(pq.read_metadata(p).num_rows for p in list_parts(manifest))
    return {"rows": rows, "parts_before": before, "parts_after": len(list_parts(manifest)),
            "seconds": seconds}  # fmt: skip


STEPS = {"plan": step_plan, "compact": step_compact}
PROBES = {**STEPS, "imports": lambda work, n: {}}


def run_plan(sizes_: list[int], work: Path) -> dict[str, Any]:
    """Each size: generate the data, then measure each step in a fresh process."""
    results = []
    baseline = run_probe("jobs.bench.plan", ["imports", str(work), "0"])["peak_rss_bytes"]
    for n in sizes_:
        folder = work / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        start = time.perf_counter()
        write_inventory(folder / "inventory.parquet", n)
        write_manifest(folder / "archive" / MANIFEST_DIR, n // 2, 1_000_000)
        write_manifest(folder / "parts" / MANIFEST_DIR, n, 10_000)
        generated = time.perf_counter() - start
        for step in STEPS:
            out = run_probe("jobs.bench.plan", [step, str(folder), str(n)])
            out |= {"step": step, "n": n, "rows_per_s": out["rows"] / out["seconds"]}
            out["generate_seconds"] = generated
            results.append(out)
        shutil.rmtree(folder, ignore_errors=True)
    return {"rows": results, "baseline_rss": baseline}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.bench.plan")
    p.add_argument("step", choices=PROBES)
    p.add_argument("work")
    p.add_argument("n", type=int)
    args = p.parse_args()
    out = PROBES[args.step](Path(args.work), args.n)
    out["peak_rss_bytes"] = peak_rss()
    out["pid"] = os.getpid()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
