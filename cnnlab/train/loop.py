"""The training loop: data, model, state, resume, jitted steps, eval, checkpoints, logs."""

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from cnnlab import data, distributed, models
from cnnlab import progress as bars
from cnnlab.errors import CheckpointError, NonFiniteLoss
from cnnlab.train.checkpoint import Checkpointer
from cnnlab.train.config import check_model
from cnnlab.train.evaluation import Evaluator, RecomputeBN, non_finite
from cnnlab.train.optim import make_optimizer, peak_lr
from cnnlab.train.spec import RunSpec
from cnnlab.train.step import TrainState, eval_step, train_step
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
    early_stopping: dict = dataclasses.field(default_factory=dict)  # best, best_step, stopped
    # seconds spent here: compiling the train step, waiting for data, computing steps,
    # evaluating (eval compiles included), saving checkpoints
    timing: dict = dataclasses.field(default_factory=dict)


def build_model(c, ds):
    kwargs = dict(c.model.kwargs)
    return models.create(
        c.model.name,
        num_classes=1 if ds.num_classes == 2 and c.model.binary else ds.num_classes,
        side_taps=tuple(c.loss.side_taps),
        side_head=c.loss.side_head,
        **kwargs,
    )


def input_shape(c, ds) -> tuple[int, int, int]:
    size = c.data.image_size
    return (size, size, ds.image_shape[2]) if size else tuple(ds.image_shape)


def init_variables(c, model, ds) -> dict:
    """The model's variables initialised from `c.seed` for the config's input shape."""
    x = np.zeros((1, *input_shape(c, ds)), np.float32)
    return jax.jit(model.init)(jax.random.key(c.seed), x)


def initial_state(c, model, ds, tx):
    """Freshly initialised train state (`fit` places it on the devices)."""
    variables = init_variables(c, model, ds)
    return TrainState.create(model.apply, variables, tx, ema=c.train.get("ema_decay", 0.0) > 0)


def open_dataset(c) -> data.Dataset:
    """The config's dataset as stored (every class, every example)."""
    return data.load(c.data.name, c.data.data_dir or None, dict(c.data.synthetic))


def load_data(c, opened: data.Dataset | None = None) -> data.Dataset:
    """The config's dataset (`opened`: what `open_dataset(c)` returned before), restricted to
    data.classes with few-shot/val splits drawn with c.seed if asked."""
    ds = open_dataset(c) if opened is None else opened
    return data.subset(
        ds, c.data.classes, c.data.train_per_class, c.data.val_per_class, seed=c.seed
    )


