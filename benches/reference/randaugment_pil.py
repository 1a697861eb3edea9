#!/usr/bin/env python3
"""PIL baseline for `protocon bench augment`: the usual Python augmentation, one thread.

Measures images/s of the same work the Rust bench times:

* 32x32 (default): weak = RandomCrop(32, padding 4, reflect) + flip; strong = that crop,
  RandAugment with the FixMatch pool (n = 2, each with p = 0.5, magnitude randint(1, 10)),
  flip, Cutout 16 px. Ops are those of the public FixMatch-pytorch `fixmatch_augment_pool`,
  with fill (128, 128, 128) for Rotate/Shear/Translate as in the Rust default.
* `--source jpeg --size 224`: PIL decode (`Image.open(...).convert("RGB")`),
  RandomResizedCrop(224) (torchvision's get_params, crop then bilinear resize) + flip
  (+ RandAugment + Cutout 112 px for the strong view).

Warm-up runs, then the median (and min..max) of the timed runs, as docs/benchmarking.md asks.
Only Pillow and numpy are needed (torchvision's PIL code paths are reproduced inline):

    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow numpy
    /tmp/pil/bin/python benches/reference/randaugment_pil.py --view strong --size 32
    # the same JPEG files on both sides (4:2:0 at quality 90, like most photos; the Rust
    # bench's `--write-jpegs DIR` writes its own set the same way)
    /tmp/pil/bin/python benches/reference/randaugment_pil.py --source jpeg --size 224 --write-jpegs /tmp/jpegs420
    protocon bench augment --source jpeg --size 224 --data /tmp/jpegs420

At 224 px Pillow's per-image allocations sit above glibc's mmap threshold and may be mapped and
unmapped each time, which slows it by up to 30% in some processes; for its fastest (and steadiest)
figures run it as `compare_augment.sh` does, with MALLOC_MMAP_THRESHOLD_=67108864
MALLOC_TRIM_THRESHOLD_=134217728 in the environment.

`randaugment_pil.py record` prints the Pillow outputs hard-coded in
`stages/tests/augment_ops.rs` (how those constants were made); `randaugment_pil.py
record-jpeg DIR` writes the JPEG files and Pillow's decoded pixels that `src/data/jpeg.rs`
tests against (tests/fixtures/jpeg).
"""

import argparse
import io
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time

import numpy as np
import PIL
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
from PIL import Image

FILL = (128, 128, 128)
PARAMETER_MAX = 10


# ---- the FixMatch RandAugment pool (same magnitudes as the Rust table) ----

def _float(v, max_v):
    return float(v) * max_v / PARAMETER_MAX


def _int(v, max_v):
    return int(v * max_v / PARAMETER_MAX)


def auto_contrast(img, v, max_v, bias):
    return PIL.ImageOps.autocontrast(img)


def brightness(img, v, max_v, bias):
    return PIL.ImageEnhance.Brightness(img).enhance(_float(v, max_v) + bias)


def color(img, v, max_v, bias):
    return PIL.ImageEnhance.Color(img).enhance(_float(v, max_v) + bias)


def contrast(img, v, max_v, bias):
    return PIL.ImageEnhance.Contrast(img).enhance(_float(v, max_v) + bias)


def equalize(img, v, max_v, bias):
    return PIL.ImageOps.equalize(img)


def identity(img, v, max_v, bias):
    return img


def posterize(img, v, max_v, bias):
    return PIL.ImageOps.posterize(img, _int(v, max_v) + bias)


def rotate(img, v, max_v, bias):
    v = _int(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.rotate(v, fillcolor=FILL)


def sharpness(img, v, max_v, bias):
    return PIL.ImageEnhance.Sharpness(img).enhance(_float(v, max_v) + bias)


def shear_x(img, v, max_v, bias):
    v = _float(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0), fillcolor=FILL)


def shear_y(img, v, max_v, bias):
    v = _float(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0), fillcolor=FILL)


def solarize(img, v, max_v, bias):
    return PIL.ImageOps.solarize(img, 256 - (_int(v, max_v) + bias))


def translate_x(img, v, max_v, bias):
    v = _float(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    v = int(v * img.size[0])
    return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0), fillcolor=FILL)


def translate_y(img, v, max_v, bias):
    v = _float(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    v = int(v * img.size[1])
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v), fillcolor=FILL)


POOL = [
    (auto_contrast, None, None), (brightness, 0.9, 0.05), (color, 0.9, 0.05),
    (contrast, 0.9, 0.05), (equalize, None, None), (identity, None, None),
    (posterize, 4, 4), (rotate, 30, 0), (sharpness, 0.9, 0.05), (shear_x, 0.3, 0),
    (shear_y, 0.3, 0), (solarize, 256, 0), (translate_x, 0.3, 0), (translate_y, 0.3, 0),
]


