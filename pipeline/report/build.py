"""Build the report of an archive: order its manifest rows worst first (ranking.py), copy or
link their LR thumbnails, restore a crop of the worst ones, and write the pages (rendered by
html.py) a page's rows at a time.

Plain Python, no Ray. The gallery lists every row: lowest PSNR first, then images without PSNR
(archived without --verify), then error rows with their message. A local archive of more than
LINK_ABOVE images has its thumbnails linked to its own files instead of copied. The `worst`
first images also get one CROP x CROP window at their centre, restored by the model from only
the latent tiles that cover it, beside the same window of the source when the source is still
readable and unchanged (same SHA-256 as when archived).

rel_paths come from the manifest and are not trusted: files are written only for plain
relative paths (pipeline/format.py's check_rel_path); any other row is listed without files.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem

from pipeline.decode import decode_image
from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    KEPT,
    MANIFEST_DIR,
    Region,
    check_apart,
    decode_lr_png,
    encode_output,
    is_rel_path,
    lr_key,
)
from pipeline.job import Progress
from pipeline.manifest import merged, no_manifest
from pipeline.report import CROP, LINK_ABOVE, assets, html
from pipeline.report.ranking import Ranking
from pipeline.srgb import as_stated
from pipeline.stage import inference_model
from pipeline.storage import Location, read_recorded, write_atomic
from pipeline.summary import SUMMARY_COLUMNS
from tadm import TADM
from tadm.hub import default_model
from tadm.images import to_images, to_pixels, to_tensor

LOCAL = LocalFileSystem()  # OUT_DIR's
READ_THREADS = 16  # LR files read at once (S3 latency)
COPY_CHUNK = 256  # LR files read, then written, per step
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKER = ".tadm-report"  # in OUT_DIR: the folder is a report's (claim_out_dir)
# The manifest columns the pages, the crops and the totals (summarize) read.
REPORT_COLUMNS = [
    *SUMMARY_COLUMNS,
    "source_uri",
    "width",
    "height",
    "lr_width",
    "lr_height",
    "conversion",
    "kept_reason",
    "seconds",
    "timestep_mean",
]


@dataclass(frozen=True)
class Crop:
    region: Region  # x, y, w, h in HR pixels
    restored: str  # URL of the restored window, relative to OUT_DIR
    source: str | None  # URL of the source's window; None when the source is gone or changed


@dataclass
class Entry:
    """One gallery entry: a manifest row, its place, and the files the report has for it."""

    rank: int  # 1 is the worst
    row: dict[str, Any]
    thumbnail: str | None = None  # URL of the LR thumbnail, relative to OUT_DIR
    crop: Crop | None = None
    notes: list[str] = field(default_factory=list)  # why a file is not there

    @property
    def rel_path(self) -> str:
        return self.row["rel_path"] or ""

    @functools.cached_property
    def plain(self) -> bool:
        """The rel_path is a plain relative path (format.check_rel_path)."""
        return is_rel_path(self.rel_path)

    @property
    def kept(self) -> bool:
        """The row is of a source kept as it was (ranking.kept_sources)."""
        return self.row["status"] == KEPT or (self.row["status"] in DONE and self.has_copy)

    @property
    def has_copy(self) -> bool:
        return bool(self.row["kept_uri"])

    @property
    def has_lr(self) -> bool:
        """An LR file may be read and files written for this row."""
        return self.row["status"] in DONE and not self.has_copy and self.plain


@dataclass(frozen=True)
class Written:
    index: str  # path of OUT_DIR/index.html
    pages: int
    thumbnails: str  # "copied" or "linked"
    crops: int  # restored crops written


def entries_of(rows: list[dict[str, Any]], first_rank: int) -> list[Entry]:
    """The entries of the ranked `rows`, the first at `first_rank`."""
    entries = [Entry(rank, row) for rank, row in enumerate(rows, start=first_rank)]
    for entry in entries:
        if not entry.plain:
            entry.notes.append("rel_path is not a plain relative path: no files written for it")
    return entries


def url(path: str) -> str:
    """A relative path as a URL path ("#", "?", "%" and spaces escaped)."""
    return urllib.parse.quote(path)


def centre_window(width: int, height: int, side: int = CROP) -> Region:
    """The side x side window (smaller where the image is) at the centre of the image."""
    w, h = min(side, width), min(side, height)
    return Region((width - w) // 2, (height - h) // 2, w, h)


def write_file(out: str, rel: str, data: bytes) -> None:
    write_atomic(LOCAL, os.path.join(out, rel), data, root=out)


def read_files(archive: Location, paths: list[str]) -> list[bytes | OSError]:
    """The bytes of each path, or the OSError that reading it raised."""
    fs = archive.filesystem()

    def read(path: str) -> bytes | OSError:
        try:
            return fs.cat_file(path)
        except OSError as e:
            return e

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(read, paths))


def copy_thumbnails(entries: list[Entry], archive: Location, out: str, progress: Progress) -> None:
    """Copy each LR file to OUT_DIR/lr/<rel_path>.png, as the archive names it."""
    todo = [e for e in entries if e.has_lr]
    for start in range(0, len(todo), COPY_CHUNK):
        chunk = todo[start : start + COPY_CHUNK]
        keys = [lr_key(e.rel_path) for e in chunk]
        errors = 0
        for entry, key, data in zip(
            chunk, keys, read_files(archive, [archive.join(k) for k in keys]), strict=True
        ):
            try:
                if isinstance(data, OSError):
                    raise ValueError(f"cannot read {archive.uri_of(archive.path(key))}: {data}")
                if not data.startswith(PNG_SIGNATURE):
                    raise ValueError(f"{archive.uri_of(archive.path(key))} is not a PNG file")
                write_file(out, key, data)
                entry.thumbnail = url(key)
            except (ValueError, OSError) as e:
                errors += 1
                entry.notes.append(f"no thumbnail: {e}")
        progress.update(len(chunk), errors)


def link_thumbnails(entries: list[Entry], archive: Location, out: str) -> None:
    """Point each thumbnail at the local archive's own LR file, relative to OUT_DIR."""
    root = os.path.relpath(archive.root, out).replace(os.sep, "/")
    for entry in entries:
        if entry.has_lr:  # a plain relative path: it stays under the root
            entry.thumbnail = url(f"{root}/{lr_key(entry.rel_path)}")


