"""The training loop: data, model, state, resume, jitted steps, eval, checkpoints, logs."""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from cnnlab import data, distributed, models, provenance
from cnnlab import progress as bars
from cnnlab.errors import CheckpointError, ConfigError, NonFiniteLoss
from cnnlab.records import write_text_atomic
from cnnlab.train import compiled, names, preempt
from cnnlab.train.checkpoint import Checkpointer
from cnnlab.train.config import check_model
from cnnlab.train.evaluation import Evaluator, RecomputeBN, non_finite
from cnnlab.train.lock import WorkdirLock
from cnnlab.train.spec import RESUMABLE, RunSpec, recipe_change
from cnnlab.train.step import TrainState
from cnnlab.train.writer import MetricWriter


@dataclasses.dataclass
class TrainResult:
    """What a run produced: final test metrics, the trained state, and timings."""

    metrics: dict
    state: TrainState
    model: object
    dataset: data.Dataset
    # wall time of the first step run here (compile included), and the mean of the later
    # steps: of the step as it ran, which trained `lanes` runs at once (batched seeds)
    first_step_s: float | None
    step_s: float | None
    early_stopping: dict = dataclasses.field(default_factory=dict)  # best, best_step, stopped
    # seconds spent here (this run's share when `lanes` > 1): compiling the train step, waiting
    # for data, computing steps, evaluating (eval compiles included), saving checkpoints (the
    # run's own, and a batched group's)
    timing: dict = dataclasses.field(default_factory=dict)
    lanes: int = 1


def build_model(spec: RunSpec, ds):
    """The spec's model for dataset `ds` (its classes), with the spec's side heads."""
    m = spec.model
    return compiled.intern(
        models.create(
            m.name,
            num_classes=1 if ds.num_classes == 2 and m.binary else ds.num_classes,
            side_taps=spec.loss.side_taps,
            side_head=spec.loss.side_head,
            side_hint=spec.loss.hint_target,
            **m.kwargs,
        )
    )


def input_shape(spec: RunSpec, ds) -> tuple[int, int, int]:
    size = spec.data.image_size
    return (size, size, ds.image_shape[2]) if size else tuple(ds.image_shape)


def init_variables(spec: RunSpec, model, ds) -> dict:
    """The model's variables initialised from the spec's seed for its input shape."""
    x = np.zeros((1, *input_shape(spec, ds)), np.float32)
    return compiled.init_fn(model)(jax.random.key(spec.seed), x)


def initial_state(spec: RunSpec, model, ds, tx):
    """Freshly initialised train state (`fit` places it on the devices)."""
    variables = init_variables(spec, model, ds)
    return TrainState.create(model.apply, variables, tx, ema=spec.train.ema_decay > 0)


def open_dataset(spec: RunSpec) -> data.Dataset:
    """The spec's dataset as stored (every class, every example)."""
    d = spec.data
    return data.load(d.name, d.data_dir or None, d.synthetic)


def load_data(spec: RunSpec, opened: data.Dataset | None = None) -> data.Dataset:
    """The spec's dataset (`opened`: what `open_dataset(spec)` returned before), restricted to
    data.classes with few-shot/val splits drawn with the spec's seed if asked."""
    ds = open_dataset(spec) if opened is None else opened
    d = spec.data
    return data.subset(ds, d.classes, d.train_per_class, d.val_per_class, seed=spec.seed)