def train_iterator(spec: RunSpec, ds: data.Dataset):
    """This process's endless training batches for the run (seeded order and augmentation)."""
    return data.train_iterator(
        ds,
        distributed.local_batch_size(spec.batch_size),
        spec.seed,
        image_size=spec.image_size,
        augment=spec.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def train(c, workdir, *, progress: bool = True, hook=None) -> TrainResult:
    """Train per config `c` in `workdir`, resuming from its newest checkpoint that restores.

    `hook(step, state, metrics)`, if given, runs after every step (e.g. diagnostics).
    """
    spec = RunSpec.of(c)  # validates c before anything is read or written
    ds = load_data(c)
    model = build_model(c, ds)
    check_model(model, input_shape(c, ds))
    tx, schedule = make_optimizer(c.optim, spec.steps, peak_lr(c.optim, spec.batch_size))
    state = initial_state(c, model, ds, tx)
    return fit(spec, workdir, ds, model, state, schedule, progress=progress, hook=hook)


def timed_step(step_fn, state, batch, rng, timing: dict, times: list):
    """One train step, timed into `timing` ('compile_s', 'compute_s') and `times` (each step's
    seconds). The first (empty `times`) compiles the jitted `step_fn` ahead of time, so that
    compile and compute are apart. -> (compiled step_fn, state, metrics)."""
    if not times:
        t_compile = time.perf_counter()
        step_fn = step_fn.lower(state, batch, rng).compile()
        timing["compile_s"] = time.perf_counter() - t_compile
    t_step = time.perf_counter()
    state, metrics = jax.block_until_ready(step_fn(state, batch, rng))  # times are real
    times.append(time.perf_counter() - t_step)
    timing["compute_s"] += times[-1]
    return step_fn, state, metrics


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        bars.write(message, file=sys.stderr)


def _stopped(what: str, step: int, ckpt: Checkpointer) -> str:
    return (
        f"non-finite {what} at step {step}; stopped without saving it, "
        f"{ckpt.kept('good', where=True)}. Lower config.optim.lr, or check the data and "
        f"config.model"
    )


def _early_stop(history: dict, val_loss: float, step: int, patience: int, min_delta: float):
    """Update {'best', 'best_step', 'bad_evals', 'stopped'} after an eval (Keras EarlyStopping)."""
    if history.get("best") is None or val_loss < history["best"] - min_delta:
        history.update(best=val_loss, best_step=step, bad_evals=0)
    else:
        history["bad_evals"] += 1
    history["stopped"] = bool(patience) and history["bad_evals"] >= patience
    return history


def evaluate_at(spec, evaluator, ckpt, writer, state, step: int, history) -> dict:
    """The evaluation at `step` (1-based): log it, update early stopping, and check that it
    and the state are finite before the state may be saved as good. -> the checkpoint's
    metrics."""
    test, val = evaluator.at(state, last=step == spec.steps)
    writer.write(step, "test", test)
    metrics = dict(test)
    if val is not None:
        writer.write(step, "val", val)
        metrics.update({f"val_{k}": v for k, v in val.items()})
        _early_stop(history, val["loss"], step, spec.patience, spec.min_delta)
    bad = non_finite(metrics, state)
    if bad:  # a checkpoint is only good when it evaluates finite
        raise NonFiniteLoss(_stopped(bad, step, ckpt))
    return metrics


def finish(spec, evaluator, ckpt, state, history, final: dict):
    """After the last step: the best-val-loss weights when early stopping chose them, or, for
    a run that had already finished, its saved metrics. -> (state, metrics)."""
    best = history.get("best_step")
    if spec.patience and best and best != int(state.step):
        state, saved = ckpt.restore(best, state)
        return state, saved["metrics"]
    if not final:
        final = ckpt.restore_meta(int(state.step)).get("metrics") or evaluator.test(state)
    return state, final


def fit(
    spec: RunSpec,
    workdir,
    ds: data.Dataset,
    model,
    state: TrainState,
    schedule,
    *,
    progress: bool = True,
    hook=None,
    desc: str | None = None,
) -> TrainResult:
    """Run `spec.steps` train steps from `state` (or from workdir's newest checkpoint that
    restores) with evaluations.

    Every `spec.eval_every` steps: test metrics, plus `val_*` metrics when `ds` has a validation
    split, and a checkpoint. With `spec.patience` > 0, training stops after that many evals
    without a `spec.min_delta` drop in val loss and the best-val-loss state is restored.
    `hook(step, state, metrics)` runs after every step; a hook with `needs_layer_grad_norms`
    gets per-kernel gradient norms in `metrics`.
    """
    workdir = Path(workdir).absolute()  # orbax needs absolute paths
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = distributed.data_mesh()  # params replicated, batches split over all devices
    state = distributed.replicate(state, mesh)
    it = train_iterator(spec, ds)
    ckpt = Checkpointer(
        workdir / "checkpoints", spec.keep_checkpoints, spec.best_metric, spec.best_mode
    )
    start, history = 0, {}
    restored = ckpt.restore_newest(state, it, warn=_warn)
    if restored:
        start, state, saved = restored
        history = saved.get("early_stopping") or {}
    cfg = dataclasses.replace(
        spec.step, layer_grad_norms=bool(getattr(hook, "needs_layer_grad_norms", False))
    )
    repl = distributed.replicated(mesh)
    step_fn = jax.jit(
        functools.partial(train_step, cfg=cfg), donate_argnums=0, out_shardings=(repl, repl)
    )
    eval_fn = jax.jit(functools.partial(eval_step, cfg=cfg), out_shardings=repl)
    evaluator = Evaluator(spec, ds, eval_fn, RecomputeBN(spec, ds, model.apply, mesh))
    writer = MetricWriter(workdir, jax.process_index(), resume_step=start)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(json.dumps(spec.config, indent=2))
    base_rng = jax.random.key(spec.seed + 1)
    steps = spec.steps
    end = start if history.get("stopped") else steps
    bar = bars.bar(
        total=steps,
        initial=start,
        disable=not progress or jax.process_index() > 0,
        unit="step",
        desc=desc or f"train {spec.model_name}",
    )
    meta = {"config": spec.config, "dataset": ds.name}
    final, seen, t0, times, finished = {}, 0, time.perf_counter(), [], False
    timing = dict.fromkeys(("compile_s", "data_s", "compute_s", "eval_s", "checkpoint_s"), 0.0)
    try:
        for step in range(start, end):
            t_data = time.perf_counter()
            batch = distributed.global_batch(next(it), mesh)
            rng = jax.random.fold_in(base_rng, step)
            timing["data_s"] += time.perf_counter() - t_data
            step_fn, state, metrics = timed_step(step_fn, state, batch, rng, timing, times)
            loss = float(metrics["total_loss"])
            if hook is not None:
                hook(step, state, metrics)
            if not math.isfinite(loss):
                raise NonFiniteLoss(_stopped(f"loss ({loss}) in training", step + 1, ckpt))
            seen += len(batch["label"])
            if (step + 1) % spec.log_every == 0 or step + 1 == steps:
                m = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
                m["lr"] = float(schedule(step))
                writer.write(step + 1, "train", m)
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(
                    loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}", img_s=f"{rate:.0f}"
                )
            bar.update(1)
            if (step + 1) % spec.eval_every == 0 or step + 1 == steps:
                t_eval = time.perf_counter()
                final = evaluate_at(spec, evaluator, ckpt, writer, state, step + 1, history)
                t_save = time.perf_counter()
                timing["eval_s"] += t_save - t_eval
                ckpt.save(step + 1, state, it, {**meta, "early_stopping": history}, final)
                timing["checkpoint_s"] += time.perf_counter() - t_save
                if history.get("stopped"):
                    break
        t_save = time.perf_counter()
        ckpt.wait()
        timing["checkpoint_s"] += time.perf_counter() - t_save
        state, final = finish(spec, evaluator, ckpt, state, history, final)
        finished = True
    finally:
        bar.close()
        writer.close()
        ckpt.close(failing=not finished)
    later = times[1:]
    return TrainResult(
        final,
        state,
        model,
        ds,
        timing["compile_s"] + times[0] if times else None,
        sum(later) / len(later) if later else None,
        early_stopping=history,
        timing=timing,
    )


__all__ = ["CheckpointError", "NonFiniteLoss", "TrainResult", "train"]