class Models:
    """The model each LR file asks for: `ref` when given, else the shipped one for its scale;
    each loaded once. A default that does not load is an error of the rows that need it."""

    def __init__(self, ref: str | None, storage_options: dict[str, Any], device: torch.device):
        self.ref = ref
        self.storage_options = storage_options
        self.device = device
        self.loaded: dict[str, TADM | ValueError] = {}
        if ref is not None:  # a bad --model is a usage error: raise it now
            self.loaded[ref] = self.load(ref)

    def load(self, ref: str) -> TADM:
        return inference_model(ref, self.storage_options, self.device, None)

    def for_scale(self, scale: int) -> TADM:
        ref = self.ref or default_model(scale)
        if ref not in self.loaded:
            try:
                self.loaded[ref] = self.load(ref)
            except ValueError as e:
                self.loaded[ref] = e
        model = self.loaded[ref]
        if isinstance(model, ValueError):
            raise model
        return model


def restore_crop(
    entry: Entry, archive: Location, out: str, models: Models, storage_options: dict[str, Any]
) -> Crop:
    """Restore the centre window of one archived image and write it, with the source's same
    window where the source is unchanged; ValueError or OSError says why not."""
    data = archive.filesystem().cat_file(archive.join(lr_key(entry.rel_path)))
    lr, header = decode_lr_png(data)
    model = models.for_scale(header.scale)
    if header.model_id != model.model_id:
        raise ValueError(
            f"archived by model {header.model_id}, the report runs model {model.model_id}: "
            "give --model the model that archived it"
        )
    region = centre_window(header.width, header.height)
    with torch.inference_mode():
        x_hat = model.upscale(
            to_tensor([lr]).to(models.device), size=(header.height, header.width), region=region
        )  # (1, 3, h, w) in [0, 1]
    restored = crop_name(entry.rank, "restored")
    # Both crops in the colours the image states: its ICC profile, as its LR file holds it
    pixels, stated = as_stated(to_images(to_pixels(x_hat))[0], header.metadata)
    write_file(out, restored, encode_output(pixels, "png", stated))
    source = None
    try:
        window, _ = as_stated(source_window(entry.row, region, storage_options), header.metadata)
        source = crop_name(entry.rank, "source")
        write_file(out, source, encode_output(window, "png", stated))
    except ValueError as e:
        entry.notes.append(f"no source crop: {e}")
    return Crop(region, url(restored), source and url(source))


