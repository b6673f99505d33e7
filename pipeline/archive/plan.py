"""The archive plan: every image under SRC -> DST/lr/<rel_path>.png + DST/manifest/, and the
sources kept as they are (quality floor, --keep-failed) -> DST/kept/<rel_path>.

Its graph, run by pipeline/job.py: the plan's blocks -> read_sources (I/O tasks) -> decode_batch
-> Downscale -> write_lr. The plan is columnar: the listing (or inventory) by bucket, joined
against the manifest and the files in DST one bucket at a time.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipeline.archive.config import ArchiveConfig
from pipeline.archive.downscale import Downscale
from pipeline.archive.read import read_sources
from pipeline.archive.write import write_lr
from pipeline.buckets import Buckets, fold
from pipeline.decode import MAX_PIXELS, decode_batch
from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    KEPT,
    KEPT_DIR,
    LR_DIR,
    MANIFEST_DIR,
    PERMANENT,
    TRANSPARENT_REASON,
    check_rel_path,
)
from pipeline.inventory import scan_inventory
from pipeline.job import Plan, Stages, output_table
from pipeline.manifest import conform, list_parts
from pipeline.resources import Resources
from pipeline.sources import (
    IMAGE_EXTENSIONS,
    LISTING_SCHEMA,
    NotImages,
    excluded_folder,
    rel_prefix,
    scan,
    unchanged,
    walk,
)
from pipeline.stage import load_model, model_location
from pipeline.storage import Location, s3_options
from pipeline.summary import LOSSES, plural
from tadm.config import SCALES
from tadm.hub import default_model

logger = logging.getLogger("tadm")


@dataclass(frozen=True)
class ArchiveJob(Plan):
    name: ClassVar[str] = "archive"
    schema: ClassVar[pa.Schema] = ARCHIVE_SCHEMA
    errors_hint: ClassVar[str] = "see `tadm inspect {dst} --errors`"
    losses_hint: ClassVar[str | None] = "see `tadm inspect {dst} --conversions`"

    config: ArchiveConfig
    src: Location
    scale: int
    sources: Buckets  # of LISTING_SCHEMA
    prefix: str  # stripped from a source path to give its rel_path

    @property
    def images(self) -> Buckets:
        return self.sources

    def settings(self, images: int) -> dict[str, Any]:
        return {
            "src": self.src.uri,
            "dst": self.dst.uri,
            "images": images,
            "model": f"{self.model_ref} (id {self.model_id}, x{self.scale})",
            "verify": self.config.verifies,
            "min_psnr": self.config.min_psnr,
            "min_ssim": self.config.min_ssim,
            "keep_failed": self.config.keep_failed,
            "drop_thumbnails": self.config.drop_thumbnails,
        } | ({"inventory": self.config.inventory} if self.config.inventory else {})

    def outputs(self) -> Iterator[pa.Table]:
        """The LR files under DST/lr/ ("lr") and the sources kept under DST/kept/ ("kept"),
        by the rel_path of their image."""
        for table in walk(self.dst.child(LR_DIR)):
            table = table.filter(pc.ends_with(table["rel_path"], ".png"))
            rel_paths = pc.utf8_slice_codeunits(table["rel_path"], 0, -len(".png"))
            yield output_table(rel_paths, table["size"], "lr")
        for table in walk(self.dst.child(KEPT_DIR)):
            yield output_table(table["rel_path"], table["size"], "kept")

    def temp_folders(self) -> list[Location]:
        """lr/, kept/ and manifest/: SRC may lie in DST, beside them."""
        return [self.dst.child(name) for name in (LR_DIR, KEPT_DIR, MANIFEST_DIR)]

    def output_rel_path(self, key: str) -> str | None:
        """A file under DST/kept/ may be the kept source of its rel_path; an LR's name ends
        in .png, a manifest part's is the job's own."""
        prefix = KEPT_DIR + "/"
        return key.removeprefix(prefix) if key.startswith(prefix) else None

    def split(
        self, images: pa.Table, done: pa.Table | None, outputs: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """Error rows for listing errors and for rel_paths that collide on a case-insensitive
        or normalising store; "skipped" rows of images an earlier run finished with this model
        and scale, from the same source (size, and ETag or else modification time), whose LR
        file is still there with the recorded size (with --verify, rows that have psnr); the
        rest to run."""
        images = first_of_each(images)
        errors = pc.coalesce(images["error"], path_errors(images["rel_path"]))
        images = images.set_column(images.column_names.index("error"), "error", errors)
        archived = None
        if done is not None:
            archived = done.filter(pc.is_in(done["status"], pa.array([*DONE, KEPT])))["rel_path"]
        images = images.append_column("error_", collisions(images, archived))
        failed = pc.or_(pc.is_valid(images["error"]), pc.is_valid(images["error_"]))
        errors = images.filter(failed)
        images = images.filter(pc.invert(failed)).drop_columns(["error_"])
        n = len(errors)
        error_rows = pa.table(
            {
                "source_uri": self.source_uris(errors["rel_path"]),
                "rel_path": errors["rel_path"],
                "status": pa.array(["error"] * n, pa.string()),
                "error": pc.coalesce(errors["error"], errors["error_"]),
                "error_kind": pa.array([PERMANENT] * n, pa.string()),
                "source_bytes": errors["size"],
                "scale": pa.array([self.scale] * n, pa.int64()),
                "model_id": pa.array([self.model_id] * n, pa.string()),
            }
        )
        error_rows = conform(error_rows, ARCHIVE_SCHEMA)
        if done is None or self.config.overwrite:
            return error_rows, graph_rows(images, outputs)
        self.refuse_other_sources(images, done)
        if not (self.config.retry_errors or self.config.keep_failed):
            # Found again, they are not this run's; but --keep-failed, which keeps every file,
            # cannot keep these either (a name no store holds, a link to a folder): its errors.
            error_rows = self.as_before(error_rows, done)
        settled = self.finished(images, done, outputs)
        todo = images.filter(pc.invert(pc.is_in(images["rel_path"], settled["rel_path"])))
        return pa.concat_tables([error_rows, settled]), graph_rows(todo, outputs)

    def refuse_other_sources(self, images: pa.Table, done: pa.Table) -> None:
        """ValueError when DST holds, at the rel_path of one of `images`, the output of another
        source's file (another SRC archived into this DST) that this one is not: archiving it
        would replace that image. The same file under another name of SRC (a moved folder,
        the same size and ETag or modification time) is not another's: finished() skips it."""
        rows = done.filter(pc.is_in(done["status"], pa.array([*DONE, KEPT])))
        at = pc.index_in(rows["rel_path"], value_set=images["rel_path"].combine_chunks())
        rows, at = rows.filter(pc.is_valid(at)), at.filter(pc.is_valid(at))
        listed = images.take(at)
        other = pc.and_(
            pc.not_equal(rows["source_uri"], self.source_uris(rows["rel_path"])),
            pc.invert(pc.fill_null(unchanged(listed, rows), False)),
        )
        clashing = rows.filter(pc.fill_null(other, False))
        if len(clashing):
            examples = ", ".join(
                f"{rel_path!r} (from {uri})"
                for rel_path, uri in zip(
                    clashing["rel_path"].to_pylist()[:3],
                    clashing["source_uri"].to_pylist()[:3],
                    strict=True,
                )
            )
            raise ValueError(
                f"DST {self.dst.uri!r} holds images of another SRC at paths where SRC "
                f"{self.src.uri!r} has other files: {examples}"
                f"{' and more' if len(clashing) > 3 else ''}; archiving SRC would replace them. "
                "Archive it into a DST of its own, or the folder above both SRCs into a new "
                "DST; if SRC is the other SRC moved and its files changed, --overwrite redoes it"
            )

    def as_before(self, error_rows: pa.Table, done: pa.Table) -> pa.Table:
        """`error_rows` with the written_at of an earlier run's row where that row is the same
        error: an earlier permanent failure found again, which is not this run's."""
        at = pc.index_in(error_rows["rel_path"], value_set=done["rel_path"].combine_chunks())
        same = pc.fill_null(
            pc.and_(
                pc.equal(pc.take(done["status"], at), "error"),
                pc.equal(pc.take(done["error"], at), error_rows["error"]),
            ),
            False,
        )
        written = pc.if_else(same, pc.take(done["written_at"], at), error_rows["written_at"])
        index = ARCHIVE_SCHEMA.get_field_index("written_at")
        return error_rows.set_column(index, "written_at", written)

    def finished(self, images: pa.Table, done: pa.Table, outputs: pa.Table) -> pa.Table:
        """The manifest rows of `images` an earlier run settled with this model and scale, from
        the same source: images it finished, as "skipped" rows, whose LR file (or kept source) is
        still there with the recorded size (with --verify or a quality floor, LR rows without
        psnr, or below the floor, or with transparent pixels dropped, don't count, nor, with a
        floor, kept rows that meet it: above_floor); and, unless --retry-errors, its permanent
        failures, as they were."""
        config = self.config
        finished = pc.is_in(done["status"], pa.array([*DONE, KEPT]))
        if not (config.retry_errors or config.keep_failed):  # --keep-failed keeps them now
            failed = pc.and_(
                pc.equal(done["status"], "error"), pc.equal(done["error_kind"], PERMANENT)
            )
            finished = pc.or_(finished, pc.fill_null(failed, False))
        rows = done.filter(
            pc.and_(
                pc.and_(finished, pc.equal(done["scale"], self.scale)),
                pc.equal(done["model_id"], self.model_id),
            )
        )
        # Hash lookups, not joins: rel_paths are unique in the listing and in each output kind.
        at = pc.index_in(rows["rel_path"], value_set=images["rel_path"].combine_chunks())
        rows, at = rows.filter(pc.is_valid(at)), at.filter(pc.is_valid(at))
        for name in ("size", "mtime", "etag"):
            rows = rows.append_column(name, pc.take(images[name], at))
        for kind in ("lr", "kept"):
            files = outputs.filter(pc.equal(outputs["kind"], kind))
            found = pc.index_in(rows["rel_path"], value_set=files["rel_path"].combine_chunks())
            rows = rows.append_column(f"{kind}_size", pc.take(files["size"], found))
        kept = pc.fill_null(pc.not_equal(rows["kept_uri"], ""), False)
        lr_good = pc.equal(rows["lr_bytes"], rows["lr_size"])
        if config.verify:
            lr_good = pc.and_kleene(lr_good, pc.is_valid(rows["psnr"]))
        for floor, column in ((config.min_psnr, "psnr"), (config.min_ssim, "ssim")):
            if floor is not None:
                lr_good = pc.and_kleene(lr_good, pc.greater_equal(rows[column], floor))
        if config.min_psnr is not None or config.min_ssim is not None:
            # Shrunk without a floor, transparent pixels and all: a floor keeps them now.
            dropped = pc.match_substring_regex(rows["conversion"], LOSSES["alpha dropped"])
            lr_good = pc.and_kleene(lr_good, pc.invert(pc.fill_null(dropped, False)))
        kept_good = pc.and_(
            pc.equal(rows["kept_size"], rows["source_bytes"]), pc.invert(self.above_floor(rows))
        )
        output_good = pc.if_else(kept, kept_good, pc.fill_null(lr_good, False))
        failed = pc.equal(rows["status"], "error")
        output_good = pc.or_(failed, pc.fill_null(output_good, False))
        keep = pc.and_(pc.fill_null(unchanged(rows, rows), False), output_good)
        rows = rows.filter(pc.fill_null(keep, False))
        failed = pc.equal(rows["status"], "error")
        rows = rows.set_column(
            ARCHIVE_SCHEMA.get_field_index("status"),
            "status",
            pc.if_else(failed, rows["status"], pa.scalar("skipped")),
        )
        rows = rows.set_column(
            ARCHIVE_SCHEMA.get_field_index("source_uri"),
            "source_uri",
            self.source_uris(rows["rel_path"]),
        )
        return conform(rows, ARCHIVE_SCHEMA)

    def above_floor(self, rows: pa.Table) -> pa.ChunkedArray:
        """Which kept rows an earlier, higher floor kept whose recorded psnr and ssim meet the
        floor given now: shrunk now, so a lower floor archives what it would have (not a row
        kept for its transparent pixels, which any floor keeps, nor one kept for another reason,
        which records no psnr). False for all without a floor."""
        config = self.config
        if config.min_psnr is None and config.min_ssim is None:
            return pa.chunked_array([pa.array([False] * len(rows), pa.bool_())])
        met = pc.is_valid(rows["psnr"])
        for floor, column in ((config.min_psnr, "psnr"), (config.min_ssim, "ssim")):
            if floor is not None:
                met = pc.and_(met, pc.greater_equal(rows[column], floor))
        reason = pc.fill_null(rows["kept_reason"], "")
        met = pc.and_(met, pc.invert(pc.starts_with(reason, TRANSPARENT_REASON)))
        return pc.fill_null(met, False)

    def source_uris(self, rel_paths: pa.ChunkedArray) -> pa.ChunkedArray:
        return pc.binary_join_element_wise(self.src.uri_of(self.prefix), rel_paths, "")

    def local_files(self) -> list[tuple[str, str, str]]:
        """The --model folder's file, and a local SRC's first image."""
        files = super().local_files()
        if self.src.protocol == "file":
            for k in range(self.sources.n):
                table = self.sources.bucket(k, self.sources.n)
                listed = table.filter(pc.is_null(table["error"]))["rel_path"]
                if len(listed):
                    files.append(("SRC", self.src.uri, self.prefix + listed[0].as_py()))
                    break
        return files

    def source(self, blocks: list[ray.ObjectRef], resources: Resources) -> ray.data.Dataset:
        return ray.data.from_arrow_refs(blocks).map_batches(
            read_sources,
            fn_kwargs={"src": self.src, "prefix": self.prefix},
            batch_size=self.config.batch_size,
            num_cpus=0,  # I/O: runs while the model actors hold every CPU
            compute=ray.data.TaskPoolStrategy(size=resources.io_tasks),
        )

    def stages(self) -> Stages:
        return Stages(
            read=decode_batch,
            read_kwargs={
                "prefix": self.prefix,
                "uri_prefix": self.src.uri_of(""),
                "scale": self.scale,
                "max_pixels": MAX_PIXELS,
                "drop_thumbnails": self.config.drop_thumbnails,
            },
            model=Downscale,
            model_kwargs={
                "model": self.model_ref,
                "storage_options": self.options,
                "verify": self.config.verify,
                "min_psnr": self.config.min_psnr,
                "min_ssim": self.config.min_ssim,
            },
            write=write_lr,
            write_kwargs={
                "dst": self.dst,
                "src": self.src,
                "prefix": self.prefix,
                "keep_failed": self.config.keep_failed,
            },
        )


