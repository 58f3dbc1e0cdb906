"""cnnlab against PyTorch and against the machine: train-step throughput, side by side in one run.

    ./run python -m benchmarks.vs_torch [--workloads=resnet20,conv_depthwise] [--rounds=5]

For each workload (same architecture, batch and input size on both sides; parameter counts are
compared) it times full train steps (forward, cross-entropy, backward, SGD-momentum update) of
cnnlab (jit, donated state) and of PyTorch eager (CPU build, NCHW, its own Python: see
benchmarks/README.md), interleaved A B A B over rounds, and reports medians: images/s, the
cnnlab/PyTorch ratio, cnnlab's achieved GFLOP/s (XLA's FLOP count of the step / time) against
the machine's measured f32 matmul peak (MFU), and compile times. It also compiles CIFAR ResNets
of growing depth to show compile time against depth. Results go to WORKDIR/results.json and
results.md (default runs/vs_torch). On a GPU or TPU the PyTorch side is skipped.
"""

import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

import cnnlab
from benchmarks.timing import Worker, step_flops, time_steps
from cnnlab import layers as L
from cnnlab import models, train

WORKLOADS = {
    "resnet20": dict(model="cifar_resnet", depth=20, batch=128, size=32, num_classes=10),
    "resnet56": dict(model="cifar_resnet", depth=56, batch=128, size=32, num_classes=10),
    "mobilenet_v2_32": dict(model="mobilenet_v2", batch=64, size=32, num_classes=10),
    "mobilenet_v2_224": dict(model="mobilenet_v2", batch=8, size=224, num_classes=1000),
    **{
        f"conv_{k}": dict(model="layer", layer=k, channels=64, batch=32, size=32, num_classes=10)
        for k in ("standard", "depthwise", "separable", "spatial_separable")
    },
}
COMPILE_DEPTHS = (8, 20, 56, 110)

_WORKLOADS = flags.DEFINE_list("workloads", list(WORKLOADS), "Workloads to run.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds (cnnlab, PyTorch) per workload.")
_STEPS = flags.DEFINE_integer("steps", 5, "Train steps per side per round.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/vs_torch", "Where results go.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python",
    os.environ.get("TORCH_PYTHON", ".venv-torch/bin/python"),
    "Python with PyTorch for the other side ('' to skip it).",
)
_COMPILE_DEPTHS = flags.DEFINE_list("compile_depths", list(map(str, COMPILE_DEPTHS)), "")


class LayerNet(nn.Module):
    """One conv layer of a kind + ReLU + global pool + dense head: a loss to train one layer.

    The ReLU makes the layer's output gradient vary over space, as it does inside a network
    (straight into a mean pool, XLA folds the pool into the layer and materialises its taps).
    """

    layer: str
    channels: int
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = self.channels
        body = {
            "standard": lambda: L.Conv(c, 3, use_bias=False),
            "depthwise": lambda: L.DepthwiseConv(3, use_bias=False),
            "separable": lambda: L.SeparableConv(c, 3, use_bias=False),
            "spatial_separable": lambda: L.SpatialSeparableConv(c, 3, use_bias=False),
        }[self.layer]()
        return nn.Dense(self.num_classes)(nn.relu(body(x)).mean((1, 2))), {}


def in_channels(w: dict) -> int:
    return w["channels"] if w["model"] == "layer" else 3


def build_model(w: dict):
    if w["model"] == "layer":
        return LayerNet(w["layer"], w["channels"], w["num_classes"])
    kwargs = {"depth": w["depth"]} if "depth" in w else {}
    return models.create(w["model"], num_classes=w["num_classes"], **kwargs)


