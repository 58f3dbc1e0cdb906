"""Several seeds of one configuration trained together (`train_seeds`): one jitted step
`jax.vmap`-ed over stacked train states, so a small CNN fills an accelerator with S runs
instead of one.

Each seed is a lane of the one training loop (`cnnlab.train.loop.drive`) and keeps what its
separate run has: its own initialisation, data order, augmentations and dropout stream (the same
ones `train` would use), its own evaluations, metrics.jsonl, config.json and TensorBoard files in
its workdir, and its own checkpoints there (the last N and the best, the same steps), so
fine-tuning and the grid's diagnostics read it like any run's. Besides, the stacked state and
every seed's data-iterator position are checkpointed together in `group_dir/checkpoints` (one
atomic orbax step for all seeds): what a killed group resumes from.

A seed whose loss or evaluation turns non-finite stops there, as its separate run would, and
its own last good checkpoint stays; the others go on (vmapped lanes do not mix). Early
stopping is per run and is refused here.
Numerically a vmapped step is the same computation with the seeds on a leading axis; XLA may
order float reductions differently, so results agree with separate runs to float tolerance,
not bit for bit (tests/test_batched_seeds.py states the tolerance).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cnnlab import distributed
from cnnlab.errors import ConfigError, NonFiniteLoss
from cnnlab.train import compiled
from cnnlab.train.checkpoint import Checkpointer
from cnnlab.train.config import check_model
from cnnlab.train.lock import WorkdirLock
from cnnlab.train.loop import (
    Lane,
    Stepping,
    TrainResult,
    build_model,
    initial_state,
    input_shape,
    lanes_of,
    load_data,
    open_dataset,
    result,
    run_lanes,
    warn,
)
from cnnlab.train.spec import RunSpec


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
    if specs[0].train.patience:
        raise ConfigError(NO_EARLY_STOPPING)


NO_EARLY_STOPPING = (
    "config.batch_seeds=True cannot train with early stopping (config.train.patience > 0: "
    "each seed would stop at its own step); turn one of them off"
)


def stack(trees):
    """[tree, ...] -> one tree with the list on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def lane_of(tree, i):
    """Seed `i`'s slice of a stacked tree (one dispatch for the whole tree)."""
    return jax.tree.map(lambda x: x[i], tree)


def train_seeds(
    configs, workdirs, group_dir, *, progress: bool = True, hooks=None, accept_changes=False
) -> list[TrainResult | NonFiniteLoss]:
    """Train configs that differ only in `seed` together; -> per seed its TrainResult, or the
    NonFiniteLoss that stopped it. `workdirs[i]` gets what seed i's separate run would write
    (logs, config.json, its checkpoints: the last N and the best); `group_dir` the group's
    resumable checkpoints. `hooks[i](step, state, metrics)` as in `train` (a hook with
    `needs_layer_grad_norms` gets per-kernel gradient norms). A resume on a changed recipe is
    refused unless `accept_changes`, as `train`'s."""
    specs = [RunSpec.of(c) for c in configs]  # validates every config first
    check_group(specs)
    spec0, hooks = specs[0], list(hooks) if hooks is not None else [None] * len(specs)
    opened = open_dataset(spec0)  # read once; each seed draws its own subsets
    datasets = [load_data(s, opened) for s in specs]
    model = build_model(spec0, datasets[0])
    check_model(model, input_shape(spec0, datasets[0]))
    tx, schedule = compiled.optimizer(spec0.optim, spec0.steps, spec0.peak_lr)
    mesh = distributed.data_mesh()
    state = distributed.replicate(
        stack([initial_state(s, model, ds, tx) for s, ds in zip(specs, datasets, strict=True)]),
        mesh,
    )
    lanes, cfg = lanes_of(specs, workdirs, datasets, model, hooks, mesh)
    keys = jnp.stack([jax.random.key(s.seed + 1) for s in specs])  # fit's stream per seed
    fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    stacked = NamedSharding(mesh, P(None, "data"))  # (seed, batch, ...): batch over devices

    def next_batch():
        parts = [next(lane.it) for lane in lanes]
        return {k: jax.make_array_from_process_local_data(stacked, np.stack([p[k] for p in parts]))
                for k in parts[0]}  # fmt: skip

    stepping = Stepping(compiled.train_fn(cfg, mesh, seeds=True), next_batch,
                        lambda step: fold(keys, step), schedule, pick=lane_of)  # fmt: skip
    group = Group(group_dir, specs, lanes, datasets[0].name)
    _, finals, timing, times = run_lanes(
        lanes, state, stepping, group=group, progress=progress,
        desc=f"train {spec0.model.name} x{len(specs)} seeds", accept_changes=accept_changes,
    )  # fmt: skip
    return [
        lane.error
        if lane.error is not None
        else result(finals[i][1], finals[i][0], model, lane.ds, timing, times, lanes=len(lanes))
        for i, lane in enumerate(lanes)
    ]


class Group:
    """The stacked state's checkpoints (group_dir/checkpoints): every seed's state and data
    iterator in one atomic orbax step, and which seeds failed; what a killed group resumes from
    (each seed's own checkpoints are what its run keeps)."""

    def __init__(self, group_dir, specs: list[RunSpec], lanes: list[Lane], dataset: str):
        self.specs, self.lanes, self.dataset = specs, lanes, dataset
        self.directory = Path(group_dir).absolute() / "checkpoints"
        self.lock = self.ckpt = None  # held between __enter__ and __exit__

    def __enter__(self) -> "Group":
        """Lock the group's directory, then open its checkpoints (a failure releases it)."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.lock = WorkdirLock(self.directory.parent, warn).acquire()
        try:
            self.ckpt = Checkpointer(self.directory, self.specs[0].train.keep_checkpoints, None,
                                     iterators=len(self.specs))  # fmt: skip
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, kind, *_) -> None:
        try:
            self.ckpt.close(failing=kind is not None)
        finally:
            self.lock.release()

    def resume(self, state):
        """-> (first step to run, state); seeds that had failed get their error back."""
        restored = self.ckpt.restore_newest(state, [x.it for x in self.lanes], warn=warn)
        if not restored:
            return 0, state
        start, state, saved = restored
        failed = {int(k): v for k, v in (saved.get("failed") or {}).items()}  # JSON keys
        for spec, lane in zip(self.specs, self.lanes, strict=True):
            if spec.seed in failed:
                lane.error = NonFiniteLoss(failed[spec.seed])
        return start, state

    def save(self, step: int, state) -> None:
        if step in self.ckpt.manager.all_steps():  # an evaluation saved it, then a signal came
            return
        meta = {
            "config": without_seed(self.specs[0]),
            "seeds": [s.seed for s in self.specs],
            "failed": {
                s.seed: str(x.error)
                for s, x in zip(self.specs, self.lanes, strict=True)
                if x.error is not None
            },
            "dataset": self.dataset,
        }
        self.ckpt.save(step, state, [x.it for x in self.lanes], meta)