def first_of_each(images: pa.Table) -> pa.Table:
    """One row per rel_path: an inventory of a versioned bucket lists every version."""
    if pc.count_distinct(images["rel_path"]).as_py() == len(images):
        return images
    index = pa.table({"rel_path": images["rel_path"], "i": np.arange(len(images))})
    first = index.group_by("rel_path", use_threads=False).aggregate([("i", "first")])
    return images.take(first["i_first"])


def graph_rows(images: pa.Table, outputs: pa.Table) -> pa.Table:
    """The columns read_sources takes: rel_path, size, mtime (microseconds), etag, and
    "outputs": the kinds of output DST holds for the image already ("lr", "kept", "lr kept" or
    ""), so that the write stage removes the one an image no longer has."""
    mtime = images["mtime"].cast(pa.int64())
    kinds = pa.array([""] * len(images), pa.string())
    for kind in ("lr", "kept"):
        files = outputs.filter(pc.equal(outputs["kind"], kind))["rel_path"]
        held = pc.is_in(images["rel_path"], value_set=files.combine_chunks())
        kinds = pc.if_else(held, pc.binary_join_element_wise(kinds, kind, " "), kinds)
    kinds = pc.utf8_trim_whitespace(kinds)
    return (
        images.select(["rel_path", "size", "etag"])
        .append_column("mtime", mtime)
        .append_column("outputs", kinds)
    )


