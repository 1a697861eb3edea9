#!/usr/bin/env python3
"""PyTorch reference for `protocon bench step`: the same training step on the same shapes.

Models: `cnn-small` (the layers of src/model/cnn_small.rs) or FixMatch's Wide-ResNet-28-k (leaky-ReLU 0.1, BatchNorm momentum 0.001, activate_before_residual
in the first group; written from the paper's description), one forward over
[labeled ; unlabeled weak ; unlabeled strong] on random 32x32 inputs, cross-entropy on the labeled
part + masked cross-entropy on the strong view with hard pseudo-labels from the weak view
(threshold 0, so every sample contributes, as the Rust bench does), backward, SGD with Nesterov
momentum 0.9 and weight decay 5e-4 on weights only. Warm-up, then the median of the timed steps;
peak RSS from /proc/self/status (VmHWM).

Usage: python3 step_torch.py --model wrn-28-2 --labeled 16 --unlabeled 112 --threads 2 [--json]
       python3 step_torch.py --model resnet50 --labeled 4 --unlabeled 12 --size 224 --threads 2
       python3 step_torch.py --model cnn-small --labeled 8 --unlabeled 56 --threads 2
       python3 step_torch.py --model wrn-28-2 --labeled 64 --unlabeled 448 --device cuda
On a GPU (`--device cuda`) each phase is synchronised, and the peak of device memory in use
after a step (total - free, `torch.cuda.mem_get_info`, as `protocon bench step --device cuda:0`
reads it) is reported next to PyTorch's allocator peak.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride, activate_before_residual):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.abr = activate_before_residual

    def forward(self, x):
        a = F.leaky_relu(self.bn1(x), 0.1)
        if self.equal:
            branch, residual = a, x
        elif self.abr:
            branch, residual = a, self.shortcut(a)
        else:
            branch, residual = x, self.shortcut(x)
        h = F.leaky_relu(self.bn2(self.conv1(branch)), 0.1)
        return self.conv2(h) + residual


class WideResNet(nn.Module):
    def __init__(self, classes, depth=28, widen=2):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        blocks = []
        for g in range(3):
            for i in range(n):
                blocks.append(Block(w[g] if i == 0 else w[g + 1], w[g + 1], 2 if (i == 0 and g > 0) else 1, g == 0))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(w[3], momentum=0.001)
        self.fc = nn.Linear(w[3], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h = F.leaky_relu(self.bn(self.blocks(self.conv1(x))), 0.1)
        return self.fc(h.mean((2, 3)))


class CnnSmall(nn.Module):
    """src/model/cnn_small.rs: three stages of two (3x3 conv without bias, BatchNorm, leaky-ReLU
    0.1) with 32, 64 and 128 channels, 2x2 max-pool after the first two stages, global average
    pooling, then the linear classifier of src/model/mod.rs."""

    def __init__(self, classes, bn_momentum=0.001):
        super().__init__()
        layers, cin = [], 3
        for stage, width in enumerate((32, 64, 128)):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width, momentum=bn_momentum),
                           nn.LeakyReLU(0.1)]
                cin = width
            if stage < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def build_model(name, classes, bn_momentum=0.001):
    """`cnn-small`, `wrn-DEPTH-WIDTH` or `resnetN` (torchvision's), as `protocon bench step
    --model` spells them."""
    if name == "cnn-small":
        return CnnSmall(classes, bn_momentum)
    if name.startswith("resnet"):
        import torchvision
        return getattr(torchvision.models, name.replace("-", ""))(num_classes=classes)
    _, depth, widen = name.split("-")
    return WideResNet(classes, int(depth), int(widen))


def fixmatch_sgd(net):
    """Nesterov SGD, lr 0.03, momentum 0.9, weight decay 5e-4 on weights only (not on biases and
    BatchNorm parameters), as src/optim/sgd.rs trains."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=0.03, momentum=0.9, nesterov=True)


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="wrn-28-2")
    p.add_argument("--labeled", type=int, default=16)
    p.add_argument("--unlabeled", type=int, default=112)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    net = build_model(a.model, a.classes).to(dev)
    params = sum(p.numel() for p in net.parameters())
    opt = fixmatch_sgd(net)
    b, u = a.labeled, a.unlabeled
    x = torch.randn(b + 2 * u, 3, a.size, a.size, device=dev)
    y = torch.randint(0, a.classes, (b,), device=dev)
    in_use = 0
    net.train()
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = net(x)
        lx = F.cross_entropy(logits[:b], y)
        probs = torch.softmax(logits[b:b + u].detach(), -1)
        conf, pseudo = probs.max(-1)
        mask = (conf >= 0.0).float()
        lu = (F.cross_entropy(logits[b + u:], pseudo, reduction="none") * mask).mean()
        loss = lx + lu
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
            free, total = torch.cuda.mem_get_info(dev)
            in_use = max(in_use, total - free)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    images = b + 2 * u
    out = {"benchmark": "step-pytorch", "model": a.model, "labeled": b, "unlabeled": u, "threads": a.threads,
           "parameters": params, "torch": torch.__version__, "step_ms": med * 1e3, "step_ms_min": min(times) * 1e3,
           "step_ms_max": max(times) * 1e3, "images_per_s": images / med, "peak_rss_bytes": peak_rss_bytes(),
           "device": str(dev)}
    if cuda:
        out["peak_device_memory_bytes"] = in_use
        out["torch_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"PyTorch {torch.__version__} {a.model} ({params} parameters) {b}+{u}+{u}, {a.threads} threads: "
              f"{med * 1e3:.1f} ms/step ({min(times) * 1e3:.1f}..{max(times) * 1e3:.1f}), "
              f"{images / med:.1f} images/s, peak RSS {out['peak_rss_bytes'] / 1e9:.2f} GB")
        if cuda:
            print(f"device memory in use after a step (total - free, peak): {in_use / 1e9:.2f} GB; "
                  f"allocator peak {out['torch_max_memory_allocated_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
