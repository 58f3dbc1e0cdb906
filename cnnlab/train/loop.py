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
from cnnlab.paths import path_str
from cnnlab.train.checkpoint import Checkpointer
from cnnlab.train.config import ConfigError, check_model, validate
from cnnlab.train.optim import make_optimizer, peak_lr
from cnnlab.train.precise_bn import precise_batch_stats
from cnnlab.train.step import StepConfig, TrainState, eval_step, train_step
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


def step_config(c) -> StepConfig:
    return StepConfig(
        total_steps=c.train.steps,
        label_smoothing=c.loss.label_smoothing,
        side_weight=c.loss.side_weight,
        side_schedule=c.loss.side_schedule,
        side_gamma=c.loss.side_gamma,
        side_drop_step=c.loss.side_drop_step,
        compute_dtype=c.train.compute_dtype,
        ema_decay=float(c.train.get("ema_decay", 0.0)),
    )


def evaluate(eval_fn, state, ds, c, split: str = "test", limit: int | None = None) -> dict:
    """Mean loss/accuracy per head over a split (its first `limit` examples if given), every
    process taking its slice."""
    sums = None
    mesh = distributed.data_mesh()
    batches = data.eval_batches(
        ds,
        distributed.local_batch_size(c.data.batch_size),
        image_size=c.data.image_size or None,
        split=split,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        limit=limit,
    )
    for batch in batches:
        out = jax.device_get(eval_fn(state, distributed.global_batch(batch, mesh)))
        sums = out if sums is None else {k: sums[k] + out[k] for k in sums}
    count = sums.pop("count")
    return {k: float(v) / float(count) for k, v in sums.items()}


class RecomputeBN:
    """BatchNorm statistics recomputed for given parameters over the first `train.train_subset`
    training images (unaugmented, one global batch; see precise_bn.py): PreciseBN for the final
    weights, and the statistics of the weight average, whose running statistics were never
    tracked. Jitted once per run; the images are read on first use."""

    def __init__(self, c, ds, apply_fn, mesh):
        n = min(int(c.train.get("train_subset", 0)), len(ds.train))
        self.n = n - n % jax.device_count()  # one global batch split over the devices
        self.c, self.ds, self.mesh, self.images = c, ds, mesh, None
        self.fn = jax.jit(
            functools.partial(precise_batch_stats, apply_fn),
            out_shardings=distributed.replicated(mesh),
        )

    def __call__(self, state, params):
        """`state` with `params` and BN statistics recomputed for them."""
        if self.images is None:
            batch = data.eval_batches(
                self.ds,
                self.n // jax.process_count(),
                image_size=self.c.data.image_size or None,
                split="train",
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                limit=self.n,
            )
            self.images = distributed.global_batch(next(batch), self.mesh)["image"]
        stats = self.fn({"params": params, "batch_stats": state.batch_stats}, self.images)
        return state.replace(params=params, batch_stats=stats)


def ema_evaluation(eval_fn, state, ds, c, recompute: RecomputeBN) -> dict:
    """Test metrics of the parameters' moving average (`ema/...`), with BN statistics
    recomputed for it: the running statistics belong to the raw weights."""
    if state.ema_params is None:
        return {}
    ema = recompute(state, state.ema_params)
    return {f"ema/{k}": v for k, v in evaluate(eval_fn, ema, ds, c).items()}


def final_evaluation(eval_fn, state, ds, c, recompute: RecomputeBN) -> dict:
    """Extra metrics of the last step: eval-mode accuracy on a fixed training subset
    (`train_subset/...`, the first `train.train_subset` training images, unaugmented) and, with
    `train.precise_bn`, test and subset metrics with BN statistics recomputed over that subset
    (`precise_bn/...`; see precise_bn.py)."""
    n = min(int(c.train.get("train_subset", 0)), len(ds.train))
    if not n:
        return {}
    out = {f"train_subset/{k}": v for k, v in evaluate(eval_fn, state, ds, c, "train", n).items()}
    if not c.train.get("precise_bn") or not recompute.n:
        return out
    precise = recompute(state, state.params)
    for split, limit, prefix in (
        ("test", None, "precise_bn/"),
        ("train", recompute.n, "precise_bn/train_subset/"),
    ):
        out.update(
            {prefix + k: v for k, v in evaluate(eval_fn, precise, ds, c, split, limit).items()}
        )
    return out


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


