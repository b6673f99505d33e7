"""Build a set of real photographs never used to train the shipped checkpoints (the model card's
training and held-out lists), prepared as the held-out set was: RGB, Lanczos down to 1280 pixels
on the long side (never up), images under 512 pixels on the short side skipped, saved as PNG.

Sources, all from package registries, none downloaded at run time:
- Debian 12 packages, installed (read from their installed paths, version from dpkg, licence
  from the "Files: *" stanza of /usr/share/doc/PKG/copyright):
    apt-get install mate-backgrounds palapeli-data enlightenment-data digikam-data hugin-data \
        opencv-doc libjxl-testdata
  enlightenment-data keeps its backgrounds as Edje (.edj) files; the photo is the largest JPEG
  stream inside, read as it is stored (no decoding of the Edje container).
- PyPI wheels, read without installing them (pass their folder as --wheels):
    pip download --no-deps imgaug==0.4.0 glymur==0.14.8 pywavelets==1.9.0 scipy==1.9.3 -d WHEELS
  and matplotlib's own sample photo from the matplotlib this Python imports.
Each source was looked at by eye; renders, illustrations, logos, screenshots, annotated figures
and second views of a scene already in the set are not listed. Nothing here is in the model
card's training list (scikit-image samples; plasma-workspace-wallpapers BytheWater, ColdRipple,
DarkestHour, Grey, Kite, OneStandsOut, summer_1am; mate-backgrounds Blinds, Dune, Garden, LadyBird,
RainDrops, Storm, TwoWings, Wood; 15 lomiri-wallpapers photos) or its held-out list.

Writes OUT_DIR/*.png (only the PNGs: evaluate_checkpoint.py reads every file of the folder) and
the sources as CSV to --sources (default: OUT_DIR.sources.csv beside the folder). Idempotent:
the folder is rebuilt from scratch each run.

Usage: python scripts/prepare_unseen_photos.py [OUT_DIR] [--wheels DIR] [--sources CSV]
"""

import argparse
import bz2
import csv
import io
import pickle
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

LONG_SIDE = 1280
MIN_SHORT_SIDE = 512

