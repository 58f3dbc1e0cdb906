"""cnnlab beside PyTorch on one GPU, in one command sized for a short GPU window.

    ./run python -m benchmarks.gpu                      # everything (on a GPU machine)
    ./run python -m benchmarks.gpu --only=resnet50_224  # one row again (results are merged)
    ./run python -m benchmarks.gpu --smoke              # every code path on CPU, tiny sizes

Rows (same architecture on both sides; parameter counts compared and printed):
- `resnet50_224`, `mobilenet_v2_224`: batch 256 at 224x224, 1000 classes (torchvision's models);
- `resnet20_32`, `resnet56_32`: CIFAR ResNets, batch 512 at 32x32, 10 classes;
- `grid`: the default ablation grid (`python -m experiments.ablate`, 22 cells) run twice in
  fresh processes and workdirs, cells one after another and with seeds batched
  (`--config.batch_seeds=True`): wall time and the cells' compile / compute split;
- `probe`: the largest power-of-two number of seeds whose vmapped train step fits, at depth 20
  and 56 (`benchmarks.batch_seeds.probe`).

Each model row times full train steps (forward, cross-entropy, backward, SGD-momentum update) in
bf16: cnnlab with `compute_dtype='bfloat16'` (f32 parameters), PyTorch under bf16 autocast with
channels_last, eager and `torch.compile`, each PyTorch mode in the worker process
(benchmarks/gpu_torch_worker.py), the three interleaved round by round (A B C A B C) so that they
share the machine's state; medians are reported. MFU = the step's FLOPs (XLA's count, the same
program on both sides) / time / the run's own measured bf16 matmul peak (the faster of XLA's and
PyTorch's 8192^3 product). Memory: cnnlab's compiled step (XLA's memory analysis: arguments,
outputs and temporaries), PyTorch's `max_memory_allocated`. Compile: cnnlab's lower + compile,
PyTorch's first two steps (where `torch.compile` compiles).

Budget: 3 rounds x 10 steps per side after 2 warm-up steps; compiles dominate (measured on an
H200, 2026-12-04: cnnlab 8-72 s per model, `torch.compile` 21-61 s), and the four model rows with
the grid row's sequential mode did not fit in 520 s: the grid (the loop waits every step) is
the long pole. The script writes
results.json / results.md after every row, so a window that closes early keeps what ran, and
`--only` reruns what is missing. JAX is told not to preallocate the GPU, so both sides fit.
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with PyTorch

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from benchmarks.timing import Worker, markdown_table, probe_seeds, step_flops, time_steps
from cnnlab import ablation, models, train

ROOT = Path(__file__).resolve().parents[1]
ROWS = {
    "resnet50_224": dict(model="resnet50", batch=256, size=224, num_classes=1000),
    "mobilenet_v2_224": dict(model="mobilenet_v2", batch=256, size=224, num_classes=1000),
    "resnet20_32": dict(model="cifar_resnet", depth=20, batch=512, size=32, num_classes=10),
    "resnet56_32": dict(model="cifar_resnet", depth=56, batch=512, size=32, num_classes=10),
}
SMOKE = {  # every code path at sizes a CPU runs in seconds
    "resnet50_224": dict(batch=2, size=32, num_classes=10),
    "mobilenet_v2_224": dict(batch=2, size=32, num_classes=10),
    "resnet20_32": dict(batch=4),
    "resnet56_32": dict(depth=8, batch=4),
}
EXTRA = ("grid", "probe")
TARGETS = {  # cnnlab / PyTorch, from the project's targets (README, benchmarks/README.md)
    "resnet50_224": ("compile", 1.0),
    "mobilenet_v2_224": ("compile", 1.0),
    "resnet20_32": ("eager", 1.5),
    "resnet56_32": ("eager", 1.5),
}

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes on any device: test every code path.")
_ONLY = flags.DEFINE_list("only", [], f"Rows to (re)run: {[*ROWS, *EXTRA]}; default all.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds per row.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per side per round.")
_MODES = flags.DEFINE_list("modes", ["eager", "compile"], "PyTorch modes to time.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/gpu", "Where results.json and results.md go.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python",
    os.environ.get("TORCH_PYTHON", ""),
    "Python with PyTorch (and torchvision) for the other side; default: this Python if it has "
    "torch, else .venv-torch/bin/python if present, else (or 'none') the PyTorch columns stay "
    "empty.",
)


def torch_python() -> str | None:
    if _TORCH_PYTHON.value == "none":
        return None
    if _TORCH_PYTHON.value:
        return _TORCH_PYTHON.value
    probe = subprocess.run([sys.executable, "-c", "import torch, torchvision"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    venv = ROOT / ".venv-torch" / "bin" / "python"
    return str(venv) if venv.exists() else None


class Cnnlab:
    """cnnlab's bf16 train step for one row, compiled ahead of time."""

    def __init__(self, w: dict):
        kwargs = {"depth": w["depth"]} if "depth" in w else {}
        model = models.create(w["model"], num_classes=w["num_classes"], **kwargs)
        x = jax.random.normal(jax.random.key(0), (w["batch"], w["size"], w["size"], 3))
        self.batch = {"image": x, "label": jnp.arange(w["batch"]) % w["num_classes"]}
        variables = jax.jit(model.init)(jax.random.key(1), x[:1])
        tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.01, momentum=0.9))
        self.state = train.TrainState.create(model.apply, variables, tx)
        self.params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
        cfg = train.StepConfig(compute_dtype="bfloat16")
        step = jax.jit(functools.partial(train.train_step, cfg=cfg), donate_argnums=0)
        self.rng = jax.random.key(2)
        t = time.perf_counter()
        self.step = step.lower(self.state, self.batch, self.rng).compile()
        self.compile_s = time.perf_counter() - t
        m = self.step.memory_analysis()
        self.memory_bytes = None if m is None else int(
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )  # fmt: skip
        self.flops = step_flops(step, self.state, self.batch, self.rng)
        self.run(2)  # warm-up

    def run(self, steps: int) -> list[float]:
        self.state, times = time_steps(self.step, self.state, self.batch, self.rng, steps)
        return times