class JaxSide:
    """cnnlab's train step for one workload, compiled ahead of time."""

    def __init__(self, w: dict):
        model = build_model(w)
        x = jax.random.normal(jax.random.key(0), (w["batch"], w["size"], w["size"], in_channels(w)))
        self.batch = {"image": x, "label": jnp.arange(w["batch"]) % w["num_classes"]}
        variables = jax.jit(model.init)(jax.random.key(1), x[:1])
        tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.01, momentum=0.9))
        self.state = train.TrainState.create(model.apply, variables, tx)
        self.params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
        step = jax.jit(
            functools.partial(train.train_step, cfg=train.StepConfig()), donate_argnums=0
        )
        rng = jax.random.key(2)
        t = time.perf_counter()
        self.step = step.lower(self.state, self.batch, rng).compile()
        self.compile_s = time.perf_counter() - t
        self.flops = step_flops(step, self.state, self.batch, rng)
        self.rng = rng
        self.run(2)  # warm-up

    def run(self, steps: int) -> list[float]:
        self.state, times = time_steps(self.step, self.state, self.batch, self.rng, steps)
        return times


def TorchSide(python: str) -> Worker:
    """A PyTorch worker process (benchmarks/torch_worker.py) in its own Python."""
    return Worker(python, Path(__file__).with_name("torch_worker.py"))


def matmul_size() -> int:
    """2048³ on a CPU; 8192³ on an accelerator, where a 2048³ product is over in microseconds."""
    return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_peak_gflops(n: int, reps: int = 10) -> float:
    """This machine's f32 matmul rate through XLA at default precision (TF32 on NVIDIA GPUs).

    The best of `reps` timings of one call on a CPU; on an accelerator `reps` calls are queued
    back to back and timed together (one call alone would time the dispatch), best of 3.
    """
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    calls, tries = (1, reps) if jax.default_backend() == "cpu" else (reps, 3)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        jax.block_until_ready([f(a) for _ in range(calls)])
        best = min(best, (time.perf_counter() - t) / calls)
    return 2 * n**3 / best / 1e9


def peak_gflops(results: dict) -> float:
    """The practical FLOP limit: the faster of XLA's and PyTorch's measured f32 matmul."""
    return max(results["matmul_peak_gflops"], results.get("torch_matmul_gflops") or 0)


