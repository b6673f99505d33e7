"""The restore plan: an archive's LR PNGs -> DST/<rel_path>.<format> + DST/manifest/, and its
kept sources -> DST/<rel_path>, byte for byte.

Which images: the archive manifest's ok, kept and skipped rows, or, when the archive has no
manifest, every PNG under ARCHIVE/lr/ (its text chunks carry everything a restore needs) and
every file under ARCHIVE/kept/, as a table by bucket (pipeline/buckets.py). Its graph, run by
pipeline/job.py: the plan's blocks -> read_lr_batch -> Upscale -> write_restored (kept files
pass the model by).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.buckets import Buckets, bucket_of, fold
from pipeline.format import (
    ARCHIVE_SCHEMA,
    DONE,
    KEPT,
    KEPT_DIR,
    LR_DIR,
    MANIFEST_DIR,
    OUTPUT_FORMATS,
    PERMANENT,
    RESTORE_SCHEMA,
    check_apart,
    decode_lr_png,
    is_rel_path,
    kept_key,
    lr_key,
    output_key,
)
from pipeline.job import Plan, Stages, output_table
from pipeline.lease import Lease, holder
from pipeline.manifest import latest, list_parts, merged_buckets
from pipeline.resources import Resources
from pipeline.restore.config import RestoreConfig
from pipeline.restore.read import read_lr_batch
from pipeline.restore.upscale import Upscale
from pipeline.restore.write import write_restored
from pipeline.rows import NO_TIME
from pipeline.sources import IMAGE_NAME, walk
from pipeline.srgb import SRGB_NOTE
from pipeline.stage import load_model, model_location
from pipeline.storage import (
    TEMP_NAME_BYTES,
    TEMP_PATH,
    Location,
    s3_options,
    temp_stem,
    temp_target,
)
from pipeline.summary import plural
from tadm.hub import default_model

logger = logging.getLogger("tadm")

# The images to restore: one row each.
ITEM_SCHEMA = pa.schema(
    [
        ("rel_path", pa.string()),
        ("lr_uri", pa.string()),  # ARCHIVE/lr/<rel_path>.png wherever the archive is; "" if kept
        ("source_uri", pa.string()),  # from the archive manifest, for psnr/ssim when unchanged
        ("scale", pa.int64()),  # from the archive manifest; null when restoring from files alone
        ("kept_uri", pa.string()),  # ARCHIVE/kept/<rel_path>, for a source kept as it was
        ("source_sha256", pa.string()),  # of the source (a kept one, or the psnr/ssim reference)
        ("source_bytes", pa.int64()),  # of the psnr/ssim reference: only a file this size is read
        # As listed when archived, for the output: microseconds since the epoch; NO_TIME: none
        ("source_mtime", pa.int64()),
        # From the archive manifest: the LR file read must have this size and SHA-256.
        ("lr_bytes", pa.int64()),
        ("lr_sha256", pa.string()),
        ("model_id", pa.string()),  # of the model that made the LR; null when not recorded
        # The archive row's conversion of an image it holds as an LR: what archiving did to
        # it (alpha dropped, 16-bit to 8-bit, metadata not carried); null for none
        ("archived", pa.string()),
    ]
)


@dataclass(frozen=True)
class RestoreJob(Plan):
    name: ClassVar[str] = "restore"
    schema: ClassVar[pa.Schema] = RESTORE_SCHEMA
    errors_hint: ClassVar[str] = "their rows in {manifest} say why"
    losses_hint: ClassVar[str | None] = "their rows' conversion in {manifest} says what"

    config: RestoreConfig
    archive: Location
    items: Buckets  # of ITEM_SCHEMA
    clashes: dict[str, str]  # rel_path -> why its output cannot be written (kept_clashes)

    @property
    def images(self) -> Buckets:
        return self.items

    def settings(self, images: int) -> dict[str, Any]:
        config = self.config
        return {
            "archive": self.archive.uri,
            "dst": self.dst.uri,
            "images": images,
            "only": config.only,
            "region": None if config.region is None else config.region.text,
            "format": config.image_format,
            "to_srgb": config.to_srgb,
            "model": f"{self.model_ref} (id {self.model_id})",
        }

    def outputs(self) -> Iterator[pa.Table]:
        """The files in DST, by the rel_path of the image each would be: "<rel_path>.<format>"
        is a restored image ("image"; of another --format: that format, "jpeg"), any file may
        be a kept source copied as is ("kept")."""
        for table in walk(self.dst):
            for image_format in OUTPUT_FORMATS:
                suffix = "." + image_format
                images = table.filter(pc.ends_with(table["rel_path"], suffix))
                names = pc.utf8_slice_codeunits(images["rel_path"], 0, -len(suffix))
                kind = "image" if image_format == self.config.image_format else image_format
                yield output_table(names, images["size"], kind)
            yield output_table(table["rel_path"], table["size"], "kept")

    def temp_folders(self) -> list[Location]:
        """DST, where images are restored at their rel_paths."""
        return [self.dst]

    def own_temps(self, keys: set[str], todo: pa.Table) -> set[str]:
        """The temporary files of manifest/, and of the outputs this run writes: those of
        `todo` at their keys now (keys_now), which the write replaces anyway. DST is a
        user's folder: a hidden file there named as a temporary one of another output (one
        skipped, of another --format, of no image) is left, as no write of this run is
        cut short there."""
        own = {key for key in keys if key.startswith(MANIFEST_DIR + "/")}
        stems: dict[tuple[str, str], list[str]] = {}  # (folder, temp_stem) -> temporary files
        for key in keys - own:
            folder, _, name = key.rpartition("/")
            stems.setdefault((folder, temp_target(name)), []).append(key)
        if not stems or not len(todo):
            return own
        # An output's temporary file holds its name's first TEMP_NAME_BYTES: the output's key
        # is its stem, or, when a long name was cut (maybe within a character), begins with it.
        exact, cut = set(), set()
        for folder, stem in stems:
            path = f"{folder}/{stem}" if folder else stem
            exact.add(path)
            if len(os.fsencode(stem)) > TEMP_NAME_BYTES - 4:
                cut.add(path)
        now = self.keys_now(todo)
        found = pc.is_in(now, value_set=pa.array(sorted(exact), pa.string()))
        for prefix in cut:
            found = pc.or_(found, pc.starts_with(now, prefix))
        for key in now.filter(found).to_pylist():
            folder, _, name = key.rpartition("/")
            own.update(stems.get((folder, temp_stem(name)), ()))
        return own

    def output_rel_path(self, key: str) -> str | None:
        """Any file may be a kept source given back at its rel_path."""
        return key

    def split(
        self, images: pa.Table, done: pa.Table | None, outputs: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """ "skipped" rows of the images an earlier restore into DST finished with this model,
        region, format and --to-srgb, from the LR (or kept source) the archive holds now, whose
        output is still there, and, unless --retry-errors, the rows of its permanent failures
        with this model and region, of that LR; the rest to run, with
        "clash" naming why an output cannot be written and "in_the_way" why it must not be
        ("" for none), and the earlier output to remove (with_earlier)."""
        todo = images.select(ITEM_SCHEMA.names)
        clashing = pa.array(list(self.clashes), pa.string())
        at = pc.index_in(todo["rel_path"], value_set=clashing)
        clash = pc.take(pa.array(list(self.clashes.values()), pa.string()), at)
        todo = todo.append_column("clash", pc.fill_null(clash, ""))  # read_lr_batch refuses
        # "" and -1 for unknown: a column of nothing but None would reach the stage as NaN.
        for name, unknown in (
            ("source_uri", ""),
            ("kept_uri", ""),
            ("source_sha256", ""),
            ("source_bytes", -1),
            ("lr_bytes", -1),
            ("lr_sha256", ""),
            ("model_id", ""),
        ):
            column = pc.fill_null(todo[name], unknown)
            todo = todo.set_column(todo.column_names.index(name), name, column)
        if self.config.overwrite:  # replaces any file in the way
            todo = self.with_earlier(todo, done, self.output_keys(outputs))
            todo = todo.append_column("in_the_way", blank(len(todo)))
            return RESTORE_SCHEMA.empty_table(), todo.append_column("replaces", blank(len(todo)))
        if done is None:
            files = self.output_keys(outputs)
            todo = self.with_earlier(todo, done, files)
            return RESTORE_SCHEMA.empty_table(), self.with_in_the_way(todo, done, files)
        config, dst = self.config, self.dst
        at = pc.index_in(done["rel_path"], value_set=images["rel_path"].combine_chunks())
        rows, at = done.filter(pc.is_valid(at)), at.filter(pc.is_valid(at))
        # A kept file restored whole is copied: at its rel_path, with no colour conversion.
        copied = pc.and_(pc.is_valid(pc.take(images["kept_uri"], at)), config.region is None)
        kind = pc.if_else(copied, "kept", "image")
        key = pc.if_else(
            copied,
            rows["rel_path"],
            pc.binary_join_element_wise(rows["rel_path"], "." + config.image_format, ""),
        )
        present = pa.concat_arrays(
            [
                pc.is_in(
                    rows["rel_path"].combine_chunks(),
                    value_set=outputs.filter(pc.equal(outputs["kind"], k))[
                        "rel_path"
                    ].combine_chunks(),
                )
                for k in ("image", "kept")
            ]
        )
        n = len(rows)
        present_image, present_kept = present.slice(0, n), present.slice(n)
        srgb = pc.fill_null(pc.match_substring_regex(rows["conversion"], SRGB_NOTE), False)
        region = "" if config.region is None else config.region.text
        # Restored from the file the archive holds now: the LR (kept source) of the SHA-256
        # recorded then is the one its manifest records now; where either is not known (an
        # archive read from files alone, a row written before restores recorded it), as if.
        now = pc.if_else(
            copied, pc.take(images["source_sha256"], at), pc.take(images["lr_sha256"], at)
        )
        then = pc.if_else(copied, rows["output_sha256"], rows["lr_sha256"])
        same = pc.fill_null(pc.equal(then, now), True)
        keep = [
            pc.is_in(rows["status"], pa.array([*DONE, KEPT])),
            pc.equal(rows["model_id"], self.model_id),
            pc.equal(pc.fill_null(rows["region"], ""), region),
            same,
            pc.equal(
                rows["output_uri"],
                pc.binary_join_element_wise(dst.uri_of(dst.root + "/"), key, ""),
            ),
            pc.if_else(pc.equal(kind, "kept"), present_kept, present_image),
            pc.or_(copied, pc.equal(srgb, config.to_srgb)),
            pc.invert(pc.is_in(rows["rel_path"], value_set=clashing)),  # one file for both
        ]
        mask = keep[0]
        for condition in keep[1:]:
            mask = pc.and_(mask, condition)
        if not config.retry_errors:
            failed = pc.and_(
                pc.and_(pc.equal(rows["status"], "error"), pc.equal(rows["error_kind"], PERMANENT)),
                pc.and_(pc.and_(keep[1], keep[2]), same),
            )
            mask = pc.or_(pc.fill_null(mask, False), pc.fill_null(failed, False))
        rows = rows.filter(pc.fill_null(mask, False))
        status = RESTORE_SCHEMA.get_field_index("status")
        failed = pc.equal(rows["status"], "error")
        rows = rows.set_column(
            status, "status", pc.if_else(failed, rows["status"], pa.scalar("skipped"))
        )
        todo = todo.filter(pc.invert(pc.is_in(todo["rel_path"], rows["rel_path"])))
        files = self.output_keys(outputs)
        return rows, self.with_in_the_way(self.with_earlier(todo, done, files), done, files)

    def keys_now(self, todo: pa.Table) -> pa.ChunkedArray:
        """The key in DST each image of `todo` is restored to now: a kept source given back
        whole is copied to its rel_path, anything else is <rel_path>.<format>."""
        copied = pc.and_(pc.not_equal(todo["kept_uri"], ""), self.config.region is None)
        suffix = "." + self.config.image_format
        rel_path = todo["rel_path"]
        return pc.if_else(copied, rel_path, pc.binary_join_element_wise(rel_path, suffix, ""))

    def with_in_the_way(self, todo: pa.Table, done: pa.Table | None, files: pa.Array) -> pa.Table:
        """`todo` with "in_the_way": why an image is not restored ("" for none) when a file is
        at its key in DST that no restore of it wrote (as its latest row records): a user's
        file, never replaced without --overwrite, unless it holds the bytes restored now (the
        write stage's leave_others): what a restore killed before recording it wrote. And
        "replaces": the SHA-256 a restore recorded of the file it wrote there ("" for none),
        which the write stage replaces only while the file still has it. A file a restore
        wrote whose row records no SHA-256 is in the way too: nothing tells an edit since.
        `files`: the keys in DST (output_keys)."""
        now = self.keys_now(todo)
        present = pc.is_in(now, value_set=files)
        held, unproven = present, pa.array([False] * len(todo))
        replaces = blank(len(todo))
        if done is not None:
            at = pc.index_in(todo["rel_path"], value_set=done["rel_path"].combine_chunks())
            root = self.dst.uri_of(self.dst.root + "/")
            wrote = pc.equal(
                pc.take(done["output_uri"], at), pc.binary_join_element_wise(root, now, "")
            )
            wrote = pc.fill_null(wrote, False)
            held = pc.and_(present, pc.invert(wrote))
            recorded = pc.take(done["output_sha256"], at)
            unproven = pc.and_(pc.and_(present, wrote), pc.is_null(recorded))
            replaces = pc.if_else(wrote, pc.fill_null(recorded, ""), "")
        message = pc.binary_join_element_wise(
            "DST/",
            now,
            " exists, no restore of this image into DST recorded it, and it is not what this "
            "restore gives: it is left as it is (--overwrite replaces it; or restore into "
            "another DST)",
            "",
        )
        untold = pc.binary_join_element_wise(
            "DST/",
            now,
            " was written by a restore whose row records no SHA-256 of it, so an edit since "
            "cannot be told, and it is not what this restore gives: it is left as it is "
            "(--overwrite replaces it)",
            "",
        )
        in_the_way = pc.if_else(held, message, pc.if_else(unproven, untold, ""))
        return todo.append_column("in_the_way", in_the_way).append_column("replaces", replaces)

    def with_earlier(self, todo: pa.Table, done: pa.Table | None, files: pa.Array) -> pa.Table:
        """`todo` with "earlier", the key in DST of the output an earlier restore gave each
        image, when this run writes it under another key, for the write stage to remove ("" for
        none): the copy of a source the archive kept then and holds as an LR now, the restored
        image of one it keeps now, or a restored image in another --format. With it
        "earlier_sha256", the SHA-256 it recorded of the file ("" for none), so that the write
        stage leaves a file changed since, or one it cannot tell. A key another image of the
        archive is restored to is left alone. `files`: the keys in DST (output_keys)."""
        n = len(todo)
        key, sha256 = blank(n), blank(n)
        if done is not None and n:
            root = self.dst.uri_of(self.dst.root + "/")
            at = pc.index_in(todo["rel_path"], value_set=done["rel_path"].combine_chunks())
            # A "skipped" row of a restore in between stands for the one that wrote the output.
            written_then = pc.is_in(pc.take(done["status"], at), pa.array([*DONE, KEPT]))
            uri = pc.take(done["output_uri"], at)
            under = pc.and_(written_then, pc.starts_with(uri, root))
            then = pc.if_else(under, pc.utf8_slice_codeunits(uri, len(root)), "")
            now = self.keys_now(todo)
            held = pc.is_in(then, value_set=files)
            found = pc.fill_null(pc.if_else(pc.and_(pc.not_equal(then, now), held), then, ""), "")
            candidates = pc.not_equal(found, "")
            if pc.any(candidates).as_py():
                taken = self.restored_to(found.filter(candidates).to_pylist())
                key = pc.if_else(pc.is_in(fold(found), pa.array(taken, pa.string())), "", found)
                recorded = pc.fill_null(pc.take(done["output_sha256"], at), "")
                sha256 = pc.if_else(pc.equal(key, ""), "", recorded)
        return todo.append_column("earlier", key).append_column("earlier_sha256", sha256)

    def output_keys(self, outputs: pa.Table) -> pa.Array:
        """The keys in DST of the files `outputs` lists (as `outputs` gives them)."""
        kind = outputs["kind"]
        suffix = pc.if_else(
            pc.equal(kind, "kept"),
            "",
            pc.binary_join_element_wise(
                ".", pc.if_else(pc.equal(kind, "image"), self.config.image_format, kind), ""
            ),
        )
        return pc.binary_join_element_wise(outputs["rel_path"], suffix, "").combine_chunks()

    def restored_to(self, keys: list[str]) -> list[str]:
        """The folded ones of `keys` (under DST) that an image of the archive is restored to:
        "a.png" is the copy of a kept source "a.png", or the image "a" restored as PNG."""
        suffix = "." + self.config.image_format
        # folded name of an item -> (the folded key it takes, whether as a kept source)
        wanted: dict[str, list[tuple[str, bool]]] = {}
        for key in fold(pa.array(keys, pa.string())).to_pylist():
            wanted.setdefault(key, []).append((key, True))
            if key.endswith(suffix):
                wanted.setdefault(key[: -len(suffix)], []).append((key, False))
        names = pa.array(list(wanted), pa.string())
        n, taken = self.items.n, []
        for k in sorted(set(bucket_of(names, n).tolist())):
            table = self.items.bucket(k, n)
            found = table.filter(pc.is_in(fold(table["rel_path"]), value_set=names))
            for name, kept in zip(
                fold(found["rel_path"]).to_pylist(),
                pc.is_valid(found["kept_uri"]).to_pylist(),
                strict=True,
            ):
                taken += [key for key, as_kept in wanted[name] if as_kept == kept]
        return taken

    def local_files(self) -> list[tuple[str, str, str]]:
        """The --model folder's file, and a local ARCHIVE's first LR file or kept source."""
        files = super().local_files()
        if self.archive.protocol == "file":
            for k in range(self.items.n):
                items = self.items.bucket(k, self.items.n).slice(0, 1).to_pylist()
                if items:
                    (item,) = items
                    key = (kept_key if item["kept_uri"] else lr_key)(item["rel_path"])
                    files.append(("ARCHIVE", self.archive.uri, self.archive.path(key)))
                    break
        return files

    def source(self, blocks: list[ray.ObjectRef], resources: Resources) -> ray.data.Dataset:
        return ray.data.from_arrow_refs(blocks)

    def stages(self) -> Stages:
        config = self.config
        return Stages(
            read=read_lr_batch,
            read_kwargs={
                "archive": self.archive,
                "model_id": self.model_id,
                "region": config.region,
                "options": self.options,
                "image_format": config.image_format,
                "to_srgb": config.to_srgb,
            },
            model=Upscale,
            model_kwargs={
                "model": self.model_ref,
                "storage_options": self.options,
                "region": config.region,
            },
            write=write_restored,
            write_kwargs={
                "dst": self.dst,
                "archive": self.archive,
                "image_format": config.image_format,
                "to_srgb": config.to_srgb,
            },
        )


def prepare_restore(config: RestoreConfig) -> RestoreJob:
    """Check the configuration and resolve it against storage and the model, without Ray;
    every problem is a ValueError naming it."""
    if config.image_format not in OUTPUT_FORMATS:
        raise ValueError(f"--format must be png, jpeg or webp, got {config.image_format!r}")
    config.check()
    archive = Location.parse(config.archive, config.storage_options)
    dst = Location.parse(config.dst, config.storage_options)
    check_apart(archive, dst, "DST")
    options = s3_options(config.storage_options)
    warn_if_written(archive)
    items = list_items(archive, config.only)
    model_ref = model_location(config.model or default_model(archive_scale(archive, items)))
    model_id = load_model(model_ref, options).model_id
    check_model(items, archive, model_ref, model_id)
    return RestoreJob(
        config=config,
        dst=dst,
        options=options,
        model_ref=model_ref,
        model_id=model_id,
        archive=archive,
        items=items,
        clashes={} if config.region else kept_clashes(items, config.image_format),
    )


def warn_if_written(archive: Location) -> None:
    """Warn when ARCHIVE holds the lease of a job that archives into it: running now, an image
    it archives again meanwhile is an error row (its LR is not the manifest's any more), which
    a re-run restores; stopped before it finished, the images it did not archive are not
    restored."""
    try:
        held = Lease(archive, "restore").read()
    except OSError:  # not readable to these credentials: the manifest's reading says so
        return
    if held and held.get("job") == "archive":
        logger.warning(
            "restore: ARCHIVE %s is held by %s, which runs now or stopped before it finished: "
            "what it archives meanwhile fails here and a re-run restores it; what it has not "
            "archived is not restored",
            archive.uri,
            holder(held),
        )


def check_model(items: Buckets, archive: Location, model_ref: str, model_id: str) -> None:
    """Refuse a model that made none of the LRs to restore, when the manifest names the models
    that did (a model restores only its own LRs: each image would be an error row); warn when
    it made only some."""
    made_by: Counter = Counter()
    for k in range(items.n):
        counts = items.bucket(k, items.n)["model_id"].drop_null().value_counts()
        made_by.update({c["values"]: c["counts"] for c in counts.to_pylist()})
    others = Counter({m: n for m, n in made_by.items() if m != model_id})
    if not others:
        return
    models = ", ".join(f"{m} ({plural(n, 'image')})" for m, n in others.most_common(3))
    models += f" and {len(others) - 3} more" if len(others) > 3 else ""
    if model_id not in made_by:
        raise ValueError(
            f"model {model_ref!r} (id {model_id}) made none of the LRs of ARCHIVE "
            f"{archive.uri!r}: they were made by {models}; pass --model with the model "
            "that archived them"
        )
    logger.warning(
        "restore: %s of the %d LRs to restore were made by other models than %r (id %s): "
        "%s; they will be error rows (restore them with --model and --only)",
        sum(others.values()),
        made_by.total(),
        model_ref,
        model_id,
        models,
    )


def kept_clashes(items: Buckets, image_format: str) -> dict[str, str]:
    """Why an image and a kept source cannot both be restored, by rel_path: the kept source
    "a.jpg.png" is copied to DST/a.jpg.png, where the image "a.jpg" is restored (names compared
    as a case-insensitive, normalising store does). Kept sources are few: their names are
    gathered bucket by bucket, then only the buckets of the images they could clash with are
    read again."""
    suffix = "." + image_format
    n = items.n
    stems: dict[str, str] = {}  # the folded rel_path of a clashing image -> the kept one
    for k in range(n):
        table = items.bucket(k, n)
        kept = table.filter(pc.is_valid(table["kept_uri"]))["rel_path"]
        for rel_path, key in zip(kept.to_pylist(), fold(kept).to_pylist(), strict=True):
            if key.endswith(suffix):
                stems[key[: -len(suffix)]] = rel_path
    clashes: dict[str, str] = {}
    keys = pa.array(list(stems), pa.string())
    for k in sorted(set(bucket_of(keys, n).tolist())):
        table = items.bucket(k, n)
        images = table.filter(pc.is_null(table["kept_uri"]))["rel_path"]
        for rel_path, key in zip(images.to_pylist(), fold(images).to_pylist(), strict=True):
            if key in stems:
                kept = stems[key]
                clashes[rel_path] = clash_message(rel_path, kept, image_format)
                clashes[kept] = clash_message(rel_path, kept, image_format)
    return clashes


def blank(n: int) -> pa.Array:
    """n empty strings: "no such value" in a string column that must not be all null."""
    return pa.array([""] * n, pa.string())


def clash_message(image: str, kept: str, image_format: str) -> str:
    return (
        f"the image {image!r} is restored to DST/{output_key(image, image_format)}, where the "
        f"kept source {kept!r} is copied as it is: restore one of them into another DST "
        "(--only)"
    )


def list_items(archive: Location, only: str | None) -> Buckets:
    """The images to restore, from the archive manifest or else from ARCHIVE/lr/*.png and
    ARCHIVE/kept/, by bucket."""
    recorded = 0  # images the manifest has rows of, restorable or not
    try:
        if list_parts(archive.child(MANIFEST_DIR)):
            items, recorded = recorded_items(archive, only)
        else:
            items = Buckets(ITEM_SCHEMA)
            items.extend(lr_items(archive, t, only) for t in walk(archive.child(LR_DIR)))
            items.extend(kept_items(archive, t, only) for t in walk(archive.child(KEPT_DIR)))
    except OSError as e:
        raise ValueError(f"ARCHIVE {archive.uri!r} cannot be read: {e}") from None
    if not items.rows:
        if recorded:
            what = "the image" if recorded == 1 else f"none of the {recorded} images"
            was = "was not" if recorded == 1 else "was"
            raise ValueError(
                f"no input: {what} in the manifest of ARCHIVE {archive.uri!r} {was} archived "
                f"(`tadm inspect {archive.uri} --errors` says why)"
            )
        if only is not None and list_items_any(archive):
            raise ValueError(f"no input: --only {only!r} matches none of the images")
        raise ValueError(not_an_archive(archive))
    return items


def recorded_items(archive: Location, only: str | None) -> tuple[Buckets, int]:
    """The items of the archive manifest's rows (manifest_items), by bucket, and how many
    images it has rows of, restorable or not."""
    items, recorded = Buckets(ITEM_SCHEMA), 0
    try:
        with merged_buckets(archive.child(MANIFEST_DIR), ARCHIVE_SCHEMA) as rows:
            for k in range(rows.n):
                bucket = matching(latest(rows.bucket(k, rows.n)), only)
                recorded += len(bucket)
                items.add(manifest_items(archive, bucket))
    except BaseException:
        items.close()  # its spilled buckets
        raise
    return items, recorded


def not_an_archive(archive: Location) -> str:
    """Why ARCHIVE, with no manifest rows and no LR PNGs, has nothing to restore: it does not
    exist, or it is no archive (the archive's own lr/, kept/ or manifest/ folder given, maybe),
    or it is an archive with nothing in it."""
    fs = archive.filesystem()
    if not fs.exists(archive.root):
        return f"ARCHIVE {archive.uri!r} does not exist"
    if fs.isfile(archive.root):
        return f"ARCHIVE {archive.uri!r} is a file: give the archive's folder"
    folders = (LR_DIR, KEPT_DIR, MANIFEST_DIR)
    if not any(fs.isdir(archive.child(name).root) for name in folders):
        name = posixpath.basename(archive.root.rstrip("/"))
        hint = "give the folder that holds them"
        if name in folders:
            hint = f"this is an archive's {name}/ folder: give the folder above it"
        return f"ARCHIVE {archive.uri!r} is not an archive: it has no lr/ or manifest/ ({hint})"
    return f"no input: ARCHIVE {archive.uri!r} has no manifest rows and no LR PNGs"


def list_items_any(archive: Location) -> bool:
    """Whether the archive has any image to restore, without --only."""
    try:
        with list_items(archive, None) as items:
            return items.rows > 0
    except ValueError:
        return False


def matching(table: pa.Table, only: str | None) -> pa.Table:
    """The rows whose rel_path matches the --only pattern (fnmatch; "*" also matches "/")."""
    if only is None:
        return table
    hits = [fnmatch.fnmatchcase(p, only) for p in table["rel_path"].to_pylist()]
    return table.filter(pa.array(hits, pa.bool_()))


def manifest_items(archive: Location, rows: pa.Table) -> pa.Table:
    """The items of archive manifest rows: their LR files, or their kept sources; and the LR
    or kept source an error row records (of a source that fails now, archived or kept by an
    earlier run)."""
    recorded = pc.or_(pc.is_valid(rows["lr_sha256"]), pc.is_valid(rows["kept_uri"]))
    earlier = pc.and_(pc.equal(rows["status"], "error"), recorded)
    done = pc.is_in(rows["status"], pa.array([*DONE, KEPT]))
    rows = rows.filter(pc.or_(done, pc.fill_null(earlier, False)))
    kept = pc.is_valid(rows["kept_uri"])
    archived = pc.and_(pc.invert(kept), pc.not_equal(rows["status"], "error"))
    # An error row's kept copy may be an earlier version: its SHA-256 is recorded, its size
    # and modification time (the copy's own, given back with it) are not the source's.
    failed = pc.equal(rows["status"], "error")
    return pa.table(
        {
            "rel_path": rows["rel_path"],
            "lr_uri": pc.if_else(kept, "", uris(archive, LR_DIR, rows["rel_path"], ".png")),
            "source_uri": rows["source_uri"],
            "scale": rows["scale"],
            "kept_uri": pc.if_else(kept, uris(archive, KEPT_DIR, rows["rel_path"], ""), None),
            "source_sha256": rows["source_sha256"],
            "source_bytes": pc.if_else(failed, None, rows["source_bytes"]),
            "source_mtime": pc.if_else(
                failed, NO_TIME, pc.fill_null(rows["source_mtime"].cast(pa.int64()), NO_TIME)
            ),
            "lr_bytes": pc.if_else(kept, None, rows["lr_bytes"]),
            "lr_sha256": pc.if_else(kept, None, rows["lr_sha256"]),
            "model_id": pc.if_else(kept, None, rows["model_id"]),
            "archived": pc.if_else(archived, rows["conversion"], None),
        },
        schema=ITEM_SCHEMA,
    )


def lr_items(archive: Location, listing: pa.Table, only: str | None) -> pa.Table:
    """LR PNGs listed under ARCHIVE/lr/ (named <rel_path>.png, rel_path an image name)."""
    names = listing["rel_path"]
    image_png = r"(^|/)[^./][^/]*" + IMAGE_NAME.removesuffix(r"\z") + r"\.png\z"
    keep = pc.match_substring_regex(names, image_png, ignore_case=True)
    rel_paths = pc.utf8_slice_codeunits(names.filter(keep), 0, -len(".png"))
    table = matching(pa.table({"rel_path": rel_paths}), only)
    return items_table(table["rel_path"], uris(archive, LR_DIR, table["rel_path"], ".png"), None)


def kept_items(archive: Location, listing: pa.Table, only: str | None) -> pa.Table:
    """Sources kept under ARCHIVE/kept/, hidden ones too. Those named as the temporary files
    of writes (TEMP_PATH) are among them, with a warning: with no manifest, nothing tells a
    hidden source kept so from what an archive stopped mid-write left."""
    table = matching(listing.select(["rel_path"]), only)
    names = table["rel_path"]
    temporary = names.filter(pc.match_substring_regex(names, TEMP_PATH))
    if len(temporary):
        logger.warning(
            "restore: %s in ARCHIVE/kept/ named as the temporary file of a write (%r): with "
            "no archive manifest to tell a hidden source kept as it is from what an archive "
            "stopped mid-write left, restored as kept sources; delete from DST those that "
            "are no source of yours",
            plural(len(temporary), "file"),
            temporary[0].as_py(),
        )
    return items_table(names, None, uris(archive, KEPT_DIR, names, ""))


def items_table(rel_paths: pa.ChunkedArray, lr: Any, kept: Any) -> pa.Table:
    """Items read from files alone: an LR PNG (`lr`) or a kept source (`kept`)."""
    n = len(rel_paths)
    strings = pa.nulls(n, pa.string())
    return pa.table(
        {
            "rel_path": rel_paths,
            "lr_uri": pa.array([""] * n, pa.string()) if lr is None else lr,
            "source_uri": strings,
            "scale": pa.nulls(n, pa.int64()),
            "kept_uri": strings if kept is None else kept,
            "source_sha256": strings,
            "source_bytes": pa.nulls(n, pa.int64()),
            "source_mtime": pa.array([NO_TIME] * n, pa.int64()),
            "lr_bytes": pa.nulls(n, pa.int64()),
            "lr_sha256": strings,
            "model_id": strings,
            "archived": strings,
        },
        schema=ITEM_SCHEMA,
    )


def uris(archive: Location, folder: str, rel_paths: pa.ChunkedArray, suffix: str) -> Any:
    """ARCHIVE/<folder>/<rel_path><suffix> of each rel_path, as URIs."""
    root = archive.uri_of(archive.path(folder) + "/")
    return pc.binary_join_element_wise(root, rel_paths, suffix, "")


def archive_scale(archive: Location, items: Buckets) -> int:
    """The scale the default model must have: the manifest's, or the first LR PNG's (16
    when every item is a kept source, which needs no model)."""
    scales: set[int] = set()
    first, any_lr = None, False
    for k in range(items.n):
        bucket = items.bucket(k, items.n)
        scales.update(s for s in pc.unique(bucket["scale"]).to_pylist() if s is not None)
        if first is None:  # the first LR item whose rel_path can be read
            lr = bucket.filter(pc.not_equal(bucket["lr_uri"], ""))["rel_path"].to_pylist()
            first = next((rel_path for rel_path in lr if is_rel_path(rel_path)), None)
            any_lr = any_lr or bool(lr)
    if len(scales) > 1:
        raise ValueError(f"the archive mixes scales {sorted(scales)}: pass --model")
    if scales:
        return scales.pop()
    if first is None:
        if any_lr:
            raise ValueError("no LR file of the archive has a path that can be read: pass --model")
        return 16
    path = archive.join(lr_key(first))
    try:
        return decode_lr_png(archive.filesystem().cat_file(path))[1].scale
    except (OSError, ValueError) as e:
        raise ValueError(f"{archive.uri_of(path)}: {e}; pass --model") from None