def source_window(
    row: dict[str, Any], region: Region, storage_options: dict[str, Any]
) -> np.ndarray:
    """The region of the source as archive decoded it; ValueError when it is gone or changed."""
    uri = row["source_uri"]
    if not uri:
        raise ValueError("the manifest has no source_uri")
    data = read_recorded(uri, row["source_bytes"], row["source_sha256"], storage_options)
    x, y, w, h = region
    return decode_image(data).pixels[y : y + h, x : x + w]


def crop_name(rank: int, kind: str) -> str:
    """The file of the entry at `rank`'s crop, "restored" or "source", under OUT_DIR."""
    return f"crops/{rank:06d}-{kind}.png"


def claim_out_dir(out: str, archive: Location) -> None:
    """Make `out` the folder of this report: a new or empty folder, or an earlier report's
    (its MARKER, or a report's index.html, stylesheet and script together), which
    then gets the marker before anything else is written: a report overwrites its pages and
    removes the pages and crops it no longer has, never a file of anyone else's. ValueError
    for a file, or a folder of other files."""
    try:
        os.makedirs(out, exist_ok=True)
        names = set(os.listdir(out))
    except OSError as e:
        raise ValueError(f"OUT_DIR {out!r} cannot be a folder ({e}): give a folder") from None
    earlier = MARKER in names or {"index.html", assets.STYLE_NAME, assets.SCRIPT_NAME} <= names
    if names and not earlier:
        shown = ", ".join(repr(name) for name in sorted(names)[:3])
        more = f" and {len(names) - 3:,} more" if len(names) > 3 else ""
        raise ValueError(
            f"OUT_DIR {out!r} holds files of no earlier report ({shown}{more}), which a report "
            "would overwrite or remove: give a new or empty folder, or an earlier report's"
        )
    write_file(out, MARKER, f"tadm report of {archive.uri}\n".encode())


def remove_earlier_files(out: str, pages: int, entries: list[Entry]) -> None:
    """Remove what an earlier report into `out` wrote that this one did not: pages past the
    last (a smaller --page-size, or more images, made more; they would still link to one
    another), and crops of ranks that have none now (a smaller --worst, a source gone)."""
    for name in os.listdir(out):
        number = re.fullmatch(r"page-([0-9]+)\.html", name)
        if number and int(number[1]) > pages:
            os.remove(os.path.join(out, name))
    crops = os.path.join(out, "crops")
    if not os.path.isdir(crops):
        return
    written = {crop_name(e.rank, "restored") for e in entries if e.crop}
    written |= {crop_name(e.rank, "source") for e in entries if e.crop and e.crop.source}
    for name in os.listdir(crops):
        path = f"crops/{name}"
        if re.fullmatch(r"[0-9]{6}-(restored|source)\.png", name) and path not in written:
            os.remove(os.path.join(out, path))


