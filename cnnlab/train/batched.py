"""Several seeds of one configuration trained together (`train_seeds`): one jitted step
`jax.vmap`-ed over stacked train states, so a small CNN fills an accelerator with S runs
instead of one.

Each seed keeps what a separate run has: its own initialisation, data order, augmentations and
dropout stream (the same ones `train` would use), its own evaluations, metrics.jsonl, config.json
and TensorBoard files in its workdir, and at the end its final checkpoint there (so fine-tuning
and the grid's diagnostics read it like any run's). While training, the stacked state and every
seed's data-iterator position are checkpointed together in `group_dir/checkpoints` (one atomic
orbax step for all seeds), which is what a killed group resumes from.

A seed whose loss or evaluation turns non-finite stops there, as its separate run would; the
others go on (vmapped lanes do not mix). Early stopping is per run and is refused here.
Numerically a vmapped step is the same computation with the seeds on a leading axis; XLA may
order float reductions differently, so results agree with separate runs to float tolerance,
not bit for bit (tests/test_batched_seeds.py states the tolerance).
"""

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cnnlab import distributed
from cnnlab import progress as bars
from cnnlab.errors import ConfigError, NonFiniteLoss
from cnnlab.train.checkpoint import Checkpointer
from cnnlab.train.config import check_model
from cnnlab.train.evaluation import Evaluator, RecomputeBN
from cnnlab.train.loop import (
    TrainResult,
    _stopped,
    build_model,
    evaluate_at,
    initial_state,
    input_shape,
    load_data,
    open_dataset,
    timed_step,
    train_iterator,
)
from cnnlab.train.optim import make_optimizer, peak_lr
from cnnlab.train.spec import RunSpec
from cnnlab.train.step import eval_step, train_step
from cnnlab.train.writer import MetricWriter


def without_seed(spec: RunSpec) -> dict:
    """A run's spec as JSON with its seed taken out: what seeds of one configuration share."""
    out = json.loads(json.dumps(spec.config))
    out.pop("seed", None)
    return out


def check_group(specs: list[RunSpec]) -> None:
    """Seeds train together only when everything but the seed is the same."""
    seeds = [s.seed for s in specs]
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"batch_seeds: seeds {seeds} repeat; each seed trains once")
    if any(without_seed(s) != without_seed(specs[0]) for s in specs):
        raise ConfigError("batch_seeds: runs trained together may differ only in their seed")
    if specs[0].patience:
        raise ConfigError(NO_EARLY_STOPPING)


NO_EARLY_STOPPING = (
    "config.batch_seeds=True cannot train with early stopping (config.train.patience > 0: "
    "each seed would stop at its own step); turn one of them off"
)


def stack(trees):
    """[tree, ...] -> one tree with the list on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def lane(tree, i):
    """Seed `i`'s slice of a stacked tree (one dispatch for the whole tree)."""
    return jax.tree.map(lambda x: x[i], tree)


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        bars.write(message, file=sys.stderr)


