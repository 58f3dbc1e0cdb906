"""Depthwise conv on this backend: XLA's grouped conv vs cnnlab's shifted multiply-adds.

    ./run python -m benchmarks.depthwise              # B=16, 56x56, C=128, 3x3 (the notes' case)
    ./run python -m benchmarks.depthwise --quick      # small shapes, a smoke run

Prints forward and forward+backward medians (interleaved runs) for impl='xla', impl='shifted'
and a dense 3x3 conv with the same channels (C = 128x the MACs) for scale, with ratios.
`impl='auto'` picks 'shifted' on CPU; this script is the evidence for that choice.
"""

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import markdown_table, time_interleaved
from cnnlab import layers as L


def build(layer, x):
    v = layer.init(jax.random.key(0), x)
    fwd = jax.jit(layer.apply)
    grad = jax.jit(jax.grad(lambda v, x: jnp.sum(layer.apply(v, x) ** 2), argnums=(0, 1)))
    return (lambda: fwd(v, x)), (lambda: grad(v, x))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="B=2, 16x16, C=16, 3 repeats")
    a = p.parse_args(argv)
    if a.quick:
        a.batch, a.size, a.channels, a.repeats = 2, 16, 16, 3
    x = jax.random.normal(jax.random.key(0), (a.batch, a.size, a.size, a.channels))
    candidates = {
        "depthwise xla": L.DepthwiseConv(a.kernel, a.stride, impl="xla"),
        "depthwise shifted": L.DepthwiseConv(a.kernel, a.stride, impl="shifted"),
        "dense conv": L.Conv(a.channels, a.kernel, a.stride),
    }
    fwd, bwd = {}, {}
    for name, layer in candidates.items():
        fwd[name], bwd[name] = build(layer, x)
    t_fwd = time_interleaved(fwd, a.repeats)
    t_bwd = time_interleaved(bwd, a.repeats)
    rows = [
        [
            name,
            f"{1e3 * t_fwd[name]:.2f}",
            f"{1e3 * t_bwd[name]:.2f}",
            f"{t_fwd['depthwise xla'] / t_fwd[name]:.2f}x",
            f"{t_bwd['depthwise xla'] / t_bwd[name]:.2f}x",
        ]
        for name in candidates
    ]
    report = (
        f"backend={jax.default_backend()}  x=({a.batch}, {a.size}, {a.size}, {a.channels})  "
        f"kernel={a.kernel} stride={a.stride}  medians of {a.repeats} interleaved runs\n\n"
        + markdown_table(
            ["layer", "fwd ms", "fwd+bwd ms", "fwd speed-up vs xla", "fwd+bwd speed-up vs xla"],
            rows,
        )
        + f"\n\nauto picks: {L.depthwise.resolve_impl('auto')}"
    )
    print(report)
    return report


if __name__ == "__main__":
    main()