def matmul_tflops(n: int, reps: int = 10) -> float:
    """XLA's bf16 n^3 matmul rate: `reps` calls queued back to back, best of 3."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready([f(a) for _ in range(reps)])
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e12


def model_row(w: dict, torch: Worker | None) -> dict:
    side = Cnnlab(w)
    r = {"batch": w["batch"], "size": w["size"], "params": side.params,
         "compile_s": side.compile_s, "memory_bytes": side.memory_bytes,
         "step_tflop": side.flops / 1e12, "torch": {}}  # fmt: skip
    times = []
    modes = []
    for mode in _MODES.value if torch else []:  # each mode built (and compiled) once
        built = torch.ask(op="build", workload=w, mode=mode)
        if "error" in built:
            r["torch"][mode] = {"error": built["error"]}
            continue
        r["torch"][mode] = {"params": built["params"], "compile_s": built["compile_s"],
                            "seconds": []}  # fmt: skip
        modes.append(mode)
    for _ in range(_ROUNDS.value):  # A B C A B C: every side sees the same machine state
        times += side.run(_STEPS.value)
        for mode in modes:
            out = torch.ask(op="time", mode=mode, steps=_STEPS.value)
            r["torch"][mode]["seconds"] += out["seconds"]
            r["torch"][mode]["peak_bytes"] = out["peak_bytes"]
    if torch:
        torch.ask(op="free")
    r["cnnlab_s"] = statistics.median(times)
    r["cnnlab_img_s"] = w["batch"] / r["cnnlab_s"]
    for t in r["torch"].values():
        if "seconds" in t:
            t["median_s"] = statistics.median(t.pop("seconds"))
            t["img_s"] = w["batch"] / t["median_s"]
            t["ratio"] = r["cnnlab_img_s"] / t["img_s"]
            t["same_params"] = t["params"] == side.params
    return r


def grid_row(smoke: bool) -> dict:
    """The default grid through the entry point, separate cells then batched seeds, each in a
    fresh process and workdir (so a fresh compilation cache)."""
    extra = ["--config.train.steps=4", "--config.train.eval_every=2", "--config.claims=()",
             "--config.grid=(('model.kwargs.depth',(8,)),('seed',(0,1)))",
             "--config.when=()", "--config.grad_norm_steps=(0,)"] if smoke else []  # fmt: skip
    out = {}
    for batched in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "experiments.ablate", f"--workdir={tmp}/w",
                   f"--config.batch_seeds={batched}", *extra]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode:
                out["batched" if batched else "separate"] = {"error": done.stderr[-500:]}
                continue
            cells = ablation.load_results(Path(tmp) / "w")
        split = {k: sum(c.timing.get(k, 0.0) for c in cells) for k in ("compile_s", "compute_s")}
        out["batched" if batched else "separate"] = {"wall_s": wall, "cells": len(cells), **split}
    return out


def probe_row(smoke: bool) -> dict:
    limit = 2 if smoke else 1024
    return {str(d): probe_seeds(d, limit) for d in ((8,) if smoke else (20, 56))}


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def gib(n) -> str:
    return "-" if not n else f"{n / 2**30:.2f}"


def report(res: dict) -> str:
    peak = res.get("peak_tflops") or 0
    n, torch = res.get("matmul_n", 8192), res.get("torch_version") or "not run"
    lines = [f"Device: {res['device']}; PyTorch: {torch}; bf16 matmul {n}^3: XLA "
             f"{fmt(res.get('xla_tflops'))} TFLOP/s, PyTorch {fmt(res.get('torch_tflops'))} "
             f"TFLOP/s; MFU against the faster.", ""]  # fmt: skip
    rows = []
    for name, r in res.get("rows", {}).items():
        mfu = r["step_tflop"] / r["cnnlab_s"] / peak if peak else None
        cells = [name, f"{r['batch']} x {r['size']}²", f"{r['params']:,}",
                 f"{r['cnnlab_img_s']:.0f}", fmt(100 * mfu if mfu else None),
                 f"{r['compile_s']:.1f}", gib(r["memory_bytes"])]  # fmt: skip
        for mode in ("eager", "compile"):
            t = r["torch"].get(mode, {})
            same = t.get("same_params")
            cells += [fmt(t.get("img_s"), ".0f"), fmt(t.get("ratio"), ".2f")
                      + ("" if same in (None, True) else " (params differ)"),
                      fmt(t.get("compile_s")), gib(t.get("peak_bytes"))]  # fmt: skip
        mode, target = TARGETS.get(name, (None, None))
        ratio = r["torch"].get(mode, {}).get("ratio") if mode else None
        cells.append("-" if ratio is None else f"{'met' if ratio >= target else 'missed'} "
                     f"(>= {target}x {mode})")  # fmt: skip
        rows.append(cells)
    if rows:
        lines.append(markdown_table(
            ["row", "batch", "params", "cnnlab img/s", "MFU %", "compile s", "mem GiB",
             "eager img/s", "cnnlab/eager", "eager compile s", "eager GiB",
             "compiled img/s", "cnnlab/compiled", "torch.compile s", "compiled GiB", "target"],
            rows))  # fmt: skip
    grid = res.get("grid")
    if grid:
        sep, bat = grid.get("separate", {}), grid.get("batched", {})
        lines += ["", "Default grid through `python -m experiments.ablate` (fresh process and "
                  "cache each): separate cells " + fmt(sep.get("wall_s")) + " s (compile "
                  + fmt(sep.get("compile_s")) + " s, compute " + fmt(sep.get("compute_s"))
                  + " s), seeds batched " + fmt(bat.get("wall_s")) + " s (compile "
                  + fmt(bat.get("compile_s")) + " s, compute " + fmt(bat.get("compute_s"))
                  + " s); target: under 60 s batched."]  # fmt: skip
    if res.get("probe"):
        lines += ["", "Seeds whose vmapped train step fits (batch 64): "
                  + ", ".join(f"ResNet-{d}: {n}" for d, n in res["probe"].items())]  # fmt: skip
    return "\n".join(lines)


def save(workdir: Path, res: dict) -> None:
    (workdir / "results.json").write_text(json.dumps(res, indent=1))
    (workdir / "results.md").write_text(report(res) + "\n")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    jax.config.update("jax_threefry_partitionable", False)
    wanted = _ONLY.value or [*ROWS, *EXTRA]
    if unknown := sorted(set(wanted) - {*ROWS, *EXTRA}):
        sys.exit(f"error: --only has {unknown}; choose from {[*ROWS, *EXTRA]}")
    smoke = _SMOKE.value
    if jax.default_backend() == "cpu" and not smoke:
        print("note: no GPU; on a CPU this measures the CPU (use --smoke to test the script)")
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "results.json"
    res = json.loads(path.read_text()) if path.exists() and _ONLY.value else {}
    dev = jax.devices()[0]
    n = 256 if smoke else 8192
    res.update(device=f"{dev.platform} {dev.device_kind} x{jax.device_count()}",
               xla_tflops=matmul_tflops(n), matmul_n=n, smoke=smoke)  # fmt: skip
    python = torch_python()
    torch = Worker(python, Path(__file__).with_name("gpu_torch_worker.py")) if python else None
    try:
        if torch:
            info = torch.ask(op="info")
            res["torch_version"] = f"torch {info['version']} on {info['name']}"
            res["torch_tflops"] = torch.ask(op="matmul", n=n, reps=10)["tflops"]
        res["peak_tflops"] = max(res["xla_tflops"], res.get("torch_tflops") or 0)
        for name in (r for r in ROWS if r in wanted):
            w = {**ROWS[name], **(SMOKE[name] if smoke else {})}
            print(f"{name}: compiling and timing ...", flush=True)
            res.setdefault("rows", {})[name] = model_row(w, torch)
            save(workdir, res)  # partial results survive a window that closes
        if "grid" in wanted:
            print("grid: separate cells, then seeds batched ...", flush=True)
            res["grid"] = grid_row(smoke)
            save(workdir, res)
        if "probe" in wanted:
            res["probe"] = probe_row(smoke)
    finally:
        if torch:
            torch.close()
    save(workdir, res)
    print(report(res))


if __name__ == "__main__":
    app.run(main)