def restore_crops(
    entries: list[Entry], archive: Location, out: str, models: Models, opts: dict[str, Any]
) -> int:
    """Restore a crop of each entry that has an LR file; how many were written."""
    todo = [e for e in entries if e.has_lr]
    progress = Progress("report: restored crops", len(todo))
    written = 0
    for entry in todo:
        try:
            entry.crop = restore_crop(entry, archive, out, models, opts)
            written += 1
        except (ValueError, OSError) as e:
            entry.notes.append(f"no restored crop: {e}")
        progress.update(1, int(entry.crop is None))
    return written


def build_report(
    archive_uri: str,
    out_dir: str,
    *,
    worst: int,
    page_size: int,
    model: str | None,
    storage_options: dict[str, Any],
) -> Written:
    """Write the report of the archive at `archive_uri` into the local folder `out_dir`."""
    if worst < 0:
        raise ValueError(f"--worst {worst}: must be 0 or more")
    if page_size < 1:
        raise ValueError(f"--page-size {page_size}: must be 1 or more")
    if "://" in out_dir and not out_dir.startswith("file://"):
        raise ValueError(f"OUT_DIR {out_dir!r} must be a local folder (the report opens from disk)")
    archive = Location.parse(archive_uri, storage_options)
    parts = merged(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA, REPORT_COLUMNS)
    if parts is None:
        raise ValueError(no_manifest(archive))
    with parts:
        out_location = Location.parse(out_dir)
        check_apart(archive, out_location, "OUT_DIR")
        out = out_location.root
        claim_out_dir(out, archive)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        models = Models(model, storage_options, device)
        ranking = Ranking(parts)
    with ranking:
        return write_report(ranking, archive, out, models, worst, page_size, storage_options)


def write_report(
    ranking: Ranking,
    archive: Location,
    out: str,
    models: Models,
    worst: int,
    page_size: int,
    storage_options: dict[str, Any],
) -> Written:
    """Write the pages of the `ranking` of `archive`'s rows, with their files, into `out`."""
    n = ranking.n
    rows = ranking.rows()
    linked = archive.protocol == "file" and n > LINK_ABOVE

    # The worst first, with their crops; then the thumbnails, the worst's and page by page a
    # page's rows at a time. Each is done whole before the next: their progress lines do not
    # take turns, and the thumbnails' rate and ETA leave out the time of the crops.
    worst_entries = entries_of(list(itertools.islice(rows, worst)), 1)
    crops = restore_crops(worst_entries, archive, out, models, storage_options)
    # The thumbnails copied, or with linked ones (no file to copy), the entries of the pages
    thumbnails = Progress("report: thumbnails", ranking.lr_rows)
    pages_progress = Progress("report: pages", n)

    def add_thumbnails(entries: list[Entry]) -> None:
        if linked:
            link_thumbnails(entries, archive, out)
        else:
            copy_thumbnails(entries, archive, out, thumbnails)

    add_thumbnails(worst_entries)
    pages = max(1, -(-n // page_size))
    context = html.Context(
        archive=archive.uri,
        summary=ranking.summary,
        psnrs=ranking.psnrs,
        kept_psnrs=ranking.kept_psnrs,
        other_files=ranking.other_files,
        pages=pages,
        page_size=page_size,
        first=ranking.first,
        linked=linked,
        worst=min(worst, n),
    )
    write_file(out, assets.STYLE_NAME, assets.STYLE.encode())
    write_file(out, assets.SCRIPT_NAME, assets.SCRIPT.encode())
    for number in range(1, pages + 1):
        start = (number - 1) * page_size
        entries = worst_entries[start : start + page_size]
        if start + len(entries) < min(start + page_size, n):  # past the worst
            rest = start + len(entries)
            more = entries_of(list(itertools.islice(rows, start + page_size - rest)), rest + 1)
            add_thumbnails(more)
            entries += more
        write_file(out, html.page_name(number), html.page(context, number, entries).encode())
        if linked:
            pages_progress.update(len(entries), 0)
    remove_earlier_files(out, pages, worst_entries)
    return Written(
        index=os.path.join(out, "index.html"),
        pages=pages,
        thumbnails="linked" if linked else "copied",
        crops=crops,
    )