def load_data(c) -> data.Dataset:
    """The config's dataset, restricted to data.classes with few-shot/val splits if asked."""
    ds = data.load(c.data.name, c.data.data_dir or None, dict(c.data.synthetic))
    return data.subset(
        ds, c.data.classes, c.data.train_per_class, c.data.val_per_class, seed=c.seed
    )


def train(c, workdir, *, progress: bool = True, hook=None) -> TrainResult:
    """Train per config `c` in `workdir`, resuming from its latest checkpoint.

    `hook(step, state, metrics)`, if given, runs after every step (e.g. diagnostics).
    """
    validate(c)
    ds = load_data(c)
    model = build_model(c, ds)
    check_model(model, input_shape(c, ds))
    tx, schedule = make_optimizer(c.optim, c.train.steps, peak_lr(c.optim, c.data.batch_size))
    state = initial_state(c, model, ds, tx)
    return fit(c, workdir, ds, model, state, c.train.steps, schedule, progress=progress, hook=hook)


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        bars.write(message, file=sys.stderr)


def non_finite(metrics: dict, state) -> str | None:
    """What is not finite in an evaluation or the state it evaluated, or None."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            return f"{key} ({value}) in evaluation"
    for name in ("batch_stats", "params"):
        leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(getattr(state, name)))
        for path, leaf in leaves:
            if not np.isfinite(leaf).all():
                return f"{name} {path_str(path)}"
    return None


def _stopped(what: str, step: int, ckpt: Checkpointer) -> str:
    last = ckpt.latest_step()
    kept = (
        f"the last good checkpoint (step {last}) is kept in {ckpt.directory}"
        if last
        else "no checkpoint had been saved yet"
    )
    return (
        f"non-finite {what} at step {step}; stopped without saving it, {kept}. Lower "
        f"config.optim.lr, or check the data and config.model"
    )


def _early_stop(history: dict, val_loss: float, step: int, patience: int, min_delta: float):
    """Update {'best', 'best_step', 'bad_evals', 'stopped'} after an eval (Keras EarlyStopping)."""
    if history.get("best") is None or val_loss < history["best"] - min_delta:
        history.update(best=val_loss, best_step=step, bad_evals=0)
    else:
        history["bad_evals"] += 1
    history["stopped"] = bool(patience) and history["bad_evals"] >= patience
    return history


def fit(
    c,
    workdir,
    ds: data.Dataset,
    model,
    state: TrainState,
    steps: int,
    schedule,
    *,
    progress: bool = True,
    hook=None,
    desc: str | None = None,
) -> TrainResult:
    """Run `steps` train steps from `state` (or from workdir's latest checkpoint) with evals.

    Every `train.eval_every` steps: test metrics, plus `val_*` metrics when `ds` has a validation
    split, and a checkpoint. With `train.patience` > 0, training stops after that many evals
    without a `train.min_delta` drop in val loss and the best-val-loss state is restored.
    """
    workdir = Path(workdir).absolute()  # orbax needs absolute paths
    workdir.mkdir(parents=True, exist_ok=True)
    patience = int(c.train.get("patience", 0))
    if patience and ds.val is None:
        raise ConfigError(
            "config.train.patience > 0 (early stopping) needs a validation split; set "
            "config.data.val_per_class (examples per class held out of train)"
        )
    mesh = distributed.data_mesh()  # params replicated, batches split over all devices
    state = distributed.replicate(state, mesh)
    it = data.train_iterator(
        ds,
        distributed.local_batch_size(c.data.batch_size),
        c.seed,
        image_size=c.data.image_size or None,
        augment=c.data.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    best = (c.train.best_metric, c.train.get("best_mode", "max"))
    if patience:  # the best-val-loss checkpoint must survive: training ends by restoring it
        best = ("val_loss", "min")
    ckpt = Checkpointer(workdir / "checkpoints", c.train.keep_checkpoints, *best)
    start, history = 0, {}
    restored = ckpt.restore_newest(state, it, warn=_warn)
    if restored:
        start, state, saved = restored
        history = saved.get("early_stopping") or {}
    cfg = dataclasses.replace(
        step_config(c),
        total_steps=steps,
        layer_grad_norms=bool(getattr(hook, "needs_layer_grad_norms", False)),
    )
    repl = distributed.replicated(mesh)
    step_fn = jax.jit(
        functools.partial(train_step, cfg=cfg), donate_argnums=0, out_shardings=(repl, repl)
    )
    eval_fn = jax.jit(functools.partial(eval_step, cfg=cfg), out_shardings=repl)
    recompute = RecomputeBN(c, ds, model.apply, mesh)
    writer = MetricWriter(workdir, jax.process_index(), resume_step=start)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(c.to_json_best_effort(indent=2))
    base_rng = jax.random.key(c.seed + 1)
    end = start if history.get("stopped") else steps
    bar = bars.bar(
        total=steps,
        initial=start,
        disable=not progress or jax.process_index() > 0,
        unit="step",
        desc=desc or f"train {c.model.name}",
    )
    meta = {"config": json.loads(c.to_json_best_effort()), "dataset": ds.name}
    final, seen, t0, times, finished = {}, 0, time.perf_counter(), [], False
    timing = dict.fromkeys(("compile_s", "data_s", "compute_s", "eval_s", "checkpoint_s"), 0.0)
    try:
        for step in range(start, end):
            t_data = time.perf_counter()
            batch = distributed.global_batch(next(it), mesh)
            rng = jax.random.fold_in(base_rng, step)
            timing["data_s"] += time.perf_counter() - t_data
            if step == start:  # compile ahead of time, so that compile and compute are apart
                t_compile = time.perf_counter()
                step_fn = step_fn.lower(state, batch, rng).compile()
                timing["compile_s"] = time.perf_counter() - t_compile
            t_step = time.perf_counter()
            state, metrics = step_fn(state, batch, rng)
            loss = float(metrics["total_loss"])  # waits for the step: times are real
            times.append(time.perf_counter() - t_step)
            timing["compute_s"] += times[-1]
            if hook is not None:
                hook(step, state, metrics)
            if not math.isfinite(loss):
                raise NonFiniteLoss(_stopped(f"loss ({loss}) in training", step + 1, ckpt))
            seen += len(batch["label"])
            if (step + 1) % c.train.log_every == 0 or step + 1 == steps:
                m = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
                m["lr"] = float(schedule(step))
                writer.write(step + 1, "train", m)
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(
                    loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}", img_s=f"{rate:.0f}"
                )
            bar.update(1)
            if (step + 1) % c.train.eval_every == 0 or step + 1 == steps:
                t_eval = time.perf_counter()
                final = evaluate(eval_fn, state, ds, c)
                final.update(ema_evaluation(eval_fn, state, ds, c, recompute))
                if step + 1 == steps:
                    final.update(final_evaluation(eval_fn, state, ds, c, recompute))
                writer.write(step + 1, "test", final)
                if ds.val is not None:
                    val = evaluate(eval_fn, state, ds, c, split="val")
                    writer.write(step + 1, "val", val)
                    final.update({f"val_{k}": v for k, v in val.items()})
                    _early_stop(history, val["loss"], step + 1, patience, float(c.train.min_delta))
                bad = non_finite(final, state)
                if bad:  # a checkpoint is only good when it evaluates finite
                    raise NonFiniteLoss(_stopped(bad, step + 1, ckpt))
                t_save = time.perf_counter()
                timing["eval_s"] += t_save - t_eval
                ckpt.save(step + 1, state, it, {**meta, "early_stopping": history}, final)
                timing["checkpoint_s"] += time.perf_counter() - t_save
                if history.get("stopped"):
                    break
        t_save = time.perf_counter()
        ckpt.wait()
        timing["checkpoint_s"] += time.perf_counter() - t_save
        best = history.get("best_step")
        if patience and best and best != int(state.step):  # restore the best-val-loss weights
            state, saved = ckpt.restore(best, state)
            final = saved["metrics"]
        elif not final:  # already finished: report the saved run's metrics
            final = ckpt.restore_meta(int(state.step)).get("metrics") or evaluate(
                eval_fn, state, ds, c
            )
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
