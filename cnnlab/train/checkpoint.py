"""Orbax checkpoints of train state + data-iterator position + config.

One `CheckpointManager` (orbax v0 API) keeps the last N steps and the best by an eval metric;
saves are asynchronous and atomic (a run killed mid-save leaves no half checkpoint). Restores
check every array's shape against the target first: a mismatch is a `CheckpointError` naming the
paths, never orbax's silent pad/truncate.
"""

import contextlib
import gc
import logging
import shutil
import sys
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from cnnlab.errors import CheckpointError, StorageError, describe
from cnnlab.paths import path_str


def _shapes(tree) -> dict[str, tuple]:
    """'params/stage1_block1/conv1/kernel' -> shape, whatever container spells the path."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(p): tuple(getattr(v, "shape", ())) for p, v in flat}


class _LateReads(logging.Filter):
    """The late reports of failed checkpoint reads (see `reading`): asyncio's "Task (or Future)
    exception was never retrieved" records for TensorStore reads (they name the step's path,
    or the store by a `tensorstore_spec=`) and `RuntimeError: Event loop is closed` through
    sys.unraisablehook. One per process, installed by the first `reading`: it drops those
    reports while a read is in progress and, once a read has failed, for the rest of the process
    (the failed read's stragglers may report at any later time, even at exit); anything else
    passes to the hooks installed before. Counts what it drops."""

    # asyncio's words for an abandoned task's and an abandoned future's exception
    NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")
    TENSORSTORE = "tensorstore_spec="
    LOOP_CLOSED = "Event loop is closed"

    def __init__(self):
        super().__init__()
        self.reading: list[str] = []  # steps being read now (a stack: reads may nest)
        self.failed: set[str] = set()  # steps whose read failed: filtered for good
        self.previous_hook, self.dropped = None, 0

    @property
    def installed(self) -> bool:
        return self.previous_hook is not None

    def install(self) -> None:
        if not self.installed:
            self.previous_hook = sys.unraisablehook
            sys.unraisablehook = self.unraisablehook
            logging.getLogger("asyncio").addFilter(self)

    def uninstall(self) -> None:
        """Put the hooks back (when no read is in progress and none has failed; tests)."""
        if self.installed:
            logging.getLogger("asyncio").removeFilter(self)
            if sys.unraisablehook == self.unraisablehook:
                sys.unraisablehook = self.previous_hook
            self.previous_hook = None
        self.reading, self.failed = [], set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith(self.NEVER_RETRIEVED) or not (self.reading or self.failed):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        if self.TENSORSTORE in text or any(p in text for p in [*self.reading, *self.failed]):
            self.dropped += 1
            return False
        return True

    def unraisablehook(self, unraisable) -> None:
        e = unraisable.exc_value
        late = isinstance(e, RuntimeError) and str(e) == self.LOOP_CLOSED
        if late and (self.reading or self.failed):
            self.dropped += 1
            return
        (self.previous_hook or sys.__unraisablehook__)(unraisable)


_LATE = _LateReads()
STEP_KEY = "_step"  # the step, beside the metrics orbax's BestN ranks, to break ties


@contextlib.contextmanager
def reading(step_dir):
    """Around one read of a checkpoint step (its arrays' metadata, or the restore).

    Why it exists: when a damaged step fails to read, orbax raises the first error while the
    step's other TensorStore reads are still in flight. They finish on TensorStore's threads
    after orbax has closed its event loop, and each reports `RuntimeError: Event loop is
    closed` through sys.unraisablehook (a bare traceback on stderr, up to about a hundred);
    their asyncio tasks and futures, when collected, log "Task (Future) exception was never
    retrieved" with another traceback. The failure itself is reported once, by whoever called
    restore. So those two reports are dropped during the read and, after a failed read,
    whenever they come: how late they come depends on TensorStore's threads and the collector
    (under load, seconds later, or at exit), so no wait could be long enough; a filter that
    stays is deterministic. After reads that all succeeded the hooks are as they were."""
    path = str(Path(step_dir).absolute())
    _LATE.install()
    _LATE.reading.append(path)
    try:
        yield
    except BaseException:
        _LATE.failed.add(path)
        gc.collect()  # the abandoned tasks report now, while the filter is sure to hold
        raise
    finally:
        _LATE.reading.remove(path)
        if not _LATE.reading and not _LATE.failed:
            _LATE.uninstall()


def _data_items(data_iter) -> dict:
    """Checkpoint item name -> grain iterator: 'data' for one, 'data_0', ... for a list (the
    seeds trained together, cnnlab.train.batched)."""
    if data_iter is None:
        return {}
    if isinstance(data_iter, (list, tuple)):
        return {f"data_{i}": it for i, it in enumerate(data_iter)}
    return {"data": data_iter}


class Checkpointer:
    """`best_metric=None`: keep only the last `keep` steps. `iterators=n` > 0: every step
    holds a list of n data iterators (items data_0, ...); 0: one iterator or none ('data')."""

    def __init__(
        self,
        directory,
        keep: int = 3,
        best_metric: str | None = "accuracy",
        best_mode: str = "max",
        iterators: int = 0,
    ):
        policies = [cm.LatestN(keep)]
        sign = 1 if best_mode == "min" else -1
        if best_metric is not None:  # of steps with equal metrics, the earliest is the best
            policies.append(  # (as early stopping's strict improvement picks it)
                cm.BestN(
                    get_metric_fn=lambda m: (m[best_metric], sign * m.get(STEP_KEY, 0)),
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,  # a preemption's: LatestN's to keep
                )
            )
        policy = cm.AnyPreservationPolicy(policies)
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
        directory = Path(directory).absolute()  # orbax needs absolute paths
        self.directory, self.best_metric, self.best_mode = directory, best_metric, best_mode
        names = _data_items([None] * iterators) if iterators else {"data": None}
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
            **{name: grain.checkpoint.CheckpointHandler() for name in names},
        }  # registered up front so a restarted process can read metadata and restore
        self.manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best eval metric (None if no step has metrics)."""
        sign = 1 if self.best_mode == "min" else -1  # ties: the earliest step
        scored = [
            (m[self.best_metric], sign * s, s)
            for s in self.manager.all_steps()
            if self.best_metric in (m := self.restore_meta(s).get("metrics") or {})
        ]
        if not scored:
            return None
        return (min if self.best_mode == "min" else max)(scored)[2]

    def save(self, step: int, state, data_iter, meta: dict, metrics: dict | None = None):
        """Start an async save of `step`, after checking that the disk has room for it (a save
        that runs out of space mid-way fails in orbax's threads; the last complete step is kept
        either way). A full disk is a StorageError naming the step and the space."""
        self._check_space(step, state)
        meta = {**meta, "metrics": metrics}  # also in meta: orbax forgets them across restarts
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        for name, it in _data_items(data_iter).items():
            args[name] = grain.checkpoint.CheckpointSave(it)
        with self._storage(step):
            scored = {**metrics, STEP_KEY: step} if metrics is not None else None
            self.manager.save(step, args=ocp.args.Composite(**args), metrics=scored)

    def _check_space(self, step: int, state) -> None:
        arrays = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
        last = self.latest_step()
        on_disk = _size(self.directory / str(last)) if last is not None else 0
        need = int(1.2 * max(arrays, on_disk)) + (1 << 18)  # metadata, the iterator, slack
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise StorageError(
                f"no space left on the device of {self.directory} for checkpoint step {step} "
                f"(needs about {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free); {self.kept()}. "
                f"Free space, then re-run the same command to resume"
            )

    def kept(self, which: str = "complete", where: bool = False) -> str:
        """'the last <which> checkpoint (step N) is kept[ in DIR]', for a message that stops a
        run; 'no checkpoint had been saved yet' before the first save."""
        last = self.latest_step()
        if not last:
            return "no checkpoint had been saved yet"
        return f"the last {which} checkpoint (step {last}) is kept" + (
            f" in {self.directory}" if where else ""
        )

    @contextlib.contextmanager
    def _storage(self, step: int | None = None):
        """Turn orbax's failed writes (async, any exception type) into one StorageError."""
        try:
            yield
        except Exception as e:
            text = str(e)
            if "No space left" in text or "os_error_code='28'" in text:
                what = f"checkpoint step {step}" if step else "a checkpoint"
                raise StorageError(
                    f"no space left on the device of {self.directory} while saving {what}; "
                    f"{self.kept()}. Free space, then re-run the same command to resume"
                ) from None
            if isinstance(e, OSError):
                raise
            raise StorageError(
                f"saving {'step ' + str(step) if step else 'a checkpoint'} in {self.directory} "
                f"failed ({describe(e)}); {self.kept()}"
            ) from None

    def wait(self) -> None:
        """Wait for pending async saves; a failed one is a StorageError."""
        with self._storage():
            self.manager.wait_until_finished()

    def check_shapes(self, step: int, target) -> None:
        saved = self.manager.item_metadata(step)["state"]
        want, have = _shapes(target), _shapes(saved)
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        wrong = [
            f"{k}: checkpoint {have[k]} vs config {want[k]}"
            for k in sorted(set(want) & set(have))
            if have[k] != want[k]
        ]
        if missing or extra or wrong:
            problems = wrong[:5] + [f"missing in checkpoint: {m}" for m in missing[:3]]
            problems += [f"not in this model: {e}" for e in extra[:3]]
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not match this config "
                f"({len(wrong)} shape mismatches, {len(missing)} missing, {len(extra)} extra): "
                + "; ".join(problems)
                + ". Use a fresh --workdir, or the config that wrote it (saved in its meta)."
            )

    def restore(self, step: int, target, data_iter=None):
        """-> (state, meta); restores data_iter's position in place."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
        for name, it in _data_items(data_iter).items():
            args[name] = grain.checkpoint.CheckpointRestore(it)
        # the shape check reads the arrays' metadata: a damaged step can fail there too
        with reading(self.directory / str(step)):
            self.check_shapes(step, target)
            out = self.manager.restore(step, args=ocp.args.Composite(**args))
        return out["state"], out["meta"]

    def restore_newest(self, target, data_iter=None, warn=print):
        """-> (step, state, meta) from the newest kept step that restores, or None when there is
        no checkpoint. A step that fails to restore (truncated or garbled files, an empty step
        directory) is reported through `warn` and the next older step is tried; steps newer than
        the one restored are moved to `<workdir>/damaged_checkpoints/` (never deleted) so that
        training can save those step numbers again. Only when no step restores is it a
        CheckpointError. A shape mismatch is the config's problem, not damage: it raises."""
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, target, data_iter)
            except CheckpointError:
                raise
            except Exception as e:  # damage surfaces as many exception types from orbax
                reason = describe(e)
                warn(f"warning: checkpoint step {step} in {self.directory} does not restore "
                     f"({reason}); trying an earlier step")  # fmt: skip
                failed.append(step)
                continue
            for bad in failed:
                moved = self._move_aside(bad)
                warn(f"warning: resuming from step {step}; damaged step {bad} moved to {moved}")
            return step, state, meta
        if failed:
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores (steps {failed} are damaged; see the "
                f"warnings above); nothing was deleted: move the directory aside to start over, or "
                f"use a fresh --workdir"
            )
        return None

    def _move_aside(self, step: int) -> Path:
        """Process 0 moves the step out of the checkpoint directory; every process waits."""
        target = self.directory.parent / "damaged_checkpoints" / str(step)
        n = 1
        while target.exists():
            target, n = target.with_name(f"{step}.{n}"), n + 1
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"cnnlab_move_aside_{step}")
        self.manager.reload()
        return target

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def close(self, failing: bool = False):
        """Finish pending async saves. `failing`: the run is already stopping on an error,
        which a second error from a pending save must not hide."""
        try:
            self.wait()
            self.manager.close()
        except Exception:
            if not failing:
                raise


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
