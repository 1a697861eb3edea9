"""Records torchvision's functional transforms on PIL images for stages/tests/simclr_torchvision.rs:
each op of the SimCLR-style strong view (`stages/src/augment/simclr.rs`) at fixed parameters,
and a whole sequence in a fixed order, on three 24 x 18 patches of a real photograph.

The photograph is `f3.jpg` of the Rust Embedded Book (rustup ships it under
share/doc/rust/html/embedded-book/assets/; MIT / Apache-2.0). The patches' pixels go into the
fixture, so the test does not need the file.

    /tmp/torchenv/bin/python benches/reference/simclr_torchvision.py PHOTO stages/tests/fixtures/simclr_torchvision.json
"""
import json
import sys

import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

W, H = 24, 18
PATCHES = [(300, 200), (100, 60), (520, 330)]  # top-left corners in the 720 x 477 photo

# (name, parameters): the ops as RandomApply(ColorJitter), RandomGrayscale, GaussianBlur and
# RandomSolarize call them on PIL images.
OPS = [
    ("brightness", 0.2), ("brightness", 0.75), ("brightness", 1.6),
    ("contrast", 0.2), ("contrast", 0.75), ("contrast", 1.6),
    ("saturation", 0.2), ("saturation", 0.75), ("saturation", 1.6),
    ("hue", -0.2), ("hue", -0.05), ("hue", 0.13),
    ("grayscale", None),
    ("blur", [3, 0.1]), ("blur", [5, 1.0]), ("blur", [9, 2.0]), ("blur", [9, 0.6]),
    ("solarize", 128),
]
# One SimCLR view's worth of ops in a non-default order (the jitter's order is random).
SEQUENCE = [("saturation", 1.4), ("hue", 0.1), ("contrast", 0.7), ("brightness", 1.2), ("grayscale", None),
            ("blur", [3, 1.3]), ("solarize", 128)]


def apply(img, name, p):
    if name == "brightness":
        return TF.adjust_brightness(img, p)
    if name == "contrast":
        return TF.adjust_contrast(img, p)
    if name == "saturation":
        return TF.adjust_saturation(img, p)
    if name == "hue":
        return TF.adjust_hue(img, p)
    if name == "grayscale":
        return TF.rgb_to_grayscale(img, num_output_channels=3)
    if name == "blur":
        return TF.gaussian_blur(img, kernel_size=p[0], sigma=p[1])
    if name == "solarize":
        return TF.solarize(img, p)
    raise ValueError(name)


def main():
    photo = Image.open(sys.argv[1]).convert("RGB")
    cases = []
    for x, y in PATCHES:
        patch = photo.crop((x, y, x + W, y + H))
        entry = {"at": [x, y], "pixels": patch.tobytes().hex(), "ops": []}
        for name, p in OPS:
            entry["ops"].append({"op": name, "param": p, "output": apply(patch, name, p).convert("RGB").tobytes().hex()})
        img = patch
        for name, p in SEQUENCE:
            img = apply(img, name, p)
        entry["sequence"] = img.convert("RGB").tobytes().hex()
        cases.append(entry)
    out = {"torchvision": torchvision.__version__, "pillow": Image.__version__, "width": W, "height": H,
           "sequence": [{"op": n, "param": p} for n, p in SEQUENCE], "patches": cases}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