# Anything check_rel_path might refuse: a leading "/", a backslash, a control character, an
# empty, "." or ".." segment. Only these rows are checked one by one.
ODD_PATH = r"^/|\\|[\x00-\x1f\x7f]|(^|/)\.{0,2}(/|$)"


def path_errors(rel_paths: pa.ChunkedArray) -> pa.Array:
    """check_rel_path's message for each rel_path it refuses, else null: such a path is an
    error row of the plan, never read (it could lead out of SRC)."""
    odd = pc.match_substring_regex(rel_paths, ODD_PATH)
    messages = [None] * len(rel_paths)
    for i in np.flatnonzero(odd.to_numpy(zero_copy_only=False)):
        try:
            check_rel_path(rel_paths[int(i)].as_py())
        except ValueError as e:
            messages[i] = f"{e}; rename it: under this name it can be neither archived nor kept"
    return pa.array(messages, pa.string())


def collisions(images: pa.Table, archived: pa.Array | None = None) -> pa.Array:
    """For each image, an error naming the others when its rel_path and theirs are one name to
    a case-insensitive or Unicode-normalising store (A.png and a.png; NFC and NFD forms);
    else null. Only rows without a listing error count. A name an earlier run archived (in
    `archived`) keeps its place: only the names that came after it are errors."""
    names = images.filter(pc.is_null(images["error"]))["rel_path"]
    keys = fold(names)
    if pc.count_distinct(keys).as_py() == len(keys):  # the usual case: nothing collides
        return pa.nulls(len(images), pa.string())
    groups = (
        pa.table({"key": keys, "rel_path": names})
        .group_by("key", use_threads=False)
        .aggregate([("rel_path", "list")])
    )
    clashing = groups.filter(pc.greater(pc.list_value_length(groups["rel_path_list"]), 1))
    message: dict[str, str] = {}
    before = set() if archived is None else set(archived.to_pylist())
    for paths in clashing["rel_path_list"].to_pylist():  # only the colliding names
        first = sorted(p for p in paths if p in before)
        for path in paths:
            if path in first:
                continue
            if first:
                message[path] = (
                    f"rel_path collides with {', '.join(map(repr, first))}, archived already, on "
                    "a case-insensitive or Unicode-normalising store (one LR file for both, or "
                    "kept copy): rename this one"
                )
                continue
            others = ", ".join(repr(p) for p in sorted(paths) if p != path)
            message[path] = (
                f"rel_path collides with {others} on a case-insensitive or Unicode-normalising "
                "store (one LR file for both, or kept copy): rename one"
            )
    if not message:
        return pa.nulls(len(images), pa.string())
    at = pc.index_in(images["rel_path"], value_set=pa.array(list(message), pa.string()))
    return pc.take(pa.array(list(message.values()), pa.string()), at)


