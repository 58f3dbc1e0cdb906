"""Deep nets: compile time and step time of n identical residual blocks, unrolled vs `nn.scan`.

    ./run python -m benchmarks.scan_blocks [--blocks=3,9,18] [--batch=32] [--repeats=5]

A CIFAR ResNet stage is n identical BasicBlocks (16 channels, 32x32): n = 3, 9, 18 in ResNet-20,
56, 110. Unrolled (cnnlab's models), XLA compiles every block; under `flax.linen.scan` it compiles
one block body and loops it, with parameters stacked along a new leading axis. For each n this
compiles a train step (forward in train mode, backward, SGD update) both ways and reports compile
seconds and the median step time (interleaved), so the trade can be re-measured on any backend.
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.timing import markdown_table, time_interleaved
from cnnlab.blocks import BasicBlock


class Unrolled(nn.Module):
    n: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.n):
            x = BasicBlock(x.shape[-1], name=f"block{i}")(x, train=True)
        return x


class _Body(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return BasicBlock(x.shape[-1], name="block")(x, train=True), None


class Scanned(nn.Module):
    n: int

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(
            _Body,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True},
            length=self.n,
        )
        return scan(name="blocks")(x, None)[0]


def compiled_step(model, x):
    variables = model.init(jax.random.key(0), x)
    tx = optax.sgd(0.01, momentum=0.9)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(state, x):
        params, stats, opt = state

        def loss(p):
            y, upd = model.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
            return jnp.mean(y**2), upd["batch_stats"]

        (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    t = time.perf_counter()
    fn = jax.jit(step).lower(state, x).compile()
    return time.perf_counter() - t, (lambda: fn(state, x))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="3,9,18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    x = jax.random.normal(jax.random.key(1), (a.batch, a.size, a.size, a.channels))
    rows = []
    for n in map(int, a.blocks.split(",")):
        c_unrolled, run_unrolled = compiled_step(Unrolled(n), x)
        c_scanned, run_scanned = compiled_step(Scanned(n), x)
        t = time_interleaved({"unrolled": run_unrolled, "scanned": run_scanned}, a.repeats)
        rows.append(
            [
                str(n),
                f"{c_unrolled:.1f}",
                f"{c_scanned:.1f}",
                f"{c_unrolled / c_scanned:.1f}x",
                f"{1e3 * t['unrolled']:.0f}",
                f"{1e3 * t['scanned']:.0f}",
                f"{t['scanned'] / t['unrolled']:.2f}x",
            ]
        )
    header = [
        "blocks",
        "compile s unrolled",
        "compile s scanned",
        "compile speed-up",
        "step ms unrolled",
        "step ms scanned",
        "scanned / unrolled step",
    ]
    report = (
        f"backend={jax.default_backend()}  x=({a.batch}, {a.size}, {a.size}, {a.channels})  "
        f"train step of n BasicBlocks; step times are medians of {a.repeats} interleaved runs\n\n"
        + markdown_table(header, rows)
    )
    print(report)
    return report


if __name__ == "__main__":
    main()
