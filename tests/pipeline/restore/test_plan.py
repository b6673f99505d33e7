"""The restore plan's checks that look across buckets."""

from __future__ import annotations

import pyarrow as pa

from pipeline.buckets import Buckets
from pipeline.restore.plan import ITEM_SCHEMA, kept_clashes


def items(rel_paths: list[str], kept: set[str], memory_rows: int) -> Buckets:
    """Restore items of `rel_paths`, those in `kept` kept sources."""
    columns = {f.name: pa.nulls(len(rel_paths), f.type) for f in ITEM_SCHEMA}
    columns["rel_path"] = pa.array(rel_paths, pa.string())
    columns["kept_uri"] = pa.array([f"kept/{p}" if p in kept else None for p in rel_paths])
    table = pa.table(columns, schema=ITEM_SCHEMA)
    return Buckets(ITEM_SCHEMA, memory_rows=memory_rows).extend([table])


def test_a_kept_source_named_as_an_images_output_clashes_with_it_in_any_bucket():
    names = [f"img{i}.jpg" for i in range(300)] + ["Img7.JPG.png", "img8.jpg.webp", "notes.txt"]
    kept = {"Img7.JPG.png", "img8.jpg.webp", "notes.txt"}
    for memory_rows in (10**6, 50):  # one bucket in memory; spilled to 64 buckets
        with items(names, kept, memory_rows) as buckets:
            assert buckets.n == (1 if memory_rows > 1000 else 64)
            clashes = kept_clashes(buckets, "png")
            assert set(clashes) == {"img7.jpg", "Img7.JPG.png"}  # a case-insensitive store's view
            assert clashes["img7.jpg"] == clashes["Img7.JPG.png"]
            assert "DST/img7.jpg.png, where the kept source 'Img7.JPG.png'" in clashes["img7.jpg"]
            assert set(kept_clashes(buckets, "webp")) == {"img8.jpg", "img8.jpg.webp"}
