"""Records torchvision's ResNet-18 and ResNet-50 on a fixed small batch, for tests/model_resnet.rs.

Weights come from a formula both sides evaluate (no weight file: ResNet-50 is 100 MB), so the
fixture is only the recorded outputs: value = offset + scale * sqrt(2) * sin(12.9898 * i + phase)
for element i (row-major) of parameter p, phase = 0.7 * p in torchvision's parameter order, and
the same formula (phase 0.3) for the input batch. One training-mode forward pass (batch
statistics, BatchNorm momentum 0.1), cross-entropy against fixed labels, backward; recorded: the
logits, the loss, per parameter its gradient's sum, sum of absolute values, largest absolute
value and four sampled elements, and the first BatchNorm's running statistics after the pass.

In float64 on both sides: with a batch of 2 at 64 px the last stage's BatchNorm normalises over
8 values per channel, which amplifies rounding so much that two correct f32 implementations
(ours with the fused kernels and with candle's stock ops) differ by 5% in the logits; in f64
the comparison measures the maths.

    /tmp/torchenv/bin/python benches/reference/resnet_fixture.py tests/fixtures/resnet
"""
import json
import math
import pathlib
import sys

import torch
import torchvision

torch.set_num_threads(2)
CLASSES, BATCH, SIZE, LABELS = 10, 2, 64, [1, 7]


def formula(n, phase, scale, offset=0.0):
    i = torch.arange(n, dtype=torch.float64)
    return offset + scale * math.sqrt(2.0) * torch.sin(12.9898 * i + phase)


def init_rule(name, p):
    """(scale, offset) of a parameter: He-like for weights, near 1 / near 0 for BatchNorm."""
    if name.endswith("bias"):
        return 0.1, 0.0
    if p.dim() == 1:  # BatchNorm scale
        return 0.1, 1.0
    fan_in = p[0].numel()
    return math.sqrt(2.0 / fan_in) if p.dim() == 4 else math.sqrt(1.0 / fan_in), 0.0


def record(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=CLASSES).double()
    model.train()
    params = []
    with torch.no_grad():
        for index, (name, p) in enumerate(model.named_parameters()):
            scale, offset = init_rule(name, p)
            phase = 0.7 * index
            p.copy_(formula(p.numel(), phase, scale, offset).reshape(p.shape))
            params.append({"name": name, "shape": list(p.shape), "phase": phase, "scale": scale, "offset": offset})
    x = formula(BATCH * 3 * SIZE * SIZE, 0.3, 1.0).reshape(BATCH, 3, SIZE, SIZE)
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS))
    loss.backward()
    named = dict(model.named_parameters())
    for entry in params:
        g = named[entry["name"]].grad.detach().double().flatten()
        n = g.numel()
        picks = sorted({0, n // 3, 2 * n // 3, n - 1})
        entry["grad"] = {
            "sum": g.sum().item(),
            "abs_sum": g.abs().sum().item(),
            "max_abs": g.abs().max().item(),
            "at": picks,
            "values": [g[i].item() for i in picks],
        }
    return {
        "arch": arch,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "classes": CLASSES,
        "input": {"shape": [BATCH, 3, SIZE, SIZE], "phase": 0.3, "scale": 1.0},
        "labels": LABELS,
        "bn_momentum": 0.1,
        "logits": logits.detach().double().tolist(),
        "loss": loss.item(),
        "bn1_running_mean": model.bn1.running_mean.double().tolist(),
        "bn1_running_var": model.bn1.running_var.double().tolist(),
        "params": params,
    }


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/resnet")
    out.mkdir(parents=True, exist_ok=True)
    for arch in ["resnet18", "resnet50"]:
        r = record(arch)
        (out / f"{arch}.json").write_text(json.dumps(r, indent=1) + "\n")
        print(arch, "loss", r["loss"], "params", len(r["params"]))
