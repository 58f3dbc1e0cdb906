"""Side-by-side timing: interleave candidates (A B A B ...) and report medians, as noisy shared
machines need. Ratios from one run are what benchmarks report; absolute times are context.
Also the helpers several benchmarks share (no flags here: each benchmark defines its own):
XLA's FLOP count of a step and the probe for how many seeds one vmapped step fits."""

import statistics
import time
from collections.abc import Callable

import jax


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds per call of each zero-argument function, calls interleaved round-robin."""
    for fn in fns.values():
        for _ in range(warmup):  # compiles on the first call
            jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def time_steps(step, state, batch, rng, steps: int):
    """`steps` calls of a compiled train step, each timed to its result. -> (state, seconds)."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics["total_loss"])
        times.append(time.perf_counter() - t)
    return state, times


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def step_flops(step, *args) -> float:
    """XLA's FLOP count of the jitted `step` as traced here, lowered for the host CPU.

    Counted before backend optimisation and always by the CPU's cost analysis, so the count is
    the same on every machine: XLA:GPU has no pre-optimisation count, and after compilation it
    hides convolutions in cuDNN calls that count zero FLOPs. (The program is the one traced on
    this backend, e.g. with XLA's grouped depthwise conv on a GPU; only the counting is on CPU.)
    """
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
    cost = step.lower(*abstract).cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def probe_seeds(depth: int, limit: int) -> int:
    """Largest power-of-two seed count whose vmapped train step (batch 64) runs."""
    import numpy as np

    from cnnlab import ablation, train
    from cnnlab.train.batched import stack
    from experiments.configs import ablate_default

    c = ablation.apply(ablate_default.get_config(), {"model.kwargs.depth": depth})
    spec = train.RunSpec.of(c)
    ds = train.load_data(spec)
    model = train.build_model(spec, ds)
    tx, _ = train.make_optimizer(spec.optim, 10, 0.05)
    one = train.initial_state(spec, model, ds, tx)
    step = jax.jit(jax.vmap(lambda s, b, r: train.train_step(s, b, r, cfg=train.StepConfig())))
    fits, n = 0, 1
    while n <= limit:
        try:
            state = stack([one] * n)
            x = np.zeros((n, 64, *train.input_shape(spec, ds)), np.float32)
            batch = {"image": x, "label": np.zeros((n, 64), np.int32)}
            keys = jax.random.split(jax.random.key(0), n)
            jax.block_until_ready(step(state, batch, keys))
        except Exception as e:  # XlaRuntimeError RESOURCE_EXHAUSTED, host MemoryError
            print(f"  depth {depth}: {n} seeds do not fit ({type(e).__name__})")
            break
        fits, n = n, 2 * n
    return fits


class Worker:
    """A benchmark's other side in its own process (its own Python: PyTorch, say), one JSON
    request per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self, python: str, script):
        import subprocess

        self.proc = subprocess.Popen([python, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip

    def ask(self, **req) -> dict:
        import json

        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's worker process died; run it by hand to see why")
        return json.loads(line)

    def close(self, timeout: float = 120) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=timeout)
