"""The benchmark's test images: every image under a URI, decoded as archive decodes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.decode import decode_image
from pipeline.sources import list_sources
from pipeline.storage import Location

SAMPLES = Path(__file__).resolve().parent / "samples"  # the sample photos (package data)
QUICK_CROP = 256  # --quick: centre crops of at most this many pixels a side


@dataclass(frozen=True)
class BenchImage:
    name: str  # rel_path under --images
    pixels: np.ndarray  # (H, W, 3) uint8

    @property
    def megapixels(self) -> float:
        return self.pixels.shape[0] * self.pixels.shape[1] / 1e6


def load_images(uri: str, crop: int | None = None) -> list[BenchImage]:
    """Every image under `uri`, sorted by rel_path; with `crop`, centre crops of at most
    crop x crop. ValueError when there is none or one does not decode."""
    src = Location.parse(uri)
    try:
        sources, _ = list_sources(src)
    except OSError as e:
        raise ValueError(f"--images {uri!r} cannot be listed: {e}") from None
    if not sources:
        raise ValueError(f"--images {uri!r} holds no images")
    fs = src.filesystem()
    images = []
    for source in sources:
        try:
            pixels = decode_image(fs.cat_file(source.path)).pixels
        except ValueError as e:
            raise ValueError(f"--images: {source.rel_path}: {e}") from None
        if crop is not None:
            pixels = centre_crop(pixels, crop)
        images.append(BenchImage(source.rel_path, pixels))
    return images


def centre_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def write_pngs(images: list[BenchImage], folder: Path, copies: int = 1) -> Path:
    """The images as PNG files under `folder` (`copies` of each, for longer timed runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for image in images:
            stem = image.name.replace("/", "_").rsplit(".", 1)[0]
            Image.fromarray(image.pixels).save(folder / f"{stem}-{copy}.png")
    return folder
