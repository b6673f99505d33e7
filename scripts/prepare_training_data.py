"""Build the training and held-out sets of the shipped tiny checkpoints.

Sources (all freely redistributable, none downloaded at run time by the product):
- scikit-image's bundled sample images (`skimage.data`, BSD-3 / public-domain photographs);
- the photographs among the wallpapers of Debian 12 packages, each under the licence its
  copyright file gives: `plasma-workspace-wallpapers` (KDE Visual Design Group, GPL-2+),
  `mate-backgrounds` (GPL-2+), `lomiri-wallpapers-16.04` and `lomiri-wallpapers-20.04`
  (CC-BY-4.0, CC-BY-SA-4.0 or CC0-1.0 per photo). Fetch them with `apt-get download` and unpack
  them all into one root with `dpkg -x DEB ROOT`.
KDE wallpapers are resized to 1280x800 (about 1 MP), the others to 1280 pixels on their long
side, with Lanczos. The held-out photos are never trained on.

Usage: python scripts/prepare_training_data.py UNPACKED_DEBS_ROOT TRAIN_DIR VAL_DIR
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
# usr/share/backgrounds of mate-backgrounds and lomiri-wallpapers-*: the photographs only
BACKGROUNDS_TRAIN = [
    "mate/nature/Blinds.jpg",
    "mate/nature/Dune.jpg",
    "mate/nature/Garden.jpg",
    "mate/nature/LadyBird.jpg",
    "mate/nature/RainDrops.jpg",
    "mate/nature/Storm.jpg",
    "mate/nature/TwoWings.jpg",
    "mate/nature/Wood.jpg",
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Kleiber_by_Lukas_Baubkus.jpg",
    "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "analogpattern_by_Peter_Nerlich.jpg",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
]
LONG_SIDE = 1280


def wallpaper(root: Path, name: str) -> Image.Image:
    folder = root / "usr/share/wallpapers" / name / "contents/images"
    largest = max(folder.iterdir(), key=lambda p: p.stat().st_size)
    return Image.open(largest).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)


def background(root: Path, name: str) -> Image.Image:
    img = Image.open(root / "usr/share/backgrounds" / name).convert("RGB")
    ratio = LONG_SIDE / max(img.size)
    size = (round(img.width * ratio), round(img.height * ratio))
    return img.resize(size, Image.Resampling.LANCZOS)


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
    for name in BACKGROUNDS_TRAIN:
        background(Path(root), name).save(train / f"bg-{Path(name).stem}.png")
    for name in WALLPAPER_HELD_OUT:
        wallpaper(Path(root), name).save(val / f"kde-{name}.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