def randaugment(img, n=2, p=0.5):
    for op, max_v, bias in random.choices(POOL, k=n):
        v = np.random.randint(1, PARAMETER_MAX)
        if random.random() < p:
            img = op(img, v=v, max_v=max_v, bias=bias)
    return img


def cutout(img, side, fill=(127, 127, 127)):
    w, h = img.size
    x0 = int(max(0, np.random.uniform(0, w) - side / 2.0))
    y0 = int(max(0, np.random.uniform(0, h) - side / 2.0))
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), fill)
    return img


# ---- torchvision's PIL paths, inline ----

def reflect_crop(img, pad):
    """RandomCrop(size, padding=pad, padding_mode="reflect") on a PIL image."""
    a = np.asarray(img)
    a = np.pad(a, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    padded = Image.fromarray(a)
    top = random.randint(0, 2 * pad)
    left = random.randint(0, 2 * pad)
    return padded.crop((left, top, left + img.width, top + img.height))


def flip(img):
    return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < 0.5 else img


def random_resized_crop(img, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = random.randint(0, height - h)
            j = random.randint(0, width - w)
            break
    else:
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        i, j = (height - h) // 2, (width - w) // 2
    return img.crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)


# ---- inputs ----

def synthetic(w, h, rng):
    """Smooth color waves plus noise (like the Rust bench's synthetic images)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy, phase = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08), rng.uniform(0, 2 * math.pi)
    chans = [b + 60 * np.sin(x * fx + c + phase) * np.cos(y * fy - phase)
             for c, b in enumerate(rng.uniform(40, 215, size=3))]
    a = np.stack(chans, -1) + rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "RGB")


def load_inputs(args):
    rng = np.random.default_rng(0)
    if args.source == "synthetic":
        if args.data:
            return [Image.open(os.path.join(args.data, f)).convert("RGB") for f in image_files(args.data)]
        return [synthetic(args.size, args.size, rng) for _ in range(256)]
    if args.data:
        files = [os.path.join(args.data, f) for f in image_files(args.data)]
        return [open(f, "rb").read() for f in files]
    out = []
    for i in range(64):
        buf = io.BytesIO()
        # Pillow's default chroma subsampling is 4:2:0, like most photos (and ImageNet's files).
        synthetic(480 + (i * 7) % 41, 360 + (i * 5) % 31, rng).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
        if args.write_jpegs:
            os.makedirs(args.write_jpegs, exist_ok=True)
            with open(os.path.join(args.write_jpegs, f"synthetic_{i:03}.jpg"), "wb") as f:
                f.write(buf.getvalue())
    return out


def image_files(d):
    files = sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not files:
        sys.exit(f"no .jpg/.jpeg/.png files in {d}")
    return files


def one_view(args, img, view):
    if args.source == "jpeg":
        img = flip(random_resized_crop(img, args.size))
        if view == "strong":
            img = cutout(randaugment(img), int(0.5 * args.size))
        return img
    pad = int(0.125 * min(img.size))
    img = reflect_crop(img, pad)
    if view == "weak":
        return flip(img)
    return cutout(flip(randaugment(img)), int(0.5 * min(img.size)))


def one_image(args, item):
    """One sample: decode (jpeg source), then the requested view(s) from the same pixels."""
    img = Image.open(io.BytesIO(item)).convert("RGB") if args.source == "jpeg" else item
    if args.decode_only:
        return [img]
    views = ["weak", "strong"] if args.view == "both" else [args.view]
    return [one_view(args, img, v) for v in views]


def bench(args):
    random.seed(0)
    np.random.seed(0)
    inputs = load_inputs(args)
    images = args.images or (20000 if args.source == "synthetic" else 1000)
    rates = []
    for run in range(args.warmup + args.repeats):
        start = time.perf_counter()
        for i in range(images):
            one_image(args, inputs[i % len(inputs)])
        wall = time.perf_counter() - start
        if run >= args.warmup:
            rates.append(images / wall)
    result = {
        "benchmark": "augment_pil",
        "view": "decode" if args.decode_only else args.view,
        "source": args.source,
        "size": args.size,
        "images": images,
        "threads": 1,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "pillow": PIL.__version__,
        "images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
    }
    if args.json:
        print(json.dumps(result))
    else:
        r = result["images_per_s"]
        what = "decode only" if args.decode_only else f"{args.view} view"
        print(f"PIL {PIL.__version__} {what}, {args.source} {args.size}px, one thread: "
              f"{r['median']:.0f} images/s ({r['min']:.0f}..{r['max']:.0f}), "
              f"median of {args.repeats} after {args.warmup} warm-up, {images} images/run")


# ---- the recordings hard-coded in stages/tests/augment_ops.rs ----

def record():
    a = np.zeros((5, 6, 3), np.uint8)
    for y in range(5):
        for x in range(6):
            for c in range(3):
                a[y, x, c] = (x * 97 + y * 57 + c * 31 + x * y * 13) % 256
    img = Image.fromarray(a, "RGB")
    outs = {
        "ROTATE_M30": img.rotate(-30, fillcolor=FILL),
        "ROTATE_21": img.rotate(21, fillcolor=FILL),
        "SHEAR_X_027": img.transform(img.size, Image.AFFINE, (1, 0.27, 0, 0, 1, 0), fillcolor=FILL),
        "SHEAR_Y_M012": img.transform(img.size, Image.AFFINE, (1, 0, 0, -0.12, 1, 0), fillcolor=FILL),
        "AUTOCONTRAST": PIL.ImageOps.autocontrast(img),
        "SHARPNESS_05": PIL.ImageEnhance.Sharpness(img).enhance(0.5),
        "COLOR_041": PIL.ImageEnhance.Color(img).enhance(0.41),
        "CONTRAST_032": PIL.ImageEnhance.Contrast(img).enhance(0.32),
        "BRIGHTNESS_086": PIL.ImageEnhance.Brightness(img).enhance(0.86),
        # RandomResizedCrop's crop-then-resize: box (left 1, top 1, 4 x 3) to 3 x 5
        "RESIZED_CROP": img.crop((1, 1, 5, 4)).resize((3, 5), Image.BILINEAR),
        # The ImageNet evaluation transform, Resize(int(size / f)) + CenterCrop(size), as
        # torchvision runs it on a PIL image (`data.fit = "center-crop"`). size 2, f 0.6:
        # Resize(3) makes 5x6 3x3 (int(3 * 6 / 5) = 3), the crop starts at round(0.5) = 0.
        "CENTER_CROP_2_06": img.resize((3, 3), Image.BILINEAR).crop((0, 0, 2, 2)),
        # size 8, f 0.875: Resize(9) makes it 9x10 (int(9 * 6 / 5) = 10), the crop starts at
        # round(0.5) = 0 down and round(1) = 1 across.
        "CENTER_CROP_8_0875": img.resize((10, 9), Image.BILINEAR).crop((1, 0, 9, 8)),
    }
    for name, out in outs.items():
        data = list(out.tobytes())
        print(f"const {name}: [u8; {len(data)}] = {data};")


def record_jpeg(out_dir):
    """Small JPEGs of the kinds photos come in, and what Pillow decodes them to.

    Each NAME.jpg gets NAME.rgb: `Image.open(NAME.jpg).convert("RGB")` as raw bytes (HWC),
    the pixels torchvision's `pil_loader` hands to the transforms. Odd sizes cover partial
    MCUs at the right and bottom edges.
    """
    os.makedirs(out_dir, exist_ok=True)
    h, w = 13, 21
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 11 + yy * 3) % 256, (yy * 17 + xx * xx) % 256, (xx * yy * 5 + 40) % 256], -1)
    cases = {
        "rgb420": (Image.fromarray(rgb.astype(np.uint8), "RGB"), dict(quality=80, subsampling=2)),
        "rgb444": (Image.fromarray(rgb.astype(np.uint8), "RGB"), dict(quality=90, subsampling=0)),
        "progressive": (Image.fromarray(rgb.astype(np.uint8), "RGB"), dict(quality=75, progressive=True)),
        "gray": (Image.fromarray(rgb[:, :, 1].astype(np.uint8), "L"), dict(quality=85)),
        "cmyk": (Image.fromarray(np.dstack([rgb, rgb[:, :, :1] // 2]).astype(np.uint8), "CMYK"), dict(quality=90)),
    }
    for name, (img, options) in cases.items():
        path = os.path.join(out_dir, name + ".jpg")
        img.save(path, "JPEG", **options)
        decoded = Image.open(path).convert("RGB")
        with open(os.path.join(out_dir, name + ".rgb"), "wb") as f:
            f.write(decoded.tobytes())
        print(f"{path}: {decoded.size[0]}x{decoded.size[1]}, {os.path.getsize(path)} bytes")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "record":
        return record()
    if len(sys.argv) > 2 and sys.argv[1] == "record-jpeg":
        return record_jpeg(sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--view", choices=["weak", "strong", "both"], default="strong",
                   help="both: weak + strong view of each sample from one decode (rates count samples)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--source", choices=["synthetic", "jpeg"], default="synthetic")
    p.add_argument("--data", help="directory of images (synthetic: decoded once; jpeg: decoded per image)")
    p.add_argument("--write-jpegs", help="jpeg source without --data: also write the 64 synthetic "
                   "(4:2:0) JPEGs here, to run `protocon bench augment --data` on the same files")
    p.add_argument("--decode-only", action="store_true",
                   help="jpeg source: time Image.open(...).convert('RGB') alone (no view)")
    p.add_argument("--images", type=int, default=0, help="images per run (default 20000, jpeg 1000)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    bench(p.parse_args())


if __name__ == "__main__":
    main()