def compile_vs_depth(depths) -> dict[int, float]:
    out = {}
    for d in depths:
        w = dict(WORKLOADS["resnet20"], depth=int(d), batch=32)
        out[int(d)] = JaxSide(w).compile_s
    return out


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def report(results: dict) -> str:
    peak = peak_gflops(results)
    lines = [
        f"Machine: {results['device']}; f32 matmul ({results['matmul_n']}^3, best): "
        f"XLA {results['matmul_peak_gflops']:.1f} GFLOP/s"
        + (
            f", PyTorch {results['torch_matmul_gflops']:.1f} GFLOP/s ({results['torch']})"
            if results.get("torch_matmul_gflops")
            else ""
        )
        + f"; peak = the faster, {peak:.1f} GFLOP/s. MFU = cnnlab GFLOP/s / peak, where the"
        " FLOPs are XLA's count for the train step (as lowered, before optimisation).",
        "",
        "| workload | batch x size | params | cnnlab img/s | PyTorch img/s | cnnlab / PyTorch "
        "| cnnlab GFLOP/s | MFU | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["workloads"].items():
        lines.append(
            f"| {name} | {r['batch']} x {r['size']}² | {r['params']:,} | {r['cnnlab_img_s']:.0f} "
            f"| {fmt(r.get('torch_img_s'), '.0f')} | {fmt(r.get('ratio'), '.2f')} "
            f"| {r['gflops']:.1f} | {100 * r['gflops'] / peak:.1f}% | {r['compile_s']:.1f} |"
        )
    layers = {k[5:]: v for k, v in results["workloads"].items() if k.startswith("conv_")}
    if "standard" in layers:
        base = layers["standard"]
        lines += ["", "Single layers, speed-up over the standard 3x3 conv they replace "
                  "(train step, layer + pool + head):", "",
                  "| layer | MAC ratio (standard / layer) | cnnlab speed-up | PyTorch speed-up |",
                  "|---|---|---|---|"]  # fmt: skip
        for k, r in layers.items():
            su = base["cnnlab_s"] / r["cnnlab_s"]
            tsu = base["torch_s"] / r["torch_s"] if r.get("torch_s") else None
            mac_ratio = base["layer_macs"] / r["layer_macs"]
            lines.append(f"| {k} | {mac_ratio:.1f} | {su:.2f} | {fmt(tsu, '.2f')} |")
    depth = results.get("compile_vs_depth")
    if depth:
        lines += [
            "",
            "Compile time of the CIFAR ResNet train step against depth (batch 32):",
            "",
            "| depth | " + " | ".join(map(str, depth)) + " |",
            "|---" * (len(depth) + 1) + "|",
            "| compile s | " + " | ".join(f"{s:.1f}" for s in depth.values()) + " |",
        ]
    return "\n".join(lines)


def layer_macs(w: dict) -> int:
    """MACs of the conv layer alone (cnnlab.summary), for the theoretical speed-up."""
    model = build_model(w)
    x = jnp.zeros((1, w["size"], w["size"], in_channels(w)))
    s = cnnlab.summary(model, x)
    return sum(r.macs or 0 for r in s.rows if r.kind != "Dense")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    jax.config.update("jax_threefry_partitionable", False)
    unknown = sorted(set(_WORKLOADS.value) - set(WORKLOADS))
    if unknown:
        sys.exit(f"error: --workloads has {unknown}; choose from {sorted(WORKLOADS)}")
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    torch = None
    if jax.default_backend() != "cpu":
        print(f"note: cnnlab runs on {jax.default_backend()}; the PyTorch side (a CPU build) is "
              "skipped and the table reports cnnlab's MFU")  # fmt: skip
    elif _TORCH_PYTHON.value:
        if Path(_TORCH_PYTHON.value).exists():
            torch = TorchSide(_TORCH_PYTHON.value)
        else:
            print(f"note: no PyTorch at {_TORCH_PYTHON.value}; cnnlab side only "
                  f"(bash benchmarks/setup_torch.sh makes one)")  # fmt: skip
    dev, n = jax.devices()[0], matmul_size()
    results = {"device": f"{dev.platform} {dev.device_kind} x{jax.device_count()}", "matmul_n": n,
               "matmul_peak_gflops": matmul_peak_gflops(n), "workloads": {}}  # fmt: skip
    if torch:
        results["torch_matmul_gflops"] = torch.ask(op="matmul", n=n, reps=10)["gflops"]
    try:
        for name in _WORKLOADS.value:
            w = WORKLOADS[name]
            print(f"{name}: compiling ...", flush=True)
            side = JaxSide(w)
            r = {"batch": w["batch"], "size": w["size"], "params": side.params,
                 "compile_s": side.compile_s}  # fmt: skip
            if w["model"] == "layer":
                r["layer_macs"] = layer_macs(w)
            jax_t, torch_t = [], []
            if torch:
                info = torch.ask(op="build", workload={**w, "in_channels": in_channels(w)})
                if info["params"] != side.params:
                    sys.exit(f"error: {name}: PyTorch model has {info['params']:,} parameters, "
                             f"cnnlab's {side.params:,}: not the same architecture")  # fmt: skip
                results["torch"] = f"torch {info['version']}, {info['threads']} threads"
            for _ in range(_ROUNDS.value):  # A B A B: both sides see the same machine state
                jax_t += side.run(_STEPS.value)
                if torch:
                    torch_t += torch.ask(op="time", steps=_STEPS.value)["seconds"]
            r["cnnlab_s"] = statistics.median(jax_t)
            r["cnnlab_img_s"] = w["batch"] / r["cnnlab_s"]
            r["step_gflop"] = side.flops / 1e9
            r["gflops"] = side.flops / r["cnnlab_s"] / 1e9
            if torch_t:
                r["torch_s"] = statistics.median(torch_t)
                r["torch_img_s"] = w["batch"] / r["torch_s"]
                r["ratio"] = r["cnnlab_img_s"] / r["torch_img_s"]
            results["workloads"][name] = r
            print(f"  cnnlab {r['cnnlab_img_s']:.0f} img/s, PyTorch "
                  f"{fmt(r.get('torch_img_s'), '.0f')} img/s", flush=True)  # fmt: skip
            del side
        results["compile_vs_depth"] = compile_vs_depth(_COMPILE_DEPTHS.value)
    finally:
        if torch:
            torch.close()
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (workdir / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
