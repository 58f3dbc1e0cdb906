"""Evaluation during and after training: test / validation metrics per head, the weight
average's, PreciseBN's and the training subset's, and the check that what is about to be saved
as a good checkpoint evaluates finite."""

import collections
import math

import jax
import numpy as np

from cnnlab import data, distributed
from cnnlab.paths import path_str
from cnnlab.train import compiled, names
from cnnlab.train.config import DataSpec
from cnnlab.train.spec import RunSpec

# global evaluation batches kept on the devices, by split: a run evaluates the same split
# every eval_every steps and a grid's runs share it (a split over KEEP_BYTES streams instead)
KEEP_BYTES = 256 * 2**20
_KEPT: collections.OrderedDict = collections.OrderedDict()
READ_EVERY = 16  # batches dispatched between reads of their sums: a bound on batches in flight


def _batches(ds, data_spec: DataSpec, split: str, limit, mesh):
    """The split's global batches: kept ones, or read and preprocessed now (and kept when the
    split fits in KEEP_BYTES; the newest four splits are kept)."""
    source = {"test": ds.test, "val": ds.val, "train": ds.train}[split]
    local = distributed.local_batch_size(data_spec.batch_size)
    key = (id(source), split, limit, local, data_spec.resize, mesh, jax.process_index())
    if key in _KEPT and _KEPT[key][0] is source:
        _KEPT.move_to_end(key)
        return _KEPT[key][1]
    batches = (
        distributed.global_batch(b, mesh)
        for b in data.eval_batches(
            ds,
            local,
            image_size=data_spec.resize,
            split=split,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            limit=limit,
        )
    )
    n = len(source) if limit is None else min(limit, len(source))
    hw = (data_spec.resize,) * 2 if data_spec.resize else ds.image_shape[:2]
    if n * math.prod(hw) * ds.image_shape[2] * 4 > KEEP_BYTES:
        return batches
    _KEPT[key] = (source, list(batches))  # the source too: its id stays its own
    while len(_KEPT) > 4:
        _KEPT.popitem(last=False)
    return _KEPT[key][1]


def _added(sums, pending) -> dict:
    """`sums` plus each pending batch's sums, read from the devices, in batch order."""
    for out in jax.device_get(pending):
        sums = out if sums is None else {k: sums[k] + out[k] for k in sums}
    return sums


def evaluate(eval_fn, state, ds, data_spec: DataSpec, split: str = "test", limit=None) -> dict:
    """Mean loss/accuracy per head over a split (its first `limit` examples if given) in global
    batches of `data_spec.batch_size`, every process taking its slice. The batches' sums are
    read READ_EVERY batches at a time and added in batch order."""
    sums, pending = None, []
    for batch in _batches(ds, data_spec, split, limit, distributed.data_mesh()):
        pending.append(eval_fn(state, batch))
        if len(pending) == READ_EVERY:
            sums, pending = _added(sums, pending), []
    sums = _added(sums, pending)
    count = sums.pop("count")
    return {k: float(v) / float(count) for k, v in sums.items()}


class RecomputeBN:
    """BatchNorm statistics recomputed for given parameters over the first `train_subset`
    training images (unaugmented, one global batch; see precise_bn.py): PreciseBN for the final
    weights, and the statistics of the weight average, whose running statistics were never
    tracked. Jitted once per model in a process; the images are read on first use."""

    def __init__(self, spec: RunSpec, ds, apply_fn, mesh):
        n = min(spec.train.train_subset, len(ds.train))
        self.n = n - n % jax.device_count()  # one global batch split over the devices
        self.spec, self.ds, self.mesh, self.images = spec, ds, mesh, None
        self.fn = compiled.recompute_fn(apply_fn, mesh)

    def __call__(self, state, params):
        """`state` with `params` and BN statistics recomputed for them (a model without batch
        statistics, e.g. norm='group', has none to recompute)."""
        if not jax.tree.leaves(state.batch_stats):
            return state.replace(params=params)
        if self.images is None:
            batch = data.eval_batches(
                self.ds,
                self.n // jax.process_count(),
                image_size=self.spec.data.resize,
                split="train",
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                limit=self.n,
            )
            self.images = distributed.global_batch(next(batch), self.mesh)["image"]
        stats = self.fn({"params": params, "batch_stats": state.batch_stats}, self.images)
        return state.replace(params=params, batch_stats=stats)


class Evaluator:
    """Every evaluation of one run, with its jitted eval step and BN recomputation."""

    def __init__(self, spec: RunSpec, ds, eval_fn, recompute: RecomputeBN):
        self.spec, self.ds, self.eval_fn, self.recompute = spec, ds, eval_fn, recompute

    def test(self, state, split: str = "test", limit=None) -> dict:
        return evaluate(self.eval_fn, state, self.ds, self.spec.data, split, limit)

    def ema(self, state) -> dict:
        """Test metrics of the parameters' moving average (`ema/...`), with BN statistics
        recomputed for it: the running statistics belong to the raw weights."""
        if state.ema_params is None:
            return {}
        average = self.recompute(state, state.ema_params)
        return names.prefixed(names.EMA, self.test(average))

    def final(self, state) -> dict:
        """Extra metrics of the last step: eval-mode metrics on the first `train_subset`
        training images (`train_subset/...`, unaugmented) and, with `precise_bn`, test and
        subset metrics with BN statistics recomputed over them (`precise_bn/...`)."""
        n = min(self.spec.train.train_subset, len(self.ds.train))
        if not n:
            return {}
        out = names.prefixed(names.TRAIN_SUBSET, self.test(state, "train", n))
        has_stats = bool(jax.tree.leaves(state.batch_stats))
        if not self.spec.train.precise_bn or not self.recompute.n or not has_stats:
            return out  # PreciseBN needs batch statistics to recompute
        precise = self.recompute(state, state.params)
        out.update(names.prefixed(names.PRECISE_BN, self.test(precise)))
        subset = self.test(precise, "train", self.recompute.n)
        out.update(names.prefixed(names.PRECISE_BN + names.TRAIN_SUBSET, subset))
        return out

    def at(self, state, last: bool) -> tuple[dict, dict | None]:
        """-> (test-split metrics: raw weights, weight average and, at the `last` step, the
        final extras; the validation metrics, or None without a validation split)."""
        test = {**self.test(state), **self.ema(state), **(self.final(state) if last else {})}
        return test, self.test(state, "val") if self.ds.val is not None else None


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
