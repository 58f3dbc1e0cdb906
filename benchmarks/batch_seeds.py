"""Seeds of a grid trained one after another vs together (config.batch_seeds), side by side.

    ./run python -m benchmarks.batch_seeds [--depths=8,20] [--seeds=3] [--steps=60] [--probe]

For each depth: the default grid's recipe (residual, no side heads) over `--seeds` seeds, run by
`python -m experiments.ablate` in a fresh process and workdir (so a fresh compilation cache),
once with separate cells and once with batched seeds; wall time of the whole command, the
compile / compute / eval split of its cells, and the steady-state step time per seed. The two
modes alternate per depth so drift on a shared machine affects both. `--probe`: the largest
power-of-two number of seeds whose vmapped train step runs (one step, doubling until the device
runs out of memory or `--probe_limit`), for an accelerator.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from benchmarks.timing import markdown_table, probe_seeds
from cnnlab import ablation

_DEPTHS = flags.DEFINE_list("depths", ["8", "20"], "CIFAR ResNet depths.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per configuration.")
_STEPS = flags.DEFINE_integer("steps", 60, "Train steps per cell.")
_PROBE = flags.DEFINE_bool("probe", False, "Find the largest seed count a step fits.")
_PROBE_LIMIT = flags.DEFINE_integer("probe_limit", 256, "Stop probing at this many seeds.")


def run_mode(depth: int, batch_seeds: bool) -> dict:
    """The grid through `python -m experiments.ablate` in a fresh process with a fresh workdir
    (and so a fresh compilation cache, WORKDIR/jax_cache), as a user runs it."""
    grid = f"(('model.kwargs.depth',({depth},)),('seed',{tuple(range(_SEEDS.value))}))"
    steps = _STEPS.value
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "experiments.ablate", f"--workdir={tmp}/w",
               f"--config.grid={grid}", "--config.when=()", "--config.grad_norm_steps=(0,)",
               f"--config.train.steps={steps}", f"--config.train.eval_every={max(steps // 2, 1)}",
               f"--config.batch_seeds={batch_seeds}", "--config.claims=()"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).parents[1])
        wall = time.perf_counter() - t0
        results = ablation.load_results(Path(tmp) / "w")
    assert len(results) == _SEEDS.value and all(r.done for r in results)
    total = {k: sum(r.timing[k] for r in results) for k in ("compile_s", "compute_s", "eval_s")}
    lanes = _SEEDS.value if batch_seeds else 1  # a batched step trains every seed at once
    return {
        "wall_s": wall,
        **total,
        "step_ms": 1e3 * float(np.mean([r.step_s for r in results])) / lanes,  # per seed
        "accuracy": float(np.mean([r.metrics["accuracy"] for r in results])),
    }


def main(argv):
    del argv
    jax.config.update("jax_threefry_partitionable", False)
    rows = []
    for i, depth in enumerate(int(d) for d in _DEPTHS.value):
        order = (False, True) if i % 2 == 0 else (True, False)  # alternate which goes first
        out = {mode: run_mode(depth, mode) for mode in order}
        sep, bat = out[False], out[True]
        for mode, r in ((False, sep), (True, bat)):
            rows.append([
                f"ResNet-{depth}", "batched" if mode else "separate", f"{r['wall_s']:.1f}",
                f"{r['compile_s']:.1f}", f"{r['compute_s']:.1f}", f"{r['eval_s']:.1f}",
                f"{r['step_ms']:.1f}", f"{r['accuracy']:.4f}",
                f"{sep['wall_s'] / r['wall_s']:.2f}x",
            ])  # fmt: skip
    header = ["model", "seeds", "grid wall s", "compile s", "compute s", "eval s",
              "step ms/seed", "mean test acc", "speed-up"]  # fmt: skip
    print(f"{jax.devices()[0].device_kind}: {_SEEDS.value} seeds x {_STEPS.value} steps, batch 64")
    print(markdown_table(header, rows))
    if _PROBE.value:
        for depth in (int(d) for d in _DEPTHS.value):
            print(f"ResNet-{depth}: {probe_seeds(depth, _PROBE_LIMIT.value)} seeds fit in one step")


if __name__ == "__main__":
    app.run(main)