# Columns only an archive manifest has, beside those every manifest has.
ARCHIVE_COLUMNS = {"rel_path", "status", "written_at", "lr_uri", "lr_sha256", "kept_uri", "scale"}


def archives_in(src: Location, prefix: str, manifests: dict[str, str]) -> list[str]:
    """The folders under SRC (rel_path with "/"; "" for SRC) that are archives: of those whose
    manifest/ holds a part file (`manifests`, with one part's rel_path), the ones whose part
    has the archive manifest's columns (a restore's DST has a manifest too)."""
    fs = src.filesystem()
    archives = []
    for folder, part in sorted(manifests.items()):
        try:
            with fs.open(prefix + part, "rb") as f:
                names = pq.read_schema(f).names
        except Exception:  # an unreadable part tells nothing: the folder's files are SRC's
            continue
        if set(names) >= ARCHIVE_COLUMNS:
            archives.append(folder)
    return archives


def without_archives(sources: Buckets, archives: list[str]) -> Buckets:
    """`sources` without the files in the lr/, kept/ and manifest/ folders of `archives`
    (rel_paths with "/"), bucket by bucket (`sources` is closed)."""
    folders = [f"{a}{name}/" for a in archives for name in (LR_DIR, KEPT_DIR, MANIFEST_DIR)]
    kept = Buckets(LISTING_SCHEMA)
    with sources:
        for k in range(sources.n):
            table = sources.bucket(k, sources.n)
            inside = pc.starts_with(table["rel_path"], folders[0])
            for folder in folders[1:]:
                inside = pc.or_(inside, pc.starts_with(table["rel_path"], folder))
            kept.add(table.filter(pc.invert(inside)))
    return kept


