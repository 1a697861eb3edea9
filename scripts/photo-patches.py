#!/usr/bin/env python3
"""Builds `photo-patches`, a labelled image folder of real photographs, from Debian packages.

No registry package ships a labelled set of real photographs (Debian, PyPI and npm were
searched: the CIFAR/ImageNet packages there are downloaders, `tensorflow-datasets` carries
synthetic fixtures only). Two Debian packages do ship real photographs:

- `python3-skimage` (0.19.3, BSD-3-Clause per its copyright file; `skimage/data/README.txt`
  names each image's source): 14 photographs - astronaut, brick, camera, chelsea, coffee,
  coins, grass, gravel, hubble_deep_field, ihc, moon, motorcycle_left, retina, rocket;
- `plasma-workspace-wallpapers` (5.27, GPL-2+, KDE Visual Design Group): the 10 of its 30
  wallpapers that are photographs - BytheWater, ColdRipple, ColorfulCups, EveningGlow,
  FallenLeaf, Grey, Kite, OneStandsOut, Path, summer_1am.

Each photograph is a class (24 classes); its samples are square crops of it. The photograph is
scaled to a 384 px shorter side; training crops come from the left 60% of its width, test
crops from the right 35% (a 5% gap between, so no test pixel is ever seen in training). A crop
is 64 to 112 px (uniform), at a uniform position, scaled to 96x96 and saved as a JPEG (quality
92). The task is "which scene is this patch from": real-photo statistics (texture, colour,
blur, noise, JPEG history), an easy-to-check ground truth, and no labelling by hand.

Usage: scripts/photo-patches.py OUT [--train 120] [--test 40] [--seed 0] [--debs DIR]
Needs Pillow (any venv with torchvision has it) and `apt-get download` (or the two .deb
files already in DIR). Writes OUT/{train,test}/<class>/<n>.jpg, the layout `folder:OUT` reads.
"""
import argparse
import pathlib
import random
import subprocess
import sys

from PIL import Image

SKIMAGE = ["astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
           "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
           "rocket.jpg"]
PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite",
          "OneStandsOut", "Path", "summer_1am"]
SHORT_SIDE = 384
SIDE = 96
TRAIN_PART = 0.60
TEST_FROM = 0.65


def unpack(debs: pathlib.Path) -> pathlib.Path:
    """The two packages' files, downloaded (when not in `debs` yet) and extracted."""
    debs.mkdir(parents=True, exist_ok=True)
    for package in ["python3-skimage", "plasma-workspace-wallpapers"]:
        if not list(debs.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(debs / "root")], check=True)
    return debs / "root"


def photographs(root: pathlib.Path):
    """(class name, file) for the 24 photographs; the largest wallpaper size of each."""
    data = next(root.glob("usr/lib/python3/dist-packages/skimage/data"))
    for name in SKIMAGE:
        yield name.split(".")[0], data / name
    for name in PLASMA:
        sizes = sorted((root / "usr/share/wallpapers" / name / "contents/images").glob("*.*"),
                       key=lambda p: p.stat().st_size)
        if not sizes:
            sys.exit(f"photo-patches: no images for wallpaper {name} in {root}")
        yield name.lower(), sizes[-1]


def crops(image: Image.Image, x_range, count: int, rng: random.Random):
    """`count` square crops inside columns `x_range` of `image`, each scaled to SIDE."""
    width, height = image.size
    lo, hi = x_range
    for _ in range(count):
        side = rng.randint(64, 112)
        side = min(side, hi - lo, height)
        x = rng.randint(lo, hi - side)
        y = rng.randint(0, height - side)
        yield image.crop((x, y, x + side, y + side)).resize((SIDE, SIDE), Image.BICUBIC)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--train", type=int, default=120, help="training crops per class")
    p.add_argument("--test", type=int, default=40, help="test crops per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debs", type=pathlib.Path, default=pathlib.Path("/tmp/photo-patches-debs"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    root = unpack(a.debs)
    for name, path in photographs(root):
        image = Image.open(path).convert("RGB")
        scale = SHORT_SIDE / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        width = image.width
        for split, x_range, count in [("train", (0, int(TRAIN_PART * width)), a.train),
                                      ("test", (int(TEST_FROM * width), width), a.test)]:
            folder = a.out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(crops(image, x_range, count, rng)):
                crop.save(folder / f"{i:04d}.jpg", quality=92)
        print(f"{name}: {path.name} {image.width}x{image.height}, {a.train} train + {a.test} test crops")
    print(f"wrote {a.out}: 24 classes")


if __name__ == "__main__":
    main()