# (output name, Debian package, installed path)
DEBIAN = [
    ("mate-Aqua", "mate-backgrounds", "/usr/share/backgrounds/mate/nature/Aqua.jpg"),
    ("mate-FreshFlower", "mate-backgrounds", "/usr/share/backgrounds/mate/nature/FreshFlower.jpg"),
    ("mate-GreenMeadow", "mate-backgrounds", "/usr/share/backgrounds/mate/nature/GreenMeadow.jpg"),
    (
        "mate-YellowFlower",
        "mate-backgrounds",
        "/usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    ),
    *[
        (f"palapeli-{n}", "palapeli-data", f"/usr/share/palapeli/collection/{n}.jpg")
        for n in [
            "castle-maintenon",
            "cincinnati-bridge",
            "citrus-fruits",
            "european-honey-bee",
            "panther-chameleon-female",
        ]
    ],
    *[
        (f"e-{n}", "enlightenment-data", f"/usr/share/enlightenment/data/backgrounds/{n}.edj")
        for n in [
            "Bamboo",
            "Foggy-Trees",
            "God-Rays",
            "Green-Maple",
            "Lichen-Branches",
            "Mountain",
            "Peaks",
            "Red-Maple",
            "Sea-of-Lanterns",
            "Snow-Trees",
            "Spruce-Needles",
            "Sunset-Clouds",
            "White-Flower",
            "Yellow-Flower",
        ]
    ],
    (
        "digikam-body-background",
        "digikam-data",
        "/usr/share/digikam/about/images/body-background.jpg",
    ),
    ("hugin-CA_tCA00", "hugin-data", "/usr/share/hugin/xrc/data/help_en_EN/CA_tCA00.jpg"),
    *[
        (f"opencv-{Path(p).stem}", "opencv-doc", f"/usr/share/doc/opencv-doc/{p}")
        for p in [
            "examples/data/aloeL.jpg",
            "examples/data/apple.jpg",
            "examples/data/baboon.jpg",
            "examples/data/building.jpg",
            "examples/data/chicky_512.png",
            "examples/data/ela_original.jpg",
            "examples/data/graf1.png",
            "examples/data/leuvenA.jpg",
            "examples/data/orange.jpg",
            "examples/data/pca_test1.jpg",
            "examples/text/scenetext01.jpg",
            "examples/text/scenetext02.jpg",
            "examples/text/scenetext03.jpg",
            "examples/text/scenetext04.jpg",
            "examples/text/scenetext05.jpg",
            "opencv4/html/230501201_1.jpg",
            "opencv4/html/4_barcodes.jpg",
        ]
    ],
    ("jxl-flower", "libjxl-testdata", "/usr/share/libjxl-testdata/jxl/flower/flower.png"),
]
# (output name, wheel name prefix, member inside the wheel, how to read it)
WHEELS = [
    ("pypi-glymur-nemo", "glymur", "glymur/data/nemo.jp2", "image"),
    ("pypi-imgaug-quokka", "imgaug", "imgaug/quokka.jpg", "image"),
    ("pypi-pywt-aero", "pywavelets", "pywt/data/aero.npz", "npz"),
    ("pypi-scipy-face", "scipy", "scipy/misc/face.dat", "face"),
    ("pypi-scipy-ascent", "scipy", "scipy/misc/ascent.dat", "ascent"),
]


def debian_version(pkg: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=True
    ).stdout


def debian_licence(pkg: str) -> str:
    """The licence of the "Files: *" stanza of the package's copyright file (else the first)."""
    text = Path(f"/usr/share/doc/{pkg}/copyright").read_text(errors="replace")
    stanzas = re.split(r"\n\s*\n", text)
    for stanza in stanzas:
        if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            m = re.search(r"^License:\s*(.+)$", stanza, re.M)
            if m:
                return m.group(1).strip()
    m = re.search(r"^License:\s*(.+)$", text, re.M)
    if m:
        return m.group(1).strip()
    if "either version 2 of the License, or" in text:  # a free-form file (digikam-data)
        return "GPL-2+ (free-form copyright file)"
    return "see copyright file"


def largest_jpeg(data: bytes) -> Image.Image:
    """The largest JPEG stream stored in a binary container (an Edje file's image sets)."""
    best = None
    for m in re.finditer(rb"\xff\xd8\xff", data):
        try:
            img = Image.open(io.BytesIO(data[m.start() : m.start() + 50_000_000]))
            img.load()
        except Exception:
            continue
        if best is None or img.width * img.height > best.width * best.height:
            best = img
    if best is None:
        raise ValueError("no JPEG stream found")
    return best


def wheel_file(wheels: Path, prefix: str) -> Path:
    found = sorted(wheels.glob(f"{prefix}-*.whl"))
    if not found:
        raise FileNotFoundError(f"no {prefix} wheel in {wheels}")
    return found[-1]


def wheel_meta(whl: Path) -> tuple[str, str]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode(errors="replace")
    version = re.search(r"^Version:\s*(.+)$", text, re.M).group(1).strip()
    m = re.search(r"^License-Expression:\s*(.+)$", text, re.M) or re.search(
        r"^License:\s*(.+)$", text, re.M
    )
    licence = m.group(1).strip() if m else "see package"
    if "SciPy Developers" in licence or "Enthought" in licence:
        licence = "BSD-3-Clause"
    return version, licence


def read_wheel_image(whl: Path, member: str, kind: str) -> Image.Image:
    with zipfile.ZipFile(whl) as z:
        data = z.read(member)
    if kind == "image":
        return Image.open(io.BytesIO(data))
    if kind == "npz":
        arr = np.load(io.BytesIO(data))["data"]
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "face":  # scipy.misc.face: bz2 of 768 x 1024 RGB uint8 pixels
        raw = bz2.decompress(data)
        return Image.fromarray(np.frombuffer(raw, np.uint8).reshape(768, 1024, 3))
    # scipy.misc.ascent: a pickled 512 x 512 grey image, a list of lists of ints: read with
    # no global allowed, so the pickle can build nothing but plain Python values
    return Image.fromarray(np.asarray(PlainValues(io.BytesIO(data)).load()).astype(np.uint8))


class PlainValues(pickle.Unpickler):
    """An unpickler that refuses every global (class, function): lists, ints and the like."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"{module}.{name}: only plain values are read")


def prepare(img: Image.Image) -> Image.Image | None:
    img = img.convert("RGB")
    if min(img.size) < MIN_SHORT_SIDE:
        return None
    ratio = LONG_SIDE / max(img.size)
    if ratio < 1:
        size = (round(img.width * ratio), round(img.height * ratio))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def main(out_dir: str, wheels: str | None, sources: str | None) -> None:
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = []

    def add(name, img, source, package, version, path, licence):
        original = img.size
        prepared = prepare(img)
        if prepared is None:
            print(f"skip {name}: {original[0]}x{original[1]} is under {MIN_SHORT_SIDE} px")
            return
        prepared.save(out / f"{name}.png")
        rows.append(
            {
                "image": f"{name}.png",
                "source": source,
                "package": package,
                "version": version,
                "path": path,
                "licence": licence,
                "original_size": f"{original[0]}x{original[1]}",
                "prepared_size": f"{prepared.width}x{prepared.height}",
            }
        )

    for name, pkg, path in DEBIAN:
        data = Path(path).read_bytes()
        img = largest_jpeg(data) if path.endswith(".edj") else Image.open(io.BytesIO(data))
        add(name, img, "debian", pkg, debian_version(pkg), path, debian_licence(pkg))

    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg"
    add(
        "pypi-matplotlib-grace_hopper",
        Image.open(hopper),
        "pypi",
        "matplotlib",
        matplotlib.__version__,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "PSF-based Matplotlib licence (the photo: US Navy, public domain)",
    )
    if wheels:
        for name, prefix, member, kind in WHEELS:
            whl = wheel_file(Path(wheels), prefix)
            version, licence = wheel_meta(whl)
            add(name, read_wheel_image(whl, member, kind), "pypi", prefix, version, member, licence)

    csv_path = Path(sources) if sources else out.with_name(out.name + ".sources.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} photos in {out}, sources in {csv_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="/tmp/unseen-photos")
    parser.add_argument("--wheels", help="folder of the downloaded PyPI wheels (see above)")
    parser.add_argument("--sources", help="CSV of the sources (default: beside OUT_DIR)")
    args = parser.parse_args()
    main(args.out_dir, args.wheels, args.sources)
