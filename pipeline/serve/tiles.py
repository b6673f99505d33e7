"""The tile service behind `tadm serve`: one HR region of one archived image, on demand.

A region is restored from only the latent tiles that cover it (TADM.upscale with region=...,
paper Algorithm 1), so its cost follows the region, not the image. A view no larger than the
LR's resolution of its region (View.from_lr, IIIF thumbnails and zoomed-out tiles) is made from
the LR pixels instead, with no model call. Plain Python, no Ray: the Serve deployment
(pipeline/serve/app.py) calls `TileService.tile` and `TileService.view` from its request
threads.

Requests name an image by its rel_path; its LR file is ARCHIVE/lr/<rel_path>.png. A rel_path
is checked twice before anything is read: as text, by the archive format's one rule
(pipeline/format.py check_rel_path), and, on a local archive, by resolving symlinks and
checking the result still lies under ARCHIVE/lr/. The file read must be the one the archive
manifest records (RecordedLr), where the archive has one.
"""

from __future__ import annotations

import atexit
import errno
import logging
import math
import os
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from pipeline.buckets import Buckets, bucket_of
from pipeline.format import (
    LR_DIR,
    MANIFEST_DIR,
    LrHeader,
    Region,
    TooManyPixels,
    check_rel_path,
    decode_lr_png,
    encode_output,
    is_rel_path,
    lr_key,
)
from pipeline.lease import Lease, running
from pipeline.manifest import list_parts
from pipeline.metadata import Metadata
from pipeline.restore.plan import list_items, recorded_items
from pipeline.restore.read import check_recorded
from pipeline.serve.cache import LRUCache
from pipeline.srgb import as_stated
from pipeline.stage import inference_model
from pipeline.storage import Location
from tadm.images import to_images, to_pixels, to_tensor

logger = logging.getLogger("tadm")  # where the archive is goes here, not in error bodies
REGION_KEYS = ("x", "y", "w", "h")
MAX_DIGITS = 9  # coordinates of up to 999,999,999 px; longer numbers are refused as text
MAX_REL_PATH = 1024  # characters
# Read errors that say the image is not there (404), not that storage failed (503): a folder
# named in the path is a file, or a name is longer than the filesystem holds.
NO_SUCH_NAME = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG}


