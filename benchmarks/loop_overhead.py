"""What `cnnlab.train`'s loop costs beyond a bare Python loop over the same jitted step.

    ./run python -m benchmarks.loop_overhead            # ResNet-8, batch 32, the digits
    ./run python -m benchmarks.loop_overhead --rounds=7 --steps=600

Both sides run the same jitted train step (fit's: donated state, replicated outputs) on batches
drawn from the same grain iterator, in this process. The bare loop is `batch =
global_batch(next(it)); state, metrics = step(state, batch, rng)`, synchronised once at the
end. cnnlab's loop is `train.train` (its logging, checks, progress, evaluation and checkpoint at
the end); its per-step cost is the difference between a run of `steps + warmup` steps and one
of `warmup` steps, divided by `steps`, so that set-up, the compile (cached after the first
round), the final evaluation and the save cancel. Rounds interleave the two; medians are
reported, with the CPU. A step of this model takes about 1-2 ms on a 2-core CPU, where a loop's
per-step overhead shows most.
"""

import argparse
import functools
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config(steps: int):
    from experiments.configs import base

    c = base.get_config()
    c.model.kwargs.depth = 8
    c.data.batch_size = 32
    c.train.steps = steps
    c.train.eval_every = steps  # one evaluation and one save, at the end
    c.train.train_subset = 0
    c.optim.warmup_steps = 0
    return c


def cnnlab_loop(steps: int, warmup: int, root: Path) -> float:
    """Seconds per step of train.train, from two runs' difference."""
    from cnnlab import train

    walls = []
    for n in (warmup, warmup + steps):
        t = time.perf_counter()
        train.train(config(n), root / f"run{n}-{time.perf_counter_ns()}", progress=False)
        walls.append(time.perf_counter() - t)
    return (walls[1] - walls[0]) / steps


def bare_loop(steps: int, warmup: int) -> float:
    """Seconds per step of a bare loop over fit's jitted step and the same batches."""
    import jax

    from cnnlab import distributed
    from cnnlab.train.loop import (
        build_model,
        initial_state,
        load_data,
        make_optimizer,
        train_iterator,
    )
    from cnnlab.train.spec import RunSpec
    from cnnlab.train.step import train_step

    spec = RunSpec.of(config(warmup + steps))
    ds = load_data(spec)
    model = build_model(spec, ds)
    tx, _ = make_optimizer(spec.optim, spec.steps, spec.peak_lr)
    mesh = distributed.data_mesh()
    state = distributed.replicate(initial_state(spec, model, ds, tx), mesh)
    repl = distributed.replicated(mesh)
    step = jax.jit(functools.partial(train_step, cfg=spec.step), donate_argnums=0,
                   out_shardings=(repl, repl))  # fmt: skip
    it, base_rng = train_iterator(spec, ds), jax.random.key(spec.seed + 1)
    t = None
    for i in range(warmup + steps):
        if i == warmup:
            jax.block_until_ready(state)
            t = time.perf_counter()
        batch = distributed.global_batch(next(it), mesh)
        state, _ = step(state, batch, jax.random.fold_in(base_rng, i))
    jax.block_until_ready(state)
    return (time.perf_counter() - t) / steps


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=50)
    a = p.parse_args(argv)
    from cnnlab import distributed

    distributed.start()  # the compilation cache, as the entry points use it
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            bare.append(bare_loop(a.steps, a.warmup))
            ours.append(cnnlab_loop(a.steps, a.warmup, Path(tmp)))
            print(f"round {r + 1}: bare {1e3 * bare[-1]:.3f} ms/step, cnnlab "
                  f"{1e3 * ours[-1]:.3f} ms/step", flush=True)  # fmt: skip
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"\nCPU: {cpu()}; ResNet-8, batch 32, digits; {a.steps} steps, {a.rounds} rounds")
    print("| loop | ms/step (median) | steps/s | vs bare |")
    print("|---|---|---|---|")
    print(f"| bare Python loop | {1e3 * b:.3f} | {1 / b:.0f} | 1.00 |")
    print(f"| cnnlab.train | {1e3 * o:.3f} | {1 / o:.0f} | {b / o:.2f} |")
    print(f"cnnlab's loop costs {100 * (o / b - 1):+.1f}% per step over the bare loop")


if __name__ == "__main__":
    main()