def train_seeds(
    configs, workdirs, group_dir, *, progress: bool = True, hooks=None
) -> list[TrainResult | NonFiniteLoss]:
    """Train configs that differ only in `seed` together; -> per seed its TrainResult, or the
    NonFiniteLoss that stopped it. `workdirs[i]` gets seed i's logs and final checkpoint;
    `group_dir` the group's resumable checkpoints. `hooks[i](step, state, metrics)` as in
    `train` (a hook with `needs_layer_grad_norms` gets per-kernel gradient norms)."""
    specs = [RunSpec.of(c) for c in configs]  # validates every config first
    check_group(specs)
    n, spec0 = len(specs), specs[0]
    hooks = list(hooks) if hooks is not None else [None] * n
    workdirs = [Path(w).absolute() for w in workdirs]
    group_dir = Path(group_dir).absolute()
    for w in workdirs:
        w.mkdir(parents=True, exist_ok=True)
    opened = open_dataset(configs[0])  # read once; each seed draws its own subsets
    datasets = [load_data(c, opened) for c in configs]
    loaded = datasets[0]
    model = build_model(configs[0], loaded)
    check_model(model, input_shape(configs[0], loaded))
    tx, schedule = make_optimizer(
        configs[0].optim, spec0.steps, peak_lr(configs[0].optim, spec0.batch_size)
    )
    states = [initial_state(c, model, ds, tx) for c, ds in zip(configs, datasets, strict=True)]
    mesh = distributed.data_mesh()
    state = distributed.replicate(stack(states), mesh)
    del states
    its = [train_iterator(s, ds) for s, ds in zip(specs, datasets, strict=True)]
    ckpt = Checkpointer(group_dir / "checkpoints", spec0.keep_checkpoints, None, iterators=n)
    start, saved = 0, {}
    restored = ckpt.restore_newest(state, its, warn=_warn)
    if restored:
        start, state, saved = restored
    failed = {int(k): v for k, v in (saved.get("failed") or {}).items()}  # JSON keys: seeds
    errors = {i: NonFiniteLoss(failed[s.seed]) for i, s in enumerate(specs) if s.seed in failed}
    live = [i for i in range(n) if i not in errors]

    grad_norms = any(getattr(h, "needs_layer_grad_norms", False) for h in hooks)
    cfg = dataclasses.replace(spec0.step, layer_grad_norms=grad_norms)
    repl = distributed.replicated(mesh)
    step_fn = jax.jit(
        jax.vmap(functools.partial(train_step, cfg=cfg)),
        donate_argnums=0,
        out_shardings=(repl, repl),
    )
    eval_fn = jax.jit(functools.partial(eval_step, cfg=cfg), out_shardings=repl)
    recompute = [RecomputeBN(spec0, loaded, model.apply, mesh)]  # one jitted fn for all seeds
    recompute += [RecomputeBN(s, ds, model.apply, mesh, fn=recompute[0].fn)
                  for s, ds in zip(specs[1:], datasets[1:], strict=True)]  # fmt: skip
    evaluators = [
        Evaluator(s, ds, eval_fn, r) for s, ds, r in zip(specs, datasets, recompute, strict=True)
    ]
    writers = [MetricWriter(w, jax.process_index(), resume_step=start) for w in workdirs]
    if jax.process_index() == 0:
        for w, s in zip(workdirs, specs, strict=True):
            (w / "config.json").write_text(json.dumps(s.config, indent=2))
    keys = jnp.stack([jax.random.key(s.seed + 1) for s in specs])  # fit's stream per seed
    fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    stacked = NamedSharding(mesh, P(None, "data"))  # (seed, batch, ...): batch over devices

    def next_batch():
        parts = [next(it) for it in its]
        return {
            k: jax.make_array_from_process_local_data(stacked, np.stack([p[k] for p in parts]))
            for k in parts[0]
        }

    bar = bars.bar(
        total=spec0.steps,
        initial=start,
        unit="step",
        disable=not progress or jax.process_index() > 0,
        desc=f"train {spec0.model_name} x{n} seeds",
    )
    # a group that had finished: its seeds' final metrics, as saved with the last step
    done = {int(k): v for k, v in (saved.get("seed_metrics") or {}).items()}
    final = {i: done[specs[i].seed] for i in live if start >= spec0.steps}
    seen, t0, times, finished = 0, time.perf_counter(), [], False
    timing = dict.fromkeys(("compile_s", "data_s", "compute_s", "eval_s", "checkpoint_s"), 0.0)
    try:
        for step in range(start, spec0.steps):
            if not live:
                break
            t_data = time.perf_counter()
            batch = next_batch()
            rngs = fold(keys, step)
            timing["data_s"] += time.perf_counter() - t_data
            step_fn, state, metrics = timed_step(step_fn, state, batch, rngs, timing, times)
            host = jax.device_get(metrics)
            seen += n * int(batch["label"].shape[1])
            log = (step + 1) % spec0.log_every == 0 or step + 1 == spec0.steps
            for i in list(live):
                mine = {k: v[i] for k, v in host.items()}
                if hooks[i] is not None:
                    hooks[i](step, lane(state, i), mine)
                loss = float(mine["total_loss"])
                if not math.isfinite(loss):
                    errors[i] = NonFiniteLoss(
                        _stopped(f"loss ({loss}) in training", step + 1, ckpt)
                    )
                    live.remove(i)
                    continue
                if log:
                    m = {k: float(v) for k, v in mine.items() if np.ndim(v) == 0}
                    writers[i].write(step + 1, "train", {**m, "lr": float(schedule(step))})
            if log and live:
                i = live[0]
                bar.set_postfix(
                    loss=f"{float(host['loss'][i]):.3f}",
                    img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                )
            bar.update(1)
            if (step + 1) % spec0.eval_every == 0 or step + 1 == spec0.steps:
                t_eval = time.perf_counter()
                for i in list(live):
                    try:
                        final[i] = evaluate_at(
                            specs[i], evaluators[i], ckpt, writers[i], lane(state, i), step + 1, {}
                        )
                    except NonFiniteLoss as e:
                        errors[i] = e
                        live.remove(i)
                t_save = time.perf_counter()
                timing["eval_s"] += t_save - t_eval
                meta = {
                    "config": without_seed(spec0),
                    "seeds": [s.seed for s in specs],
                    "seed_metrics": {specs[i].seed: final[i] for i in live},
                    "failed": {specs[i].seed: str(e) for i, e in errors.items()},
                    "dataset": loaded.name,
                }
                if live:
                    ckpt.save(step + 1, state, its, meta)
                timing["checkpoint_s"] += time.perf_counter() - t_save
        t_save = time.perf_counter()
        ckpt.wait()
        for i in live:  # each seed's final state where a separate run would have it
            _save_final(specs[i], workdirs[i], lane(state, i), its[i], final[i], loaded.name)
        timing["checkpoint_s"] += time.perf_counter() - t_save
        finished = True
    finally:
        bar.close()
        for w in writers:
            w.close()
        ckpt.close(failing=not finished)
    later = times[1:]
    first = (timing["compile_s"] + times[0]) / n if times else None
    share = {k: v / n for k, v in timing.items()}  # each seed's share of the group's time
    results: list = []
    for i in range(n):
        if i in errors:
            results.append(errors[i])
            continue
        results.append(
            TrainResult(
                final[i],
                lane(state, i),
                model,
                datasets[i],
                first,
                sum(later) / len(later) / n if later else None,
                timing=share,
            )
        )
    return results


def _save_final(spec: RunSpec, workdir: Path, state, it, metrics: dict, dataset: str) -> None:
    """Seed's final state as its own run's checkpoint (skipped if a re-run already wrote it)."""
    ckpt = Checkpointer(
        workdir / "checkpoints", spec.keep_checkpoints, spec.best_metric, spec.best_mode
    )
    try:
        if ckpt.latest_step() != spec.steps:
            meta = {"config": spec.config, "dataset": dataset, "early_stopping": {}}
            ckpt.save(spec.steps, state, it, meta, metrics)
        ckpt.wait()
    finally:
        ckpt.close()