class TileError(Exception):
    """A request that cannot be answered with a tile: the HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class View:
    """What to make of an HR region: resized to `size`, mirrored, rotated, encoded."""

    region: Region
    size: tuple[int, int] | None = None  # (width, height) to resize to; None: the region's
    mirror: bool = False  # flip left to right first
    rotation: int = 0  # then turn clockwise by 0, 90, 180 or 270 degrees
    image_format: str = "png"  # one of OUTPUT_FORMATS
    from_lr: bool = False  # made from the LR pixels (size at most the LR's of the region)

    def finish(self, pixels: np.ndarray, colour: Metadata | None = None) -> bytes:
        """The region's (h, w, 3) uint8 pixels -> the encoded image this view asks for, in the
        colours its image's metadata `colour` states (encode)."""
        if self.size is not None and self.size != (self.region.w, self.region.h):
            resized = Image.fromarray(pixels).resize(self.size, Image.Resampling.LANCZOS)
            pixels = np.asarray(resized)
        return self.encode(pixels, colour)

    def encode(self, pixels: np.ndarray, colour: Metadata | None = None) -> bytes:
        """(h, w, 3) uint8 pixels of the view's size -> mirrored, rotated, encoded, so that a
        browser shows the colours of the image: with its ICC profile, or else converted to sRGB
        as its PNG gAMA and cHRM say (a JPEG or WebP has no place for those)."""
        if self.mirror:
            pixels = pixels[:, ::-1]
        pixels = np.ascontiguousarray(np.rot90(pixels, k=-self.rotation // 90))
        pixels, stated = as_stated(pixels, colour or Metadata())
        return encode_output(pixels, self.image_format, stated)


@dataclass(frozen=True)
class RenderedTile:
    """The answer to a tile request, and how it was made."""

    data: bytes  # the encoded image: PNG unless its View asked for another format
    tiles_run: int  # latent tiles the model ran for it (Algorithm 1); 0 when from_lr
    tiles_total: int  # latent tiles of the whole image; 0 when from_lr
    timestep_mean: float  # mean TPM time step over the tiles run; NaN when from_lr
    cached: bool  # served from the tile cache
    from_lr: bool = False  # made from the LR pixels, no model call


def parse_region(params: Sequence[tuple[str, str]]) -> Region:
    """Query parameters x, y, w, h (each once, decimal digits only) -> Region."""
    given: dict[str, str] = {}
    for key, value in params:
        if key not in REGION_KEYS:
            raise TileError(400, f"unknown query parameter {key!r}: a tile takes x, y, w, h")
        if key in given:
            raise TileError(400, f"query parameter {key!r} is given more than once")
        given[key] = value
    missing = [key for key in REGION_KEYS if key not in given]
    if missing:
        raise TileError(400, f"missing query parameter(s) {', '.join(missing)}: need x, y, w, h")
    values = []
    for key in REGION_KEYS:
        text = given[key]
        if not (text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS):
            raise TileError(400, f"query parameter {key}={text!r} is not a non-negative integer")
        values.append(int(text))
    try:
        return Region(*values)
    except ValueError as e:
        raise TileError(400, str(e)) from None


def request_rel_path(rel_path: str) -> str:
    """`rel_path` itself if check_rel_path takes it and it is at most MAX_REL_PATH long, else
    TileError 400."""
    if len(rel_path) > MAX_REL_PATH:
        raise TileError(400, f"path {rel_path[:200]!r} is over {MAX_REL_PATH} characters")
    try:
        return check_rel_path(rel_path)
    except ValueError as e:
        raise TileError(400, str(e)) from None


class RecordedLr:
    """What an archive's manifest records of its LR files (recorded_items): each LR file read
    must be one it records, and the image list is its rel_paths. Read once, and again when
    the manifest's parts have changed (a job wrote rows) and the image list is asked for or
    a file is not as it records: a large manifest is not read at each request."""

    def __init__(self, archive: Location) -> None:
        self.archive = archive
        self.parts: list[str] | None = None  # those read; None: not read yet
        self.items: Buckets | None = None  # None: no manifest
        self.listed: list[str] | None = None  # rel_paths, sorted, once asked for
        self.lock = threading.Lock()
        atexit.register(self.close)  # a large manifest's buckets spill to local files

    def current(self, again: bool) -> Buckets | None:
        """The items of the manifest, None when the archive has none; read `again` if its
        parts changed (always while it has none). Under the lock; OSError or ValueError
        when it cannot be read."""
        if self.parts is None or again or self.items is None:
            parts = list_parts(self.archive.child(MANIFEST_DIR))
            if parts != self.parts:
                self.close()
                self.items = recorded_items(self.archive, None)[0] if parts else None
                self.parts = parts
        return self.items

    def check(self, rel_path: str, data: bytes) -> None:
        """TileError unless `data` is rel_path's LR file as the manifest records it (its size
        and SHA-256, check_recorded): 404 when no row records an LR file of it, 500 when it
        changed since, 503 when the manifest cannot be read. An archive with no manifest
        (of LR files alone) has nothing to check by."""
        problem = self.problem(rel_path, data, again=False)
        if problem is not None:  # a job may have written it since the manifest was read
            problem = self.problem(rel_path, data, again=True)
        if problem is not None and problem.status == 500 and self.written():
            raise TileError(503, f"image {rel_path!r} is being archived again: retry")
        if problem is not None:
            raise problem

    def unknown(self, rel_path: str) -> TileError:
        """The 404 for rel_path, which has no LR file: one that says so of a source the
        manifest records as kept as it is (its rows read again, a job may have written it)."""
        try:
            with self.lock:
                items = self.current(again=True)
                if items is None:
                    return not_served(rel_path, kept=False)
                n = items.n
                bucket = items.bucket(int(bucket_of(pa.array([rel_path]), n)[0]), n)
        except (OSError, ValueError) as e:
            raise unreadable(self.archive, "cannot read the archive's manifest", e) from None
        named = bucket.filter(pc.equal(bucket["rel_path"], rel_path))
        return not_served(rel_path, kept=bool(pc.any(pc.is_valid(named["kept_uri"])).as_py()))

    def written(self) -> bool:
        """Whether a job runs in the archive (its lease has a recent heartbeat, of a process
        not gone): it may have written an LR file whose row is not in the manifest yet."""
        try:
            held = Lease(self.archive, "serve").read()
        except OSError:
            return False
        return held is not None and running(held)

    def problem(self, rel_path: str, data: bytes, again: bool) -> TileError | None:
        """What `check` raises, None for nothing; the manifest read `again` (current)."""
        try:
            with self.lock:
                items = self.current(again)
                if items is None:
                    return None
                n = items.n
                bucket = items.bucket(int(bucket_of(pa.array([rel_path]), n)[0]), n)
        except (OSError, ValueError) as e:
            raise unreadable(self.archive, "cannot read the archive's manifest", e) from None
        named = bucket.filter(pc.equal(bucket["rel_path"], rel_path))
        rows = named.filter(pc.not_equal(named["lr_uri"], ""))
        rows = rows.select(["lr_uri", "lr_bytes", "lr_sha256"]).to_pylist()
        if not rows:
            return not_served(rel_path, kept=bool(pc.any(pc.is_valid(named["kept_uri"])).as_py()))
        unknown = {"lr_bytes": -1, "lr_sha256": ""}  # an old row's, recorded by size or not
        row = rows[0] | {name: value for name, value in unknown.items() if rows[0][name] is None}
        try:
            check_recorded(data, row)
        except ValueError as e:
            logger.error("serve: %s", e)
            return TileError(
                500,
                f"image {rel_path!r}: its LR file changed since it was archived: "
                "`tadm inspect ARCHIVE --check` names what changed",
            )
        return None

    def images(self) -> list[str] | None:
        """The rel_paths of the LR files the manifest records, sorted; None when the archive
        has no manifest; TileError 503 when it cannot be read."""
        try:
            with self.lock:
                items = self.current(again=True)
                if items is not None and self.listed is None:
                    self.listed = sorted(
                        rel_path
                        for k in range(items.n)
                        for rel_path in lr_rel_paths(items.bucket(k, items.n))
                    )
                return None if items is None else self.listed
        except (OSError, ValueError) as e:
            raise unreadable(self.archive, "cannot list the archive's images", e) from None

    def close(self) -> None:
        self.listed = None
        if self.items is not None:
            self.items.close()
            self.items = None


def not_served(rel_path: str, kept: bool) -> TileError:
    """The 404 for an image the archive holds no LR of: of a source kept as it is (`kept`),
    which a restore gives back, or of no image at all."""
    if kept:
        return TileError(
            404,
            f"image {rel_path!r} is kept as it is under kept/, with no LR to serve: "
            f"`tadm restore ARCHIVE DST --only '{rel_path}'` gives it back",
        )
    return TileError(404, f"no image {rel_path!r} in this archive")


def unreadable(archive: Location, what: str, e: Exception) -> TileError:
    """TileError 503 saying `what` failed, and why, with ARCHIVE for where the archive is
    (the log has that)."""
    logger.error("serve: %s %s: %s", what, archive.uri, e)
    uri = archive.uri
    message = str(e).replace(f"ARCHIVE {uri!r}", "ARCHIVE").replace(uri, "ARCHIVE")
    return TileError(503, f"{what}: {message}")


class ImageLatents:
    """One LR file version's view of the shared latent LRU cache (tadm.model.LatentStore)."""

    def __init__(self, cache: LRUCache[tuple[torch.Tensor, torch.Tensor]], version: Hashable):
        self.cache = cache
        self.version = version

    def get(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.cache.get((self.version, key))

    def __setitem__(self, key: tuple[int, int], value: tuple[torch.Tensor, torch.Tensor]) -> None:
        z0_hat, t = value
        size = z0_hat.numel() * z0_hat.element_size() + t.numel() * t.element_size()
        self.cache.put((self.version, key), value, size)


class TileService:
    """Tiles of one archive with one model; thread-safe.

    Args:
        archive: archive root URI (local path, file://..., s3://...).
        model: TADM reference for load_model: shipped name, folder or URI.
        storage_options: s3fs options (resolved in the driver).
        max_region_pixels: larger regions (w * h) are refused with 413.
        cache_bytes: budget of each LRU cache: decoded LR images, enhanced latent tiles
            (z0_hat, so a region overlapping earlier ones only decodes again), rendered tiles.
        device: where the model runs.
        precision: what the model runs in; None: the device's default (fp16 on CUDA, else fp32).
    """

    def __init__(
        self,
        archive: str,
        model: str,
        storage_options: dict[str, Any],
        max_region_pixels: int,
        cache_bytes: int,
        device: torch.device,
        precision: str | None = None,
    ) -> None:
        self.archive = Location.parse(archive, storage_options)
        self.fs = self.archive.filesystem()
        self.lr_root = self.archive.path(LR_DIR)
        local = self.archive.protocol == "file"
        self.real_lr_root = os.path.realpath(self.lr_root) if local else None
        self.recorded = RecordedLr(self.archive)
        self.device = device
        self.model = inference_model(model, storage_options, device, precision)
        self.model_id = self.model.model_id
        self.max_region_pixels = max_region_pixels
        self.lr_cache: LRUCache[tuple[torch.Tensor, LrHeader]] = LRUCache(cache_bytes)
        self.latent_cache: LRUCache[tuple[torch.Tensor, torch.Tensor]] = LRUCache(cache_bytes)
        self.tile_cache: LRUCache[RenderedTile] = LRUCache(cache_bytes)
        self.model_lock = threading.Lock()  # one model call at a time: it uses every core

    def tile(self, rel_path: str, params: Sequence[tuple[str, str]]) -> RenderedTile:
        """The PNG of region (x, y, w, h) of image `rel_path`, or TileError: 400 bad path or
        region, 404 unknown image, 409 LR of another model, 413 region over the limit or LR
        file declaring an image over MAX_PIXELS, 500 unreadable LR file, 503 storage
        unreachable."""
        return self.view(rel_path, View(parse_region(params)))

    def view(self, rel_path: str, view: View) -> RenderedTile:
        """The image `view` asks for of image `rel_path`; TileError as for `tile` (a view from
        the LR has no region limit)."""
        w, h = view.region.w, view.region.h
        if not view.from_lr and w * h > self.max_region_pixels:
            raise TileError(
                413,
                f"region {w}x{h} is {w * h} pixels, over this server's limit of "
                f"{self.max_region_pixels}: ask for smaller regions",
            )
        lr, header, version = self.open(rel_path)
        try:
            view.region.check_inside(header.width, header.height)
        except ValueError as e:
            raise TileError(400, f"{e} {rel_path!r}") from None
        key = (version, view)
        cached = self.tile_cache.get(key)
        if cached is not None:
            return replace(cached, cached=True)
        if view.from_lr:
            tile = render_lr(lr, header, view)
        else:
            tile = self.render(lr, header, view, ImageLatents(self.latent_cache, version))
        self.tile_cache.put(key, tile, len(tile.data))
        return tile

    def images(self) -> list[str]:
        """The rel_paths of the archive's images that have an LR file (not the sources kept as
        they are, which have none), sorted; TileError 503 when the manifest or the archive
        cannot be read, its message naming what (ARCHIVE for where the archive is)."""
        recorded = self.recorded.images()
        if recorded is not None:
            return recorded
        try:
            with list_items(self.archive, None) as items:
                return sorted(
                    rel_path
                    for k in range(items.n)
                    for rel_path in lr_rel_paths(items.bucket(k, items.n))
                )
        except ValueError as e:
            raise unreadable(self.archive, "cannot list the archive's images", e) from None

    def header(self, rel_path: str) -> LrHeader:
        """The header of image `rel_path` (its HR size); TileError as for `tile`."""
        return self.open(rel_path)[1]

    def open(self, rel_path: str) -> tuple[torch.Tensor, LrHeader, Hashable]:
        """read_lr of image `rel_path`, checked to be an LR file of this server's model."""
        lr, header, version = self.read_lr(self.lr_path(rel_path), rel_path)
        if header.model_id != self.model_id:
            raise TileError(
                409,
                f"{rel_path!r} was archived by model {header.model_id}, but this server runs "
                f"model {self.model_id}: serve it with --model set to that model",
            )
        return lr, header, version

    def lr_path(self, rel_path: str) -> str:
        """The filesystem path of rel_path's LR file; on a local archive, with symlinks
        resolved and checked to stay under ARCHIVE/lr/ (else 404: such a path is no image)."""
        path = self.archive.join(lr_key(request_rel_path(rel_path)))
        if self.real_lr_root is None:  # object storage: keys, no symlinks
            return path
        real = os.path.realpath(path)
        if not real.startswith(self.real_lr_root + os.sep):
            raise TileError(404, f"no image {rel_path!r} in this archive")
        return real

    def read_lr(self, path: str, rel_path: str) -> tuple[torch.Tensor, LrHeader, Hashable]:
        """The LR pixels (1, 3, h, w) uint8, its header, and a key naming this version of the
        file (size and ETag or mtime: a re-archived image is read again)."""
        try:
            info = self.fs.info(path)
            if info.get("type") != "file":
                raise self.recorded.unknown(rel_path)
            version = (path, info["size"], info.get("ETag") or info.get("mtime"))
            cached = self.lr_cache.get(version)
            if cached is not None:
                return (*cached, version)
            data = self.fs.cat_file(path)
        except OSError as e:
            if isinstance(e, FileNotFoundError) or e.errno in NO_SUCH_NAME:
                raise self.recorded.unknown(rel_path) from None  # whatever its folders hold
            logger.warning("serve: cannot read %s: %s", self.archive.uri_of(path), e)
            raise TileError(
                503, f"cannot read image {rel_path!r} from storage ({type(e).__name__}): retry"
            ) from None
        self.recorded.check(rel_path, data)
        try:
            pixels, header = decode_lr_png(data)
        except TooManyPixels as e:
            raise TileError(413, f"image {rel_path!r}: {e}") from None
        except ValueError as e:
            logger.error("serve: %s: %s", self.archive.uri_of(path), e)
            raise TileError(500, f"image {rel_path!r}: {e}") from None
        lr = to_tensor([pixels])
        self.lr_cache.put(version, (lr, header), lr.numel())
        return lr, header, version

    def render(
        self, lr: torch.Tensor, header: LrHeader, view: View, latents: ImageLatents
    ) -> RenderedTile:
        """Run the model on the latent tiles that cover the view's region (their latents from
        the cache where it has them); finish the view."""
        try:
            with self.model_lock:
                x_hat, t_map = self.model.upscale(
                    lr.to(self.device),
                    size=(header.height, header.width),
                    region=view.region,
                    return_timesteps=True,
                    latents=latents,
                )  # (1, 3, h, w) in [0, 1]; (1, rows, cols), NaN where not run
        except ValueError as e:  # the LR pixels disagree with the size in its header
            raise TileError(500, f"LR file does not match its header: {e}") from None
        ran = ~torch.isnan(t_map)
        data = view.finish(to_images(to_pixels(x_hat))[0], header.metadata)
        mean = float(t_map[ran].mean()) if ran.any() else math.nan
        return RenderedTile(data, int(ran.sum()), t_map.numel(), mean, cached=False)


def lr_rel_paths(items: pa.Table) -> list[str]:
    """The rel_paths of list_items rows that have an LR file, but those no request can name
    (a manifest's row of a path out of the archive: check_rel_path)."""
    rel_paths = items.filter(pc.not_equal(items["lr_uri"], ""))["rel_path"].to_pylist()
    return [rel_path for rel_path in rel_paths if is_rel_path(rel_path)]


def render_lr(lr: torch.Tensor, header: LrHeader, view: View) -> RenderedTile:
    """The view made from the LR pixels alone: the region in LR pixels (HR / scale, as the DFRM
    made them, not rounded, so neighbouring tiles meet) resized to the view's size with Lanczos;
    no model call. decode_lr_png checked that the LR is ceil(HR / scale)."""
    x, y, w, h = view.region
    box = tuple(v / header.scale for v in (x, y, x + w, y + h))
    image = Image.fromarray(to_images(lr)[0])
    size = view.size or (w, h)
    pixels = np.asarray(image.resize(size, Image.Resampling.LANCZOS, box=box))
    data = view.encode(pixels, header.metadata)
    return RenderedTile(data, 0, 0, math.nan, cached=False, from_lr=True)
