"""Tiled inference helpers (paper Algorithm 1, Sec. 4.4.1).

Tiles are laid on the latent grid (size 96, stride 64 by default); each tile gets its own TPM
time step and is blended into the output with Gaussian weights, so there are no seams. Weights
never reach zero, so a border pixel covered by one tile alone is still defined. Chunks are the
larger pieces that bound the memory of the parts that otherwise see the whole image.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Tile:
    row: int  # index in the tile grid
    col: int
    y: int  # top-left corner on the latent grid
    x: int
    h: int  # size on the latent grid
    w: int


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` (the last one flush right)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_grid(height: int, width: int, tile: int, stride: int) -> list[Tile]:
    """Tiles covering a (height, width) latent, row-major."""
    ys, xs = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    th, tw = min(tile, height), min(tile, width)
    return [Tile(r, c, y, x, th, tw) for r, y in enumerate(ys) for c, x in enumerate(xs)]


def chunk_grid(height: int, width: int, max_pixels: int, margin: int, step: int) -> list[Tile]:
    """Chunks covering a (height, width) latent: the whole when it has at most `max_pixels`
    pixels, else square chunks of about that many (a multiple of `step`, at least
    2 * margin + step on a side) overlapping by 2 * margin."""
    if height * width <= max_pixels:
        return [Tile(0, 0, 0, 0, height, width)]
    side = max(step * (math.isqrt(max_pixels) // step), 2 * margin + step)
    return tile_grid(height, width, side, side - 2 * margin)


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether windows (y, x, h, w) a and b share a pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def bounding_box(tiles: list[Tile]) -> tuple[int, int, int, int]:
    """The smallest window (y, x, h, w) holding every tile."""
    y0, x0 = min(t.y for t in tiles), min(t.x for t in tiles)
    y1, x1 = max(t.y + t.h for t in tiles), max(t.x + t.w for t in tiles)
    return y0, x0, y1 - y0, x1 - x0


def grid_shape(height: int, width: int, tile: int, stride: int) -> tuple[int, int]:
    return len(tile_starts(height, tile, stride)), len(tile_starts(width, tile, stride))


def gaussian_weights(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """(h, w) Gaussian bump centred on the tile, as in StableSR/MultiDiffusion (var 0.01)."""

    def bump(n: int) -> Tensor:
        mid = (n - 1) / 2
        pos = torch.arange(n, dtype=torch.float32, device=device)
        return torch.exp(-((pos - mid) ** 2) / (n * n) / (2 * 0.01))

    return bump(h)[:, None] * bump(w)[None, :]


class Blender:
    """Accumulates weighted tiles into a window [y0, y0+h) x [x0, x0+w) of a larger canvas."""

    def __init__(
        self, batch: int, channels: int, window: tuple[int, int, int, int], device: torch.device
    ) -> None:
        self.y0, self.x0, self.h, self.w = window
        self.acc = torch.zeros(batch, channels, self.h, self.w, device=device)
        self.weight = torch.zeros(self.h, self.w, device=device)

    def overlaps(self, y: int, x: int, h: int, w: int) -> bool:
        return overlaps((y, x, h, w), (self.y0, self.x0, self.h, self.w))

    def add(self, tile: Tensor, y: int, x: int) -> None:
        """Add `tile` (B, C, h, w) placed at canvas position (y, x)."""
        h, w = tile.shape[-2:]
        weights = gaussian_weights(h, w, tile.device)
        ty0, tx0 = max(y, self.y0), max(x, self.x0)
        ty1, tx1 = min(y + h, self.y0 + self.h), min(x + w, self.x0 + self.w)
        if ty0 >= ty1 or tx0 >= tx1:
            return
        src = (slice(ty0 - y, ty1 - y), slice(tx0 - x, tx1 - x))
        dst = (slice(ty0 - self.y0, ty1 - self.y0), slice(tx0 - self.x0, tx1 - self.x0))
        self.acc[..., dst[0], dst[1]] += tile[..., src[0], src[1]].float() * weights[src]
        self.weight[dst] += weights[src]

    def result(self) -> Tensor:
        return self.acc / self.weight
