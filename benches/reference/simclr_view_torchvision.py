#!/usr/bin/env python3
"""torchvision baseline for the SimCLR-style strong view at 224 px, one thread: what a PyTorch user
writes for ProtoCon's large-image strong view (protocon.md s.2), on the same JPEG files as
`protocon bench augment --source jpeg --size 224 --view strong --config C`, with C's chain
`[{ name = "random_resized_crop", size = 224 }, "simclr"]`:

    Image.open(f).convert("RGB"), RandomResizedCrop(224), RandomHorizontalFlip(),
    RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), RandomGrayscale(0.2),
    RandomApply([GaussianBlur(23, (0.1, 2.0))], p=0.5), RandomSolarize(128, p=0.3)

on PIL images (torchvision converts to a tensor only for the blur). Warm-up runs, then the median
(and min..max) of images/s over the timed runs.

    /tmp/torchenv/bin/python benches/reference/simclr_view_torchvision.py --data /tmp/jpegs420 --images 500
"""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms as T


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    files = sorted(os.path.join(a.data, f) for f in os.listdir(a.data) if f.lower().endswith((".jpg", ".jpeg")))
    if not files:
        raise SystemExit(f"no JPEG files in {a.data}")
    view = T.Compose([
        T.RandomResizedCrop(224),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        T.RandomGrayscale(0.2),
        T.RandomApply([T.GaussianBlur(23, (0.1, 2.0))], p=0.5),
        T.RandomSolarize(128, p=0.3),
    ])
    torch.manual_seed(0)
    rates = []
    for r in range(a.warmup + a.repeats):
        t0 = time.perf_counter()
        for i in range(a.images):
            with open(files[i % len(files)], "rb") as f:
                img = Image.open(f).convert("RGB")
            view(img)
        rate = a.images / (time.perf_counter() - t0)
        if r >= a.warmup:
            rates.append(rate)
    out = {"benchmark": "simclr-view-torchvision", "torchvision": torchvision.__version__, "images": a.images,
           "images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}}
    print(json.dumps(out) if a.json else f"torchvision {torchvision.__version__} SimCLR view at 224 px, 1 thread: "
          f"{out['images_per_s']['median']:.1f} images/s ({min(rates):.1f}..{max(rates):.1f})")


if __name__ == "__main__":
    main()
