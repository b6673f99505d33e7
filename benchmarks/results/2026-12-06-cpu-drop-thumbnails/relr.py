"""LR sizes with and without --drop-thumbnails, from one archive made without it.

The LR pixels do not depend on the metadata, so each LR PNG of ARCHIVE is encoded again with
the metadata `--drop-thumbnails` would leave (pipeline.decode.without_thumbnails): the sizes are
those the flag gives, without running the model twice. Usage: python relr.py ARCHIVE
"""

import dataclasses
import statistics
import sys
from pathlib import Path

from pipeline.decode import without_thumbnails
from pipeline.format import decode_lr_png, encode_lr_png

rows = []
for lr in sorted(Path(sys.argv[1], "lr").glob("*.png")):
    data = lr.read_bytes()
    pixels, header = decode_lr_png(data)
    assert len(encode_lr_png(pixels, header)) == len(data)  # the encoding is reproduced
    metadata, _ = without_thumbnails(header.metadata)
    dropped = encode_lr_png(pixels, dataclasses.replace(header, metadata=metadata))
    rows.append((lr.name.removesuffix(".png"), len(data), len(dropped)))
before, after = sum(r[1] for r in rows), sum(r[2] for r in rows)
saved = [(a - b) / a for _, a, b in rows]
print("| image | LR bytes | with --drop-thumbnails | less |")
print("| --- | --- | --- | --- |")
for name, a, b in rows:
    print(f"| {name} | {a:,} | {b:,} | {100 * (a - b) / a:.1f}% |")
print(f"| all {len(rows)} | {before:,} | {after:,} | {100 * (before - after) / before:.1f}% |")
print(f"\nper image: median {100 * statistics.median(saved):.1f}%, max {100 * max(saved):.1f}%")
