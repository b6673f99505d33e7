"""The images under SRC: which files archive reads, and their relative paths."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipeline.storage import Location

IMAGE_EXTENSIONS = (
    *(".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"),
    *(".heic", ".heif", ".avif", ".jxl"),
)


@dataclass(frozen=True)
class SourceFile:
    path: str  # filesystem path, as Location.filesystem() and Ray's reader take it
    rel_path: str  # "/"-separated path under SRC, extension kept: "a/b.jpg"
    size: int  # bytes, from the listing


def is_image_name(name: str) -> bool:
    """An image extension (any case), and not a hidden file such as "._x.jpg" or ".x.tmp"."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def rel_prefix(src: Location, single_file: bool) -> str:
    """What to strip from a path to get its rel_path: the folder, with its trailing "/"."""
    folder = posixpath.dirname(src.root) if single_file else src.root
    return folder.rstrip("/") + "/"


def list_sources(
    src: Location, exclude: Location | None = None, every_file: bool = False
) -> tuple[list[SourceFile], str]:
    """Every image file under `src` (recursive; hidden files and folders skipped), sorted by
    rel_path, and the prefix that rel paths are relative to. SRC may also be a single image.
    Files under `exclude` (an archive written inside SRC) are left out. With `every_file`,
    files of any extension too."""
    fs = src.filesystem()
    single_file = fs.isfile(src.root)
    prefix = rel_prefix(src, single_file)
    infos = {src.root: fs.info(src.root)} if single_file else fs.find(src.root, detail=True)
    files = []
    for path, info in infos.items():
        rel_path = path[len(prefix) :]
        hidden = any(part.startswith(".") for part in rel_path.split("/"))
        wanted = every_file or is_image_name(posixpath.basename(path))
        if info["type"] != "file" or hidden or not wanted:
            continue
        if exclude is not None and exclude.protocol == src.protocol and exclude.contains(path):
            continue
        files.append(SourceFile(path=path, rel_path=rel_path, size=int(info["size"])))
    return sorted(files, key=lambda f: f.rel_path), prefix
