"""Which TADM a job runs: a shipped name, a local folder, or a folder on S3."""

from __future__ import annotations

from typing import Any

from pipeline.storage import Location
from tadm import TADM, hub


def default_model(scale: int) -> str:
    """The shipped checkpoint used when --model is not given."""
    return f"tiny-x{scale}"


def load_model(ref: str, storage_options: dict[str, Any]) -> TADM:
    """TADM from `ref`: a shipped name ("tiny-x16"), a local folder, file:// or s3:// URI.
    Raise ValueError naming `ref` when it is none of these or does not load."""
    try:
        if "://" in ref:
            location = Location.parse(ref, storage_options)
            if location.protocol == "file":
                local = location.root
            else:
                local = str(hub.cached_copy(location.filesystem(), location.root, location.uri))
            return TADM.from_pretrained(local).eval()
        return TADM.from_pretrained(ref).eval()
    except (ValueError, OSError) as e:
        raise ValueError(f"model {ref!r} cannot be loaded: {e}") from None
