"""The PyTorch side of `python -m benchmarks.vs_torch`, run in its own Python (PyTorch's CPU
wheel exists for Python 3.11 here, cnnlab needs >= 3.12). Reads one JSON request per line on
stdin, answers one JSON line on stdout:

    {"op": "build", "workload": {...}}        -> {"params": n}
    {"op": "time", "steps": n}                -> {"seconds": [per-step wall times]}
    {"op": "matmul", "n": 2048, "reps": 10}   -> {"gflops": measured f32 matmul rate}

Same architectures as cnnlab's (parameter counts are compared by the caller), NCHW (PyTorch's
fast layout on CPU), train mode, SGD with momentum, forward + loss + backward + update per step.
"""

import json
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # = flax momentum 0.9


class Basic(nn.Module):
    """CIFAR basic block, option A shortcut (strided subsample + zero channels)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = bn(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        s = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
        return F.relu(y + s)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, width=16):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), bn(width), nn.ReLU())
        blocks, cin = [], width
        for i in range(3):
            cout = width * 2**i
            for j in range(n):
                blocks.append(Basic(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), bn(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        mid = cin * t
        layers = [conv_bn(cin, mid, 1)] if t != 1 else []
        layers += [conv_bn(mid, mid, 3, stride, groups=mid), conv_bn(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


class MobileNetV2(nn.Module):
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in self.STAGES:
            for j in range(n):
                layers.append(Inverted(cin, c, s if j == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.head(self.dropout(self.features(x).mean((2, 3))))


class Layer(nn.Module):
    """One conv layer of a kind + ReLU + global pool + linear head (so there is a loss to train)."""

    def __init__(self, kind, c, num_classes=10):
        super().__init__()
        if kind == "standard":
            self.body = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        elif kind == "depthwise":
            self.body = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        elif kind == "separable":
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
                                      nn.Conv2d(c, c, 1, bias=False))  # fmt: skip
        elif kind == "spatial_separable":
            self.body = nn.Sequential(nn.Conv2d(c, c, (3, 1), 1, (1, 0), bias=False),
                                      nn.Conv2d(c, c, (1, 3), 1, (0, 1), bias=False))  # fmt: skip
        else:
            raise ValueError(kind)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)).mean((2, 3)))


def build(w):
    kind = w["model"]
    if kind == "cifar_resnet":
        return CifarResNet(w["depth"], w["num_classes"])
    if kind == "mobilenet_v2":
        return MobileNetV2(w["num_classes"])
    return Layer(w["layer"], w["channels"], w["num_classes"])


class Bench:
    def __init__(self, w):
        torch.manual_seed(0)
        self.model = build(w).train()
        b, h, c = w["batch"], w["size"], w["in_channels"]
        self.x = torch.randn(b, c, h, h)
        self.y = torch.randint(0, w["num_classes"], (b,))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)  # fmt: skip

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()


def matmul_gflops(n, reps):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):  # the best single call: the machine's limit, not its noise
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main():
    bench = None
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "build":
            bench = Bench(req["workload"])
            bench.step()  # warm-up: allocator, kernels
            out = {"params": sum(p.numel() for p in bench.model.parameters()),
                   "threads": torch.get_num_threads(), "version": torch.__version__}  # fmt: skip
        elif req["op"] == "time":
            times = []
            for _ in range(req["steps"]):
                t = time.perf_counter()
                bench.step()
                times.append(time.perf_counter() - t)
            out = {"seconds": times}
        elif req["op"] == "matmul":
            out = {"gflops": matmul_gflops(req["n"], req["reps"])}
        else:
            out = {"error": f"unknown op {req['op']}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