def source_buckets(
    src: Location,
    dst: Location,
    inventory: Location | None,
    every_file: bool = False,
    not_images: NotImages | None = None,
) -> tuple[Buckets, str]:
    """SRC's images (from its listing, or from `inventory`) by bucket, and their prefix; with
    `every_file`, files of any extension too; the files left out counted in `not_images`."""
    if inventory is None:
        pages, prefix = scan(src, exclude=dst, every_file=every_file, not_images=not_images)
    else:
        prefix = rel_prefix(src, single_file=False)
        excluded = excluded_folder(src, prefix, dst)
        pages = scan_inventory(inventory, src, prefix, excluded, every_file, not_images)
    return Buckets(LISTING_SCHEMA).extend(pages), prefix


def check_outside_archives(dst: Location) -> None:
    """ValueError when DST is or lies in the lr/, kept/ or manifest/ folder of an archive (a
    folder whose manifest/ holds parts of an archive manifest, or parts that do not read):
    its files would mix with that archive's, which records none of them. Only the folders
    above DST named so are looked at; a local DST with its symbolic links resolved."""
    root = os.path.realpath(dst.root) if dst.protocol == "file" else dst.root
    parts = root.split("/")
    for i in range(1, len(parts)):
        if parts[i] not in (LR_DIR, KEPT_DIR, MANIFEST_DIR):
            continue
        archive = Location(dst.protocol, "/".join(parts[:i]) or "/", dst.options)
        try:
            manifest = list_parts(archive.child(MANIFEST_DIR))
        except OSError:  # a folder that cannot be listed tells nothing; DST's own errors later
            continue
        if not manifest:
            continue
        try:
            with archive.filesystem().open(manifest[0], "rb") as f:
                names = pq.read_schema(f).names
        except Exception:  # a part that does not read may still be an archive's: refused
            names = ARCHIVE_COLUMNS
        if set(names) >= ARCHIVE_COLUMNS:
            raise ValueError(
                f"DST {dst.uri!r} lies in the {parts[i]}/ folder of archive {archive.uri!r}: "
                "its files would mix with that archive's, which records none of them; write "
                "the archive somewhere else"
            )


