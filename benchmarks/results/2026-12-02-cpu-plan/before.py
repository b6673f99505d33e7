"""The plan section's figures for the code before bounded-memory planning (commit 5054b44).

That code has no --inventory and no bench section, so this replays its plan on the same
synthetic data as `tadm bench --sections plan`: its `list_sources` over a filesystem whose
recursive listing returns the N entries as fsspec does (one dict each, as `find(detail=True)`
gives them, without the network), its `ArchiveJob.finished` (the skip decision) against the
manifest of N/2 finished rows and N/2 LR files, and its `compact` of N rows in parts of 10,000.

    git archive 5054b44 pipeline tadm jobs | tar -x -C /tmp/before
    PYTHONPATH=$PWD python before.py generate WORK N          # the data, with this tree's code
    PYTHONPATH=/tmp/before python before.py plan WORK N       # the old code, a fresh process
    PYTHONPATH=/tmp/before python before.py compact WORK N

Each step prints one JSON line: seconds, rows/s and peak RSS (VmHWM, imports included).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def generate(work: Path, n: int) -> None:
    from jobs.bench.plan import write_manifest
    from pipeline.format import MANIFEST_DIR

    write_manifest(work / "archive" / MANIFEST_DIR, n // 2, 1_000_000)
    write_manifest(work / "parts" / MANIFEST_DIR, n, 10_000)


def entries(n: int, root: str, suffix: str, size_of) -> dict[str, dict]:
    """What fsspec's find(detail=True) returns for n files."""
    out = {}
    for k in range(n):
        rel = f"d{k % 1000:04d}/img_{k:08d}.jpg"
        out[f"{root}/{rel}{suffix}"] = {"name": f"{root}/{rel}{suffix}", "size": size_of(k),
                                        "type": "file", "mtime": 1.7e9}  # fmt: skip
    return out


def step_plan(work: Path, n: int) -> dict:
    from fsspec.implementations.local import LocalFileSystem

    from pipeline.archive.plan import ArchiveConfig, ArchiveJob
    from pipeline.sources import list_sources
    from pipeline.storage import Location

    def size(k: int) -> int:
        return 100_000 + (k * 7919) % 900_000

    class Listed(LocalFileSystem):
        """A filesystem whose recursive listing is the synthetic tree."""

        def __init__(self, tree: dict[str, dict]) -> None:
            super().__init__()
            self.tree = tree

        def isfile(self, path: str) -> bool:
            return False

        def find(self, path: str, detail: bool = False, **kwargs):
            return self.tree

    class At(Location):
        def filesystem(self):
            return self.options["fs"]

    start = time.perf_counter()
    src_fs = Listed(entries(n, "/src", "", size))
    src = At("file", "/src", {"fs": src_fs})
    sources, prefix = list_sources(src)
    del src_fs.tree
    dst_root = str(work / "archive")
    lr = entries(n // 2, f"{dst_root}/lr", ".png", lambda k: size(k) // 64)
    dst = At("file", dst_root, {"fs": Listed(lr)})
    config = ArchiveConfig(src="/src", dst=dst_root)
    job = ArchiveJob(config=config, dst=dst, options={}, model_ref="bench",
                     model_id="bench-model", src=src, scale=16, sources=sources,
                     prefix=prefix)  # fmt: skip
    finished = job.finished()
    todo = [s for s in sources if s.rel_path not in finished]
    seconds = time.perf_counter() - start
    return {"rows": n, "skipped": len(finished), "todo": len(todo), "seconds": seconds}


def step_compact(work: Path, n: int) -> dict:
    from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR
    from pipeline.manifest import compact, list_parts
    from pipeline.storage import Location

    manifest = Location.parse(str(work / "parts" / MANIFEST_DIR))
    start = time.perf_counter()
    compact(manifest, ARCHIVE_SCHEMA)
    seconds = time.perf_counter() - start
    return {"rows": n, "parts_after": len(list_parts(manifest)), "seconds": seconds}


if __name__ == "__main__":
    step, work, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if step == "generate":
        generate(work, n)
    else:
        out = {"plan": step_plan, "compact": step_compact}[step](work, n)
        out |= {"step": step, "n": n, "rows_per_s": n / out["seconds"]}
        out["peak_rss_bytes"] = peak_rss()
        print(json.dumps(out))
