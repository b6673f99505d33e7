"""Which TADM a job runs: a shipped name, a local folder, or a folder on S3."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.storage import Location
from tadm import TADM

CACHE_DIR = Path(os.environ.get("TADM_CACHE", Path(tempfile.gettempdir()) / "tadm-cache"))


def default_model(scale: int) -> str:
    """The shipped checkpoint used when --model is not given."""
    return f"tiny-x{scale}"


def load_model(ref: str, storage_options: dict[str, Any]) -> TADM:
    """TADM from `ref`: a shipped name ("tiny-x16"), a local folder, file:// or s3:// URI.
    Raise ValueError naming `ref` when it is none of these or does not load."""
    try:
        if "://" in ref:
            location = Location.parse(ref, storage_options)
            local = location.root if location.protocol == "file" else str(cached_copy(location))
            return TADM.from_pretrained(local).eval()
        return TADM.from_pretrained(ref).eval()
    except (ValueError, OSError) as e:
        raise ValueError(f"model {ref!r} cannot be loaded: {e}") from None


def cached_copy(location: Location) -> Path:
    """A local copy of a remote model folder, made once per content version.

    The cache key hashes the URI and every file's name, size and ETag, so a changed model is
    copied again; the copy goes to a temporary folder renamed into place, so a half-done copy
    is never used.
    """
    fs = location.filesystem()
    files = fs.find(location.root, detail=True)
    if not files:
        raise ValueError(f"model folder {location.uri!r} is empty or does not exist")
    listing = sorted((p, i.get("size"), i.get("ETag", i.get("mtime"))) for p, i in files.items())
    key = hashlib.sha256(repr((location.uri, listing)).encode()).hexdigest()[:16]
    target = CACHE_DIR / key
    if target.is_dir():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=".staging-"))
    try:
        for path in files:
            rel = path[len(location.root) + 1 :]
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(staging / rel))
        staging.rename(target)
    except OSError:
        if target.is_dir():  # another worker on this machine finished the same copy first
            shutil.rmtree(staging, ignore_errors=True)
            return target
        raise
    return target
