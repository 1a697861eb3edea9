#!/usr/bin/env python3
"""The FixMatch training loop a PyTorch user runs today, for `protocon train`'s end-to-end
comparison (`compare_train.sh`): the same data, split, model, batch, optimizer, schedule, EMA,
evaluation and checkpoint cadence as `configs/fashion-mnist-40.toml`.

- Data: Fashion-MNIST's idx files, 28x28 grey padded (centred, black) to 32x32 and copied to 3
  channels, normalised by the training images' per-channel mean and std; the labeled images
  from a `protocon data split` file (or 4 per class drawn from `--seed`), every other training
  image unlabeled.
- Views, in PIL as torchvision's transforms do them (the functions of randaugment_pil.py): weak =
  reflect-pad crop + horizontal flip; strong = crop, RandAugment (FixMatch's pool, n 2, p 0.5),
  flip, Cutout.
- Loading: two `DataLoader`s with worker processes (labeled: batch 8; unlabeled: batch 56 of
  (weak, strong) pairs), sampled with replacement / reshuffled, as FixMatch's code does.
- Model: cnn-small (step_torch.py), BatchNorm momentum 0.01, the linear classifier.
- Step: cross-entropy on the labeled batch + masked cross-entropy of the strong view against the
  weak view's hard pseudo-labels (threshold 0.95, lambda_u 1), one forward over the
  concatenation, Nesterov SGD (lr 0.03, momentum 0.9, weight decay 5e-4 on weights only), the
  cosine schedule cos(7 pi k / 16 K), EMA 0.99 of the parameters with buffers copied.
- Every 100 steps and at the end: test accuracy of the raw and the EMA model on the 10,000 test
  images (normalised once at the start; batches of 500), and a checkpoint (`torch.save` of model, EMA and optimizer).

Prints one line per evaluation and, at the end, the wall time from the start of the script.

Usage: python3 train_torch.py --data DIR [--split SPLIT.json] --steps 300 --threads 2 --workers 2
"""
import argparse
import gzip
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from randaugment_pil import cutout, flip, randaugment, reflect_crop  # noqa: E402
from step_torch import build_model, fixmatch_sgd  # noqa: E402


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(d, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    sys.exit(f"{d}: no {stem}[.gz]")


def load(d):
    images = read_idx(find(d, "train-images-idx3-ubyte"))
    labels = read_idx(find(d, "train-labels-idx1-ubyte")).astype(np.int64)
    test_images = read_idx(find(d, "t10k-images-idx3-ubyte"))
    test_labels = read_idx(find(d, "t10k-labels-idx1-ubyte")).astype(np.int64)
    pad = lambda a: np.repeat(np.pad(a, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)  # N x 32 x 32 x 3
    return pad(images), labels, pad(test_images), test_labels


class Normalize:
    def __init__(self, images):
        # Per-channel mean and std of the pixels in [0, 1], from each channel's histogram.
        mean, std = [], []
        for c in range(images.shape[-1]):
            counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
            v = np.arange(256) / 255.0
            m = (counts * v).sum() / counts.sum()
            mean.append(m)
            std.append(math.sqrt((counts * (v - m) ** 2).sum() / counts.sum()))
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)

    def __call__(self, img):
        a = (np.asarray(img, dtype=np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(a.transpose(2, 0, 1).copy())


def weak(img):
    return flip(reflect_crop(img, 4))


def strong(img):
    return cutout(flip(randaugment(reflect_crop(img, 4))), 16)


class Labeled(torch.utils.data.Dataset):
    def __init__(self, images, labels, norm):
        self.images, self.labels, self.norm = images, labels, norm

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.norm(weak(Image.fromarray(self.images[i]))), self.labels[i]


class Unlabeled(torch.utils.data.Dataset):
    def __init__(self, images, norm):
        self.images, self.norm = images, norm

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return self.norm(weak(img)), self.norm(strong(img))


def seed_worker(worker_id):
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def forever(loader):
    while True:
        yield from loader


@torch.no_grad()
def evaluate(net, x, labels):
    net.eval()
    correct = sum((net(x[i:i + 500]).argmax(-1) == labels[i:i + 500]).sum().item() for i in range(0, len(x), 500))
    net.train()
    return correct / len(x)


def main():
    start = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--split", help="a `protocon data split` file")
    p.add_argument("--labels-per-class", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--labeled-batch", type=int, default=8)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="worker processes of the unlabeled loader (the labeled one has 1)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--out", default="/tmp/train_torch")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)

    images, labels, test_images, test_labels = load(a.data)
    if a.split:
        with open(a.split) as f:
            labeled = np.array(json.load(f)["labeled"], dtype=np.int64)
    else:
        rng = np.random.default_rng(a.seed)
        labeled = np.concatenate([rng.choice(np.flatnonzero(labels == c), a.labels_per_class, replace=False)
                                  for c in range(int(labels.max()) + 1)])
    unlabeled = np.setdiff1d(np.arange(len(images)), labeled)
    norm = Normalize(images)
    # The test set normalised once, as a tensor (the cheapest way a user would evaluate).
    test_x = (torch.from_numpy(test_images).float() / 255.0 - torch.from_numpy(norm.mean)) / torch.from_numpy(norm.std)
    test_x, test_y = test_x.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(test_labels)
    b, u = a.labeled_batch, a.labeled_batch * a.mu
    gen = torch.Generator().manual_seed(a.seed)
    lab_loader = torch.utils.data.DataLoader(
        Labeled(images[labeled], labels[labeled], norm), batch_size=b, num_workers=1, drop_last=True,
        sampler=torch.utils.data.RandomSampler(range(len(labeled)), replacement=True, num_samples=a.steps * b, generator=gen),
        worker_init_fn=seed_worker, persistent_workers=True)
    unl_loader = torch.utils.data.DataLoader(
        Unlabeled(images[unlabeled], norm), batch_size=u, shuffle=True, num_workers=a.workers, drop_last=True,
        worker_init_fn=seed_worker, persistent_workers=True, generator=gen)

    net = build_model("cnn-small", 10, bn_momentum=0.01)
    ema = build_model("cnn-small", 10, bn_momentum=0.01)
    ema.load_state_dict(net.state_dict())
    for q in ema.parameters():
        q.requires_grad_(False)
    opt = fixmatch_sgd(net)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: max(0.0, math.cos(7 * math.pi * k / (16 * a.steps))))
    os.makedirs(a.out, exist_ok=True)
    net.train()
    ema.train()
    lab_iter, unl_iter = iter(lab_loader), forever(unl_loader)
    for step in range(a.steps):
        x, y = next(lab_iter)
        xw, xs = next(unl_iter)
        logits = net(torch.cat([x, xw, xs]))
        lx = F.cross_entropy(logits[:b], y)
        conf, pseudo = torch.softmax(logits[b:b + u].detach(), -1).max(-1)
        mask = (conf >= 0.95).float()
        lu = (F.cross_entropy(logits[b + u:], pseudo, reduction="none") * mask).mean()
        loss = lx + lu
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for e, m in zip(ema.parameters(), net.parameters()):
                e.mul_(0.99).add_(m.detach(), alpha=0.01)
            for e, m in zip(ema.buffers(), net.buffers()):
                e.copy_(m)
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            raw, avg = evaluate(net, test_x, test_y), evaluate(ema, test_x, test_y)
            tmp = os.path.join(a.out, "checkpoint.pt.tmp")
            torch.save({"model": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step + 1}, tmp)
            os.replace(tmp, os.path.join(a.out, "checkpoint.pt"))
            print(f"step {step + 1}: loss {loss.item():.4f}, mask {mask.mean().item():.2f}, test accuracy {100 * raw:.2f}% "
                  f"(EMA {100 * avg:.2f}%), {time.perf_counter() - start:.1f} s", flush=True)
    print(f"PyTorch {torch.__version__}: {a.steps} steps in {time.perf_counter() - start:.1f} s wall "
          f"({a.threads} threads, {a.workers} + 1 loader workers)")


if __name__ == "__main__":
    main()
