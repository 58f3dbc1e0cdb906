"""The PyTorch side of `python -m benchmarks.gpu`, in its own process (and its own Python when
PyTorch lives elsewhere). One JSON request per line on stdin, one JSON answer per line on stdout:

    {"op": "info"}                                      -> {"version", "device", "cuda"}
    {"op": "matmul", "n": 8192, "reps": 10}             -> {"tflops": bf16 matmul rate}
    {"op": "build", "workload": {...}, "mode": "eager"} -> {"params", "compile_s"} (kept)
    {"op": "time", "mode": "eager", "steps": n}         -> {"seconds": [...], "peak_bytes"}
    {"op": "free"}                                      -> {} (drops the built models)

Same architectures as cnnlab's (the caller compares parameter counts): torchvision's ResNet-50
and MobileNetV2 for the ImageNet rows, the CIFAR ResNet of benchmarks/torch_worker.py for the
others. bf16 autocast, channels_last, SGD with momentum, train mode; mode 'eager' or 'compile'
(`torch.compile`, its first steps timed as compile time).
"""

import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from torch_worker import CifarResNet

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def import_torchvision():
    """torchvision; where its compiled ops do not match the installed torch (a CUDA torchvision
    wheel beside a CPU torch: 'operator torchvision::nms does not exist'), its models, which
    are plain Python, are still usable once the ops' fake registrations are skipped."""
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        torch.library.register_fake = lambda *a, **k: lambda f: f
        import torchvision
    return torchvision


def build(w):
    torchvision = import_torchvision()

    if w["model"] == "resnet50":
        return torchvision.models.resnet50(num_classes=w["num_classes"])
    if w["model"] == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(num_classes=w["num_classes"])
    return CifarResNet(w["depth"], w["num_classes"])


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Bench:
    def __init__(self, w, mode):
        torch.manual_seed(0)
        model = build(w).to(DEVICE).train().to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in model.parameters())
        self.x = torch.randn(w["batch"], 3, w["size"], w["size"], device=DEVICE).to(
            memory_format=torch.channels_last
        )
        self.y = torch.randint(0, w["num_classes"], (w["batch"],), device=DEVICE)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.model = torch.compile(model) if mode == "compile" else model
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(2):  # compiles (mode 'compile') and warms the allocator and kernels
            self.step()
        sync()
        self.compile_s = time.perf_counter() - t

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()


def matmul_tflops(n, reps):
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    a @ a
    sync()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ a
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e12


def main():
    benches = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "info":
                name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
                out = {"version": torch.__version__, "device": DEVICE, "name": name}
            elif req["op"] == "matmul":
                out = {"tflops": matmul_tflops(req["n"], req["reps"])}
            elif req["op"] == "build":
                benches[req["mode"]] = bench = Bench(req["workload"], req["mode"])
                out = {"params": bench.params, "compile_s": bench.compile_s}
            elif req["op"] == "time":
                bench = benches[req["mode"]]
                if DEVICE == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(req["steps"]):
                    t = time.perf_counter()
                    bench.step()
                    sync()
                    times.append(time.perf_counter() - t)
                peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else None
                out = {"seconds": times, "peak_bytes": peak}
            elif req["op"] == "free":
                benches.clear()
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
                out = {}
            else:
                out = {"error": f"unknown op {req['op']}"}
        except Exception as e:  # answer, so that the caller can record the row as failed
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