def train_iterator(spec: RunSpec, ds: data.Dataset):
    """This process's endless training batches for the run (seeded order and augmentation).
    data.augment=True for a prepared dataset stored without flips or crops would do nothing:
    a DataError (synthetic noise images are never augmented)."""
    if spec.data.augment and not (ds.spec.flip or ds.spec.crop_pad) and ds.name != "synthetic":
        raise data.DataError(
            f"config.data.augment=True does nothing for {ds.name!r}: it is stored without "
            f"augmentation (no flips, no crop padding); set config.data.augment=False, or "
            f"prepare it again with --flip/--crop_pad=N and --force"
        )
    return data.train_iterator(
        ds,
        distributed.local_batch_size(spec.data.batch_size),
        spec.seed,
        image_size=spec.data.resize,
        augment=spec.data.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def train(c, workdir, *, progress: bool = True, hook=None, accept_changes: bool = False
          ) -> TrainResult:  # fmt: skip
    """Train per config `c` in `workdir`, resuming from its newest checkpoint that restores
    (on the same recipe: see `Lane.open`; `accept_changes` continues on a changed one).

    `hook(step, state, metrics)`, if given, runs after every step (e.g. diagnostics).
    """
    spec = RunSpec.of(c)  # validates c before anything is read or written
    ds = load_data(spec)
    model = build_model(spec, ds)
    check_model(model, input_shape(spec, ds))
    tx, schedule = compiled.optimizer(spec.optim, spec.steps, spec.peak_lr)
    state = initial_state(spec, model, ds, tx)
    return fit(spec, workdir, ds, model, state, schedule, progress=progress, hook=hook,
               accept_changes=accept_changes)  # fmt: skip


def timed_step(step_fn, state, batch, rng, timing: dict, times: list):
    """One train step, timed into `timing` ('compile_s', 'compute_s') and `times` (each step's
    seconds). The first (empty `times`) compiles the jitted `step_fn` ahead of time, so that
    compile and compute are apart. -> (compiled step_fn, state, metrics)."""
    if not times:
        t_compile = time.perf_counter()
        step_fn = compiled.compile_step(step_fn, state, batch, rng)
        timing["compile_s"] = time.perf_counter() - t_compile
    t_step = time.perf_counter()
    state, metrics = jax.block_until_ready(step_fn(state, batch, rng))  # times are real
    times.append(time.perf_counter() - t_step)
    timing["compute_s"] += times[-1]
    return step_fn, state, metrics


def warn(message: str) -> None:
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


class Lane:
    """One run inside the loop (`drive`): its spec, workdir, data iterator, evaluator, metric
    writer, its own checkpoints (the last `keep_checkpoints` plus the best, as every run keeps),
    early-stopping history, last evaluated metrics, and the NonFiniteLoss that stopped it, if
    any. A separate run is one lane of a plain jitted step; seeds trained together are lanes of
    one vmapped step (`cnnlab.train.batched`), each keeping exactly what its separate run keeps."""

    def __init__(self, spec: RunSpec, workdir, ds: data.Dataset, evaluator, hook=None):
        self.spec, self.ds, self.evaluator, self.hook = spec, ds, evaluator, hook
        self.workdir = Path(workdir).absolute()  # orbax needs absolute paths
        self.history, self.final, self.error, self.writer = {}, {}, None, None
        self.lock = self.it = self.ckpt = None  # held between __enter__ and __exit__

    def __enter__(self) -> "Lane":
        """Lock the workdir (before anything is written), then open the data iterator and the
        checkpoints; a failure among them releases the lock."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lock = WorkdirLock(self.workdir, warn).acquire()
        try:
            self.it = train_iterator(self.spec, self.ds)
            t = self.spec.train
            self.ckpt = Checkpointer(self.workdir / "checkpoints", t.keep_checkpoints,
                                     *t.best_rule)  # fmt: skip
        except BaseException:
            self.lock.release()
            raise
        return self

    def resume(self, state):
        """-> (first step to run, state) from this run's newest checkpoint that restores."""
        restored = self.ckpt.restore_newest(state, self.it, warn=warn)
        if not restored:
            return 0, state
        start, state, saved = restored
        self.history = saved.get("early_stopping") or {}
        return start, state

    def open(self, start: int, accept_changes: bool = False) -> None:
        """Check that a resume (`start` > 0) is on the recipe that made the checkpoints, start
        logging (records after `start` are replaced on a resume), add this session to
        provenance.json and write config.json. Another recipe is a ConfigError, or with
        `accept_changes` a warning, the old config.json kept as config.step<start>.json."""
        path = self.workdir / "config.json"
        if start > 0 and path.exists():
            change = recipe_change(json.loads(path.read_text()), self.spec.config)
            if change and not accept_changes:
                key, old, new = change
                raise ConfigError(
                    f"{self.workdir} was trained to step {start} with another recipe: {key} is "
                    f"{old!r} there and {new!r} now (only {', '.join(RESUMABLE)} may change "
                    "on a resume); use another --workdir, set it back, or pass --accept_changes "
                    "to continue this run on the new recipe"
                )
            if change and jax.process_index() == 0:
                kept = self.workdir / f"config.step{start}.json"
                os.replace(path, kept)
                warn(f"warning: {self.workdir} resumes at step {start} on a changed recipe "
                     f"({change[0]}: {change[1]!r} -> {change[2]!r}); the old config is "
                     f"{kept.name}")  # fmt: skip
        self.writer = MetricWriter(self.workdir, jax.process_index(), resume_step=start)
        provenance.record(self.workdir, start)  # code, packages, machine, command: per session
        if jax.process_index() == 0:
            write_text_atomic(self.workdir / "config.json", json.dumps(self.spec.config, indent=2))

    @property
    def live(self) -> bool:
        return self.error is None and not self.history.get("stopped")

    def stepped(self, step: int, state, metrics: dict, lr) -> dict | None:
        """After train step `step` (0-based): the hook, the non-finite check (NonFiniteLoss),
        the log line when due. -> the logged scalars, or None."""
        if self.hook is not None:
            self.hook(step, state, metrics)
        loss = float(metrics["total_loss"])
        if not math.isfinite(loss):
            raise NonFiniteLoss(_stopped(f"loss ({loss}) in training", step + 1, self.ckpt))
        if not due(step, self.spec.train.log_every, self.spec.steps):
            return None
        m = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        self.writer.write(step + 1, "train", {**m, "lr": lr() if callable(lr) else lr})
        return m

    def evaluate(self, step: int, state) -> None:
        """Evaluate at `step` (1-based): log it, update early stopping; NonFiniteLoss when it or
        the state is not finite (then it must not be saved as good)."""
        test, val = self.evaluator.at(state, last=step == self.spec.steps)
        self.writer.write(step, "test", test)
        metrics = dict(test)
        if val is not None:
            self.writer.write(step, "val", val)
            metrics.update(names.prefixed(names.VAL, val))
            t = self.spec.train
            _early_stop(self.history, val["loss"], step, t.patience, t.min_delta)
        bad = non_finite(metrics, state)
        if bad:  # a checkpoint is only good when it evaluates finite
            raise NonFiniteLoss(_stopped(bad, step, self.ckpt))
        self.final = metrics

    def save(self, step: int, state, evaluated: bool = True) -> None:
        """This run's checkpoint of `step`, unless a resumed group (batched seeds restart from
        their group's step) had saved it already: the same step, computed again. `evaluated`
        False (a preemption's save): no metrics, so it never counts as the best step."""
        if step in self.ckpt.manager.all_steps():
            return
        meta = {"config": self.spec.config, "dataset": self.ds.name}
        metrics = self.final if evaluated else None
        self.ckpt.save(step, state, self.it, {**meta, "early_stopping": self.history}, metrics)

    def finish(self, state):
        """After the last step: the best-val-loss weights when early stopping chose them, or, for
        a run that had already finished, its saved metrics. -> (state, metrics)."""
        self.ckpt.wait()
        best = self.history.get("best_step")
        if self.spec.train.patience and best and best != int(state.step):
            state, saved = self.ckpt.restore(best, state)
            return state, saved["metrics"]
        final = self.final
        if not final:
            final = self.ckpt.restore_meta(int(state.step)).get("metrics")
            final = final or self.evaluator.test(state)
        return state, final

    def __exit__(self, kind, *_) -> None:
        """Close the metric writer and the checkpoints (a failing run's pending save is not
        waited for), then release the workdir."""
        try:
            if self.writer is not None:
                self.writer.close()
            self.ckpt.close(failing=kind is not None or self.error is not None)
        finally:
            self.lock.release()


_fold_in = jax.jit(jax.random.fold_in)  # the same key as op by op, in one dispatch (~10x less)


@dataclasses.dataclass
class Stepping:
    """How the loop steps its lanes: the jitted step, the next (global) batch, the step's
    dropout key, the lr schedule (for logs), and `pick(tree, i)`, lane i's slice of a stacked
    state and metrics (None: one lane, nothing stacked)."""

    step_fn: object
    next_batch: object
    rng_at: object
    schedule: object
    pick: object = None

    def lane(self, tree, i: int):
        """Lane i's part of `tree`: its slice when stacked, else the whole tree."""
        return tree if self.pick is None else self.pick(tree, i)

    @classmethod
    def one(cls, lane: Lane, step_fn, schedule, mesh) -> "Stepping":
        """A separate run's: its iterator's batches, dropout keys folded from seed + 1."""
        base = jax.random.key(lane.spec.seed + 1)
        return cls(step_fn, lambda: distributed.global_batch(next(lane.it), mesh),
                   lambda step: _fold_in(base, step), schedule)  # fmt: skip


@dataclasses.dataclass
class Session:
    """What one training session holds while it runs: its lanes (each entered: workdir locked,
    iterator and checkpoints open), batched seeds' group checkpoints, the progress bar, and the
    step it resumed from."""

    lanes: list
    group: object
    bar: object
    start: int


@contextlib.contextmanager
def session(lanes: list[Lane], state, *, group=None, progress=True, desc="",
            accept_changes=False):  # fmt: skip
    """The one lifetime of a run's resources, separate or batched: enter every lane and the
    group in order, resume from the newest checkpoint that restores (the group's for batched
    seeds), open every lane's logs (refusing a changed recipe unless `accept_changes`) and
    the bar. -> (Session, resumed state). On leaving, released in reverse order, a failing
    exit keeping what was saved."""
    with contextlib.ExitStack() as stack:
        for lane in lanes:
            stack.enter_context(lane)
        if group is not None:
            stack.enter_context(group)
        start, state = (group or lanes[0]).resume(state)
        for lane in lanes:
            lane.open(start, accept_changes)
        spec = lanes[0].spec
        bar = progress_bar(spec, start, progress, desc or f"train {spec.model.name}")
        stack.callback(bar.close)
        yield Session(lanes, group, bar, start), state


def lanes_of(specs, workdirs, datasets, model, hooks, mesh) -> tuple[list[Lane], object]:
    """A lane per run, each with its evaluator, and the step config they share (per-kernel
    gradient norms compiled in when a hook asks). -> (lanes, StepConfig)."""
    cfg = dataclasses.replace(specs[0].step, layer_grad_norms=any(
        getattr(h, "needs_layer_grad_norms", False) for h in hooks))  # fmt: skip
    eval_fn = compiled.eval_fn(cfg, mesh)
    lanes = [
        Lane(s, w, ds, Evaluator(s, ds, eval_fn, RecomputeBN(s, ds, model.apply, mesh)), h)
        for s, w, ds, h in zip(specs, workdirs, datasets, hooks, strict=True)
    ]
    return lanes, cfg


def run_lanes(lanes, state, stepping: Stepping, *, group=None, progress=True, desc="",
              accept_changes=False):  # fmt: skip
    """A session of `lanes` from `state`: train, then each lane that stayed finite finishes
    (its best or final state and metrics). -> (state, {lane index: (state, metrics)},
    timing, each step's seconds)."""
    with session(lanes, state, group=group, progress=progress, desc=desc,
                 accept_changes=accept_changes) as (run, state):  # fmt: skip
        state, timing, times = drive(run, state, stepping)
        t_save = time.perf_counter()
        if group is not None:
            group.ckpt.wait()
        finals = {i: lane.finish(stepping.lane(state, i)) for i, lane in enumerate(lanes)
                  if lane.error is None}  # fmt: skip
        timing["checkpoint_s"] += time.perf_counter() - t_save
    return state, finals, timing, times


def due(step: int, every: int, steps: int) -> bool:
    """After 0-based `step`: is a periodic action due (every `every` steps, and at the end)?"""
    return (step + 1) % every == 0 or step + 1 == steps


def drive(run: Session, state, stepping: Stepping):
    """The training loop of a session's lanes: one (`stepping.pick` None) or several lanes of
    one vmapped step over stacked states (`pick(tree, i)` slices lane i's state; metrics come
    stacked alike). Runs steps [run.start, steps) while a lane is live: a lane that turns
    non-finite stops with its error and keeps its last good checkpoint (the others go on); one
    that early-stops leaves. At each evaluation every live lane evaluates and saves its own
    checkpoint, then the group saves (batched seeds' resumable stack). -> (state, timing
    {names.TIMING_KEYS: seconds}, each step's seconds).

    Steps are dispatched without waiting for the device: the next batch is read while the
    previous step computes, and the host reads metrics only at log and eval steps (and before a
    preemption save), where each pending step's host work (hooks, the non-finite check, logs)
    runs in order, so results are those of a loop that waits every step. A non-finite step is
    found at the next such read, before anything is evaluated or saved. Step times are each
    window's wall time between reads, shared over its steps; a hook that needs each step's own
    state (any hook without `exact_state = False`) makes every step a read."""
    lanes, start, bar, step_fn = run.lanes, run.start, run.bar, stepping.step_fn
    next_batch, rng_at, schedule = stepping.next_batch, stepping.rng_at, stepping.schedule
    save_group = run.group.save if run.group is not None else None
    steps, pick = lanes[0].spec.steps, stepping.lane
    if stepping.pick is None:
        mine = lambda host, i: host
    else:
        mine = lambda host, i: {k: v[i] for k, v in host.items()}
    timing, times, seen, t0 = dict.fromkeys(names.TIMING_KEYS, 0.0), [], 0, time.perf_counter()
    kept = lambda: (
        preempt.last_checkpoint(lanes[0].ckpt.directory)
        + (f" (and its {len(lanes) - 1} other seeds' run directories)" if len(lanes) > 1 else "")
    )
    log_every, eval_every = lanes[0].spec.train.log_every, lanes[0].spec.train.eval_every
    # hooks see each step's state unless they say any later state will do (the grid's
    # Diagnostics read only the state's tree structure): such steps are synchronised
    exact = any(lane.hook is not None and getattr(lane.hook, "exact_state", True)
                for lane in lanes)  # fmt: skip
    pending: list = []  # (step, device metrics) dispatched, not yet read
    one_process = jax.process_count() == 1
    window = {"t": None, "data_s": 0.0, "steps": 0}

    def flush(state):
        """Read the pending steps' metrics (the one wait for the device), then do each step's
        host work in order: hooks, the non-finite check, logging; time the window."""
        nonlocal seen
        if not pending:
            return
        hosts = jax.device_get([m for _, m in pending])
        now = time.perf_counter()
        if window["t"] is not None and window["steps"]:
            wall = now - window["t"]
            timing["compute_s"] += wall - window["data_s"]
            times.extend([wall / window["steps"]] * window["steps"])
        window.update(t=now, data_s=0.0, steps=0)
        shown = None
        for (step, _), host in zip(pending, hosts, strict=True):
            for i, lane in enumerate(lanes):
                if not lane.live:
                    continue
                lane_state = pick(state, i) if lane.hook is not None else None  # the hook's
                try:
                    logged = lane.stepped(
                        step, lane_state, mine(host, i), lambda s=step: float(schedule(s))
                    )  # when logged
                except NonFiniteLoss as e:
                    lane.error = e
                    continue
                shown = logged or shown
        pending.clear()
        if shown:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{shown['loss']:.3f}", acc=f"{shown['accuracy']:.3f}",
                            img_s=f"{rate:.0f}")  # fmt: skip

    with preempt.stop_on_signals(kept=kept):
        for step in range(start, steps):
            live = [i for i, lane in enumerate(lanes) if lane.live]
            if not live:
                break
            # one process: a signal is seen at the next step; several: agreeing is a collective,
            # so they agree where the loop reads anyway (after a log or eval step)
            if (one_process or not pending) and (signum := preempt.agreed()) is not None:
                flush(state)  # a non-finite step among them must not be saved
                live = [i for i, lane in enumerate(lanes) if lane.live]
                _preempted(lanes, live, state, step, start, pick, save_group, signum)
            t_data = time.perf_counter()
            batch, rng = next_batch(), rng_at(step)  # while the previous step computes
            dt = time.perf_counter() - t_data
            timing["data_s"] += dt
            window["data_s"] += dt
            if not times and window["t"] is None:  # the first step: compiled, run, timed apart
                step_fn, state, metrics = timed_step(step_fn, state, batch, rng, timing, times)
                window["t"] = time.perf_counter()
            else:
                state, metrics = step_fn(state, batch, rng)  # dispatched: no wait here
                window["steps"] += 1
            pending.append((step, metrics))
            seen += int(np.prod(batch["label"].shape))
            bar.update(1)
            at_eval = due(step, eval_every, steps)
            if exact or at_eval or due(step, log_every, steps):
                flush(state)
            if not at_eval:
                continue
            t_eval = time.perf_counter()
            evaluated = []
            for i in (i for i in live if lanes[i].error is None):
                try:
                    lanes[i].evaluate(step + 1, pick(state, i))
                    evaluated.append(i)
                except NonFiniteLoss as e:
                    lanes[i].error = e
            t_save = time.perf_counter()
            timing["eval_s"] += t_save - t_eval
            for i in evaluated:
                lanes[i].save(step + 1, pick(state, i))
            if save_group is not None and evaluated:
                save_group(step + 1, state)
            timing["checkpoint_s"] += time.perf_counter() - t_save
            window["t"] = time.perf_counter()  # evaluation and saves are not step time
        flush(state)
    return state, timing, times


