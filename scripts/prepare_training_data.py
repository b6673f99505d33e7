"""Build the training and held-out sets of the shipped tiny checkpoints.

Sources (all freely redistributable, none downloaded at run time by the product):
- scikit-image's bundled sample images (`skimage.data`, BSD-3 / public-domain photographs);
- the photographs among the wallpapers of Debian's `plasma-workspace-wallpapers` package
  (KDE Visual Design Group, GPL-2+); fetch it with `apt-get download plasma-workspace-wallpapers`
  and unpack with `dpkg -x`.
Wallpapers are resized to 1280x800 (about 1 MP) with Lanczos. The held-out photos are never
trained on.

Usage: python scripts/prepare_training_data.py UNPACKED_DEB_ROOT TRAIN_DIR VAL_DIR
"""

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SKIMAGE = [
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "rocket",
    "retina",
    "immunohistochemistry",
    "camera",
    "grass",
    "gravel",
    "brick",
    "moon",
    "coins",
]
WALLPAPER_TRAIN = [
    "BytheWater",
    "ColdRipple",
    "DarkestHour",
    "Grey",
    "Kite",
    "OneStandsOut",
    "summer_1am",
]
WALLPAPER_HELD_OUT = ["ColorfulCups", "EveningGlow", "FallenLeaf", "Path"]
SIZE = (1280, 800)


def wallpaper(root: Path, name: str) -> Image.Image:
    folder = root / "usr/share/wallpapers" / name / "contents/images"
    largest = max(folder.iterdir(), key=lambda p: p.stat().st_size)
    return Image.open(largest).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)


def main(root: str, train_dir: str, val_dir: str) -> None:
    train, val = Path(train_dir), Path(val_dir)
    train.mkdir(parents=True, exist_ok=True)
    val.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        Image.fromarray(img[..., :3]).save(train / f"skimage-{name}.png")
    left, _, _ = skimage.data.stereo_motorcycle()
    Image.fromarray(left).save(train / "skimage-motorcycle_left.png")
    for name in WALLPAPER_TRAIN:
        wallpaper(Path(root), name).save(train / f"kde-{name}.png")
    for name in WALLPAPER_HELD_OUT:
        wallpaper(Path(root), name).save(val / f"kde-{name}.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
