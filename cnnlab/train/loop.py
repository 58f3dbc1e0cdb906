"""The training loop: data, model, state, resume, jitted steps, eval, checkpoints, logs."""

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from cnnlab import data, models
from cnnlab.train.checkpoint import Checkpointer, CheckpointError
from cnnlab.train.config import check_model, validate
from cnnlab.train.optim import make_optimizer
from cnnlab.train.step import LossConfig, TrainState, eval_step, train_step
from cnnlab.train.writer import MetricWriter


@dataclasses.dataclass
class TrainResult:
    """What a run produced: final test metrics, the trained state, and timings."""

    metrics: dict
    state: TrainState
    model: object
    dataset: data.Dataset
    first_step_s: float | None  # wall time of the first step run here (compile included)
    step_s: float | None  # mean wall time of the later steps


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def build_model(c, ds):
    kwargs = dict(c.model.kwargs)
    return models.create(
        c.model.name,
        num_classes=1 if ds.num_classes == 2 and c.model.binary else ds.num_classes,
        side_taps=tuple(c.loss.side_taps),
        side_head=c.loss.side_head,
        **kwargs,
    )


def loss_config(c) -> LossConfig:
    return LossConfig(
        total_steps=c.train.steps,
        label_smoothing=c.loss.label_smoothing,
        side_weight=c.loss.side_weight,
        side_schedule=c.loss.side_schedule,
        side_gamma=c.loss.side_gamma,
        side_drop_step=c.loss.side_drop_step,
        compute_dtype=c.train.compute_dtype,
    )


def evaluate(eval_fn, state, ds, c) -> dict:
    sums = None
    for batch in data.eval_batches(ds, c.data.batch_size, image_size=c.data.image_size or None):
        out = jax.device_get(eval_fn(state, batch))
        sums = out if sums is None else {k: sums[k] + out[k] for k in sums}
    count = sums.pop("count")
    return {k: float(v) / float(count) for k, v in sums.items()}


def input_shape(c, ds) -> tuple[int, int, int]:
    size = c.data.image_size
    return (size, size, ds.image_shape[2]) if size else tuple(ds.image_shape)


def initial_state(c, model, ds, tx):
    x = np.zeros((1, *input_shape(c, ds)), np.float32)
    variables = jax.jit(model.init)(jax.random.key(c.seed), x)
    return TrainState.create(model.apply, variables, tx)


def train(c, workdir, *, progress: bool = True, hook=None) -> TrainResult:
    """Train per config `c` in `workdir`, resuming from its latest checkpoint.

    `hook(step, state, metrics)`, if given, runs after every step (e.g. diagnostics).
    """
    validate(c)
    workdir = Path(workdir).absolute()  # orbax needs absolute paths
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load(c.data.name, c.data.data_dir or None, dict(c.data.synthetic))
    model = build_model(c, ds)
    check_model(model, input_shape(c, ds))
    tx, schedule = make_optimizer(c.optim, c.train.steps)
    state = initial_state(c, model, ds, tx)
    it = data.train_iterator(
        ds,
        c.data.batch_size,
        c.seed,
        image_size=c.data.image_size or None,
        augment=c.data.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    ckpt = Checkpointer(workdir / "checkpoints", c.train.keep_checkpoints, c.train.best_metric)
    start = ckpt.latest_step() or 0
    if start:
        state, _ = ckpt.restore(start, state, it)
    cfg = loss_config(c)
    step_fn = jax.jit(functools.partial(train_step, cfg=cfg), donate_argnums=0)
    eval_fn = jax.jit(functools.partial(eval_step, cfg=cfg))
    writer = MetricWriter(workdir, jax.process_index())
    (workdir / "config.json").write_text(c.to_json_best_effort(indent=2))
    base_rng = jax.random.key(c.seed + 1)
    bar = tqdm(
        total=c.train.steps,
        initial=start,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        desc=f"train {c.model.name}",
    )
    meta = {"config": json.loads(c.to_json_best_effort()), "dataset": ds.name}
    final, seen, t0, times = {}, 0, time.perf_counter(), []
    try:
        for step in range(start, c.train.steps):
            batch = next(it)
            t_step = time.perf_counter()
            state, metrics = step_fn(state, batch, jax.random.fold_in(base_rng, step))
            loss = float(metrics["total_loss"])  # waits for the step: times are real
            times.append(time.perf_counter() - t_step)
            if hook is not None:
                hook(step, state, metrics)
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"non-finite loss ({loss}) at step {step + 1}; stopped. The last good "
                    f"checkpoint (step {ckpt.latest_step()}) is kept in {workdir / 'checkpoints'}; "
                    f"lower config.optim.lr or check the data"
                )
            seen += len(batch["label"])
            if (step + 1) % c.train.log_every == 0 or step + 1 == c.train.steps:
                m = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
                m["lr"] = float(schedule(step))
                writer.write(step + 1, "train", m)
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(
                    loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}", img_s=f"{rate:.0f}"
                )
            bar.update(1)
            if (step + 1) % c.train.eval_every == 0 or step + 1 == c.train.steps:
                final = evaluate(eval_fn, state, ds, c)
                writer.write(step + 1, "test", final)
                ckpt.save(step + 1, state, it, meta, metrics=final)
        if not final:  # already finished: report the saved run's metrics
            final = evaluate(eval_fn, state, ds, c)
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    later = times[1:]
    return TrainResult(
        final,
        state,
        model,
        ds,
        times[0] if times else None,
        sum(later) / len(later) if later else None,
    )


__all__ = ["CheckpointError", "NonFiniteLoss", "TrainResult", "train"]