def _preempted(lanes, live, state, step, start, pick, save_group, signum):
    """A signal came during step `step - 1`: save step `step` (every live lane's checkpoint,
    without metrics, and the group's) unless it is saved already, then raise Preempted."""
    saved = "nothing new to save"
    if step > start:
        for i in live:
            lanes[i].save(step, pick(state, i), evaluated=False)
        if save_group is not None:
            save_group(step, state)
        for lane in lanes:
            lane.ckpt.wait()
        saved = f"checkpoint {step} saved in {lanes[0].ckpt.directory}"
        if len(lanes) > 1:
            saved += f" and its {len(lanes) - 1} other seeds' run directories"
    raise preempt.Preempted(
        f"stopped by {preempt.name(signum)} after step {step} of {lanes[0].spec.steps}: {saved}; "
        f"run the same command to resume",
        signum,
    )


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
    accept_changes: bool = False,
) -> TrainResult:
    """Run `spec.steps` train steps from `state` (or from workdir's newest checkpoint that
    restores) with evaluations.

    Every `spec.train.eval_every` steps: test metrics, plus `val_*` metrics when `ds` has a
    validation split, and a checkpoint. With `spec.train.patience` > 0, training stops after that
    many evals without a `min_delta` drop in val loss and the best-val-loss state is restored.
    `hook(step, state, metrics)` runs after every step; a hook with `needs_layer_grad_norms`
    gets per-kernel gradient norms in `metrics`.
    """
    mesh = distributed.data_mesh()  # params replicated, batches split over all devices
    state = distributed.replicate(state, mesh)
    (lane,), cfg = lanes_of([spec], [workdir], [ds], model, [hook], mesh)
    stepping = Stepping.one(lane, compiled.train_fn(cfg, mesh), schedule, mesh)
    state, finals, timing, times = run_lanes([lane], state, stepping, progress=progress,
                                             desc=desc, accept_changes=accept_changes)  # fmt: skip
    if lane.error is not None:
        raise lane.error
    state, final = finals[0]
    return result(final, state, model, ds, timing, times, lane.history)


def progress_bar(spec: RunSpec, start: int, progress: bool, desc: str):
    return bars.bar(total=spec.steps, initial=start, unit="step", desc=desc,
                    disable=not progress or jax.process_index() > 0)  # fmt: skip


def result(final, state, model, ds, timing, times, history=None, lanes: int = 1) -> TrainResult:
    """A run's TrainResult; `timing` is its share when `lanes` runs trained in one step."""
    later = times[1:]
    return TrainResult(
        final,
        state,
        model,
        ds,
        timing["compile_s"] + times[0] if times else None,
        sum(later) / len(later) if later else None,
        early_stopping=history or {},
        timing={k: v / lanes for k, v in timing.items()},
        lanes=lanes,
    )


__all__ = ["CheckpointError", "NonFiniteLoss", "TrainResult", "train"]