def prepare_archive(config: ArchiveConfig) -> ArchiveJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.scale is not None and config.scale not in SCALES:
        raise ValueError(f"--scale must be 16 or 32, got {config.scale}")
    config.check()
    if config.min_ssim is not None and not 0 < config.min_ssim <= 1:
        raise ValueError(f"--min-ssim must be in (0, 1], got {config.min_ssim}")
    if config.min_psnr is not None and not 0 < config.min_psnr < math.inf:
        raise ValueError(f"--min-psnr must be a positive number of dB, got {config.min_psnr}")
    src = Location.parse(config.src, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    if dst.within(src) and src.within(dst):  # the same folder, maybe through a symlink
        raise ValueError(f"DST {dst.uri!r} is SRC: write the archive somewhere else")
    for name in (LR_DIR, KEPT_DIR, MANIFEST_DIR):
        if src.within(dst.child(name)):
            raise ValueError(
                f"SRC {src.uri!r} lies in DST's {name}/ folder: the archive would take in its "
                "own files; archive from elsewhere"
            )
    check_outside_archives(dst)
    options = s3_options(config.storage_options)
    inventory = None
    if config.inventory is not None:
        inventory = Location.parse(config.inventory, config.storage_options)
    # The model first: a wrong one is said before a listing of millions of files.
    model_ref = model_location(config.model or default_model(config.scale or 16))
    model = load_model(model_ref, options)
    model_id, scale = model.model_id, model.scale
    del model
    if config.scale is not None and config.scale != scale:
        raise ValueError(f"--scale {config.scale} does not match model {model_ref!r} (x{scale})")
    not_images = NotImages()
    try:
        sources, prefix = source_buckets(src, dst, inventory, config.keep_failed, not_images)
    except OSError as e:
        where = f"--inventory {inventory.uri!r}" if inventory else f"SRC {src.uri!r}"
        raise ValueError(f"{where} cannot be read: {e}") from None
    except pa.ArrowInvalid as e:
        raise ValueError(f"--inventory {config.inventory!r} cannot be read: {e}") from None
    archives = archives_in(src, prefix, not_images.manifests)
    if archives:
        named = ", ".join(repr(a or "SRC itself") for a in archives[:3])
        named += ", ..." * (len(archives) > 3)
        # --keep-failed keeps every file: an earlier archive's kept/ may hold the only copies.
        if not config.keep_failed:
            sources = without_archives(sources, archives)
        logger.warning(
            "archive: SRC holds %s (%s): %s lr/, kept/ and manifest/ folders are %s",
            plural(len(archives), "other archive"),
            named,
            "its" if len(archives) == 1 else "their",
            "taken in as SRC's own files (--keep-failed)"
            if config.keep_failed
            else "not archived (--keep-failed takes them in)",
        )
    if not_images.count:  # a team that deletes SRC after archiving must know of these
        examples = ", ".join(repr(p) for p in not_images.examples)
        logger.warning(
            "archive: %s under SRC %s (%s%s) and %s not archived: "
            "--keep-failed keeps every file as it is",
            plural(not_images.count, "file"),
            "is hidden or not an image" if not_images.count == 1 else "are hidden or not images",
            examples,
            ", ..." if not_images.count > len(not_images.examples) else "",
            "is" if not_images.count == 1 else "are",
        )
    if not sources.rows:
        if inventory is None and src.protocol == "file" and not os.path.exists(src.root):
            raise ValueError(f"SRC {src.uri!r} does not exist")
        kinds = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        given = f" in --inventory {inventory.uri!r}" if inventory else ""
        raise ValueError(f"no input: no {kinds} images under SRC {src.uri!r}{given}")
    return ArchiveJob(
        config=config,
        dst=dst,
        options=options,
        model_ref=model_ref,
        model_id=model_id,
        src=src,
        scale=scale,
        sources=sources,
        prefix=prefix,
    )
