"""Orbax checkpoints of train state + data-iterator position + config.

One `CheckpointManager` (orbax v0 API) keeps the last N steps and the best by an eval metric;
saves are asynchronous and atomic (a run killed mid-save leaves no half checkpoint). Restores
check every array's shape against the target first: a mismatch is a `CheckpointError` naming the
paths, never orbax's silent pad/truncate.
"""

from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored into this run; the message says why."""


def _key(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _shapes(tree) -> dict[str, tuple]:
    """'params/stage1_block1/conv1/kernel' -> shape, whatever container spells the path."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(_key, p)): tuple(getattr(v, "shape", ())) for p, v in flat}


class Checkpointer:
    def __init__(
        self, directory, keep: int = 3, best_metric: str = "accuracy", best_mode: str = "max"
    ):
        policy = cm.AnyPreservationPolicy(
            [
                cm.LatestN(keep),
                cm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1),
            ]
        )
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
        directory = Path(directory).absolute()  # orbax needs absolute paths
        self.directory, self.best_metric, self.best_mode = directory, best_metric, best_mode
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
        }  # registered up front so a restarted process can read metadata and restore
        self.manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best eval metric (None if no step has metrics)."""
        scored = [
            (m[self.best_metric], s)
            for s in self.manager.all_steps()
            if self.best_metric in (m := self.restore_meta(s).get("metrics") or {})
        ]
        if not scored:
            return None
        return (min if self.best_mode == "min" else max)(scored)[1]

    def save(self, step: int, state, data_iter, meta: dict, metrics: dict | None = None):
        meta = {**meta, "metrics": metrics}  # also in meta: orbax forgets them across restarts
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**args), metrics=metrics)

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
        self.check_shapes(step, target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
        return out["state"], out["meta"]

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def close(self):
        """Finish pending async saves."""
        self.manager.wait_until_finished()
        self.manager.close()
