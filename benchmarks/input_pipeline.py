"""Train step with the grain iterator alive: cnnlab's read options vs grain's defaults.

    ./run python -m benchmarks.input_pipeline [--depths=8,56]

Each candidate is a train step taking its batch from a live iterator (digits, batch 64), timed in
alternating blocks with one iterator alive at a time; a step on a fixed batch is the floor. On 2
CPU cores grain's default 16 reader threads slow the step itself, not only the data wait.
"""

import functools
import gc
import itertools
import statistics
import time

import grain
import jax
import numpy as np
from absl import app, flags

from benchmarks.timing import markdown_table
from cnnlab import data, models, train
from cnnlab.train.step import StepConfig, TrainState, train_step
from experiments.configs import base

_DEPTHS = flags.DEFINE_list("depths", ["8", "56"], "CIFAR ResNet depths.")
BATCH = 64


def _iterator(ds, read_options):
    """cnnlab's train_iterator, or the same pipeline with `read_options` ('default': grain's)."""
    if read_options is None:
        return data.train_iterator(ds, BATCH, 0)
    original = grain.MapDataset.to_iter_dataset
    grain.MapDataset.to_iter_dataset = lambda self, _=None, **kw: original(self, **kw)
    try:  # the same pipeline, built with grain's default ReadOptions
        return data.train_iterator(ds, BATCH, 0)
    finally:
        grain.MapDataset.to_iter_dataset = original


def _block(step, state, key, it, n: int = 20) -> float:
    """Median seconds per step over n steps, each taking its batch from `it`."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(step(state, next(it), key))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv):
    del argv
    jax.config.update("jax_threefry_partitionable", False)
    ds = data.load("cnnlab_digits")
    opt = base.get_config().optim
    opt.update({"lr": 0.05, "schedule": "constant", "warmup_steps": 0})
    opt = train.OptimSpec.of(opt)
    rows = []
    for depth in map(int, _DEPTHS.value):
        model = models.create("cifar_resnet", depth=depth, num_classes=ds.num_classes)
        tx, _ = train.make_optimizer(opt, 150)
        x = np.zeros((1, *ds.image_shape), np.float32)
        state = TrainState.create(model.apply, jax.jit(model.init)(jax.random.key(0), x), tx)
        step = jax.jit(functools.partial(train_step, cfg=StepConfig(total_steps=150)))
        key = jax.random.key(0)
        fixed = next(_iterator(ds, None))
        jax.block_until_ready(step(state, fixed, key))  # compile
        # the effect is process-wide, so only one iterator lives at a time: A B A B blocks
        samples = {"cnnlab": [], "grain default": [], "no iterator": []}
        for _ in range(3):
            for name in samples:
                if name == "no iterator":
                    samples[name].append(_block(step, state, key, itertools.repeat(fixed)))
                    continue
                it = _iterator(ds, None if name == "cnnlab" else "default")
                next(it)  # let its readers start
                samples[name].append(_block(step, state, key, it))
                del it
                gc.collect()
        t = {name: statistics.median(v) for name, v in samples.items()}
        rows.append(
            [
                str(depth),
                f"{1e3 * t['cnnlab']:.1f}",
                f"{1e3 * t['grain default']:.1f}",
                f"{t['grain default'] / t['cnnlab']:.1f}x",
                f"{1e3 * t['no iterator']:.1f}",
            ]
        )
    head = ["depth", "cnnlab ms", "grain default ms", "default / cnnlab", "no iterator ms"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    app.run(main)
