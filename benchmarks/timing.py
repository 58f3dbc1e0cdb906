"""Side-by-side timing: interleave candidates (A B A B ...) and report medians, as noisy shared
machines need. Ratios from one run are what benchmarks report; absolute times are context."""

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


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
