"""Load a pre-trained backbone (params + BatchNorm statistics) from another run's checkpoint.

A partial orbax restore (`PyTreeRestore(partial_restore=True)`) reads only the backbone arrays of
the source run's train state; the new head ('head', 'side_*'), optimiser state and step are not
read. Every backbone array is checked against the checkpoint's metadata first: a missing, extra
or differently shaped array is a `CheckpointError` naming the paths.
"""

from pathlib import Path

import flax.traverse_util as tu
import grain
import jax
import orbax.checkpoint as ocp

from cnnlab.errors import CheckpointError, describe
from cnnlab.finetune.select import NEW, is_new, paths
from cnnlab.train.checkpoint import reading
from cnnlab.train.config import TrainSpec

COLLECTIONS = ("params", "batch_stats")


def checkpoint_dir(source) -> Path:
    """A run's workdir (holding checkpoints/) or its checkpoints directory itself."""
    source = Path(source).expanduser().absolute()  # orbax needs absolute paths
    return source / "checkpoints" if (source / "checkpoints").is_dir() else source


def reading_manager(directory: Path) -> ocp.CheckpointManager:
    """Reads only (nothing here calls save); every item's handler is registered so that orbax
    does not warn about the data-iterator item it is not asked for."""
    handlers = {
        "state": ocp.PyTreeCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
    }
    options = ocp.CheckpointManagerOptions(create=False)
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def pick_step(manager, directory: Path, step: int = 0) -> int:
    """`step` if > 0; else the source run's best kept step by its own best metric, else latest."""
    steps = manager.all_steps()
    if not steps:
        raise CheckpointError(
            f"no checkpoints in {directory}; set config.finetune.source to the --workdir of a "
            f"pre-training run (python -m experiments.train ...)"
        )
    if step:
        if step not in steps:
            raise CheckpointError(
                f"config.finetune.source_step={step} is not in {directory}; kept steps: {steps}"
            )
        return step
    scored = []
    for s in steps:
        meta = manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        metric, mode = _best_rule(meta, directory, s)  # the rule the source run kept its best by
        if metric in (meta.get("metrics") or {}):
            value = meta["metrics"][metric]
            scored.append((value if mode == "max" else -value, s))
    return max(scored)[1] if scored else max(steps)


def _best_rule(meta: dict, directory: Path, step: int) -> tuple[str, str]:
    """The best-checkpoint rule of the run that saved `meta` (its config's train section)."""
    try:
        return TrainSpec.of(meta["config"]["train"]).best_rule
    except (KeyError, TypeError):
        raise CheckpointError(
            f"step {step} of {directory} has no complete saved config.train (written by another "
            f"cnnlab version?); name the step with config.finetune.source_step"
        ) from None


CHANNEL_RULE = {
    (1, 3): "the source's 1-channel stem kernel repeated over R, G, B and divided by 3 (the "
    "model sees the mean of the colour channels, as the source saw one grey channel)",
    (3, 1): "the source's R, G, B stem kernels summed (the grey image read as three equal "
    "colour channels)",
}


def channel_change(have: tuple, want: tuple) -> tuple[int, int] | None:
    """(source channels, model channels) when a conv kernel differs only in its input channels,
    1 <-> 3 (grey pre-training, colour fine-tuning or back); else None."""
    if len(have) == len(want) == 4 and have[:2] == want[:2] and have[3] == want[3]:
        change = (int(have[2]), int(want[2]))
        return change if change in CHANNEL_RULE else None
    return None


def adapt_channels(kernel, change: tuple[int, int]):
    """A source kernel (kh, kw, cin, cout) for the model's input channels (CHANNEL_RULE)."""
    if change == (1, 3):
        return jax.numpy.repeat(kernel, 3, axis=2) / 3
    return kernel.sum(axis=2, keepdims=True)


def _backbone(variables, new) -> dict:
    """{collection: {path: array}} of the pre-trained part (not the new head)."""
    out = {}
    for col in COLLECTIONS:
        flat = tu.flatten_dict(variables.get(col, {}), sep="/")
        out[col] = {p: v for p, v in flat.items() if not is_new(p, new)}
    return out


def _abstract(x, shape=None) -> jax.ShapeDtypeStruct:
    """Shape (or `shape`: the checkpoint's, for a kernel adapted after reading), dtype and
    placement of a target array (orbax restores onto that sharding)."""
    sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(tuple(shape or x.shape), x.dtype, sharding=sharding)


def _with_backbone(variables, backbone: dict, new) -> tuple[dict, list[str]]:
    """`variables` with the backbone arrays ({collection: {'a/b/c': array}}) put in, and the
    paths left fresh (the new head)."""
    out = dict(variables)
    for col, arrays in backbone.items():
        flat = tu.flatten_dict(variables[col], sep="/")
        flat.update(arrays)
        out[col] = tu.unflatten_dict(flat, sep="/")
    fresh = [p for col in COLLECTIONS for p in paths(variables.get(col, {})) if is_new(p, new)]
    return out, fresh


def _load_pretrained(source: str, variables, new) -> tuple[dict, dict]:
    """The backbone arrays of a pretrained weights file ('ARCH:PATH') into `variables`."""
    from cnnlab import pretrained

    src, path = pretrained.split_source(source)
    try:
        _, loaded = pretrained.load(src.arch, path, include_top=False, rgb_stem=True)
    except pretrained.WeightsError as e:
        raise CheckpointError(f"config.finetune.source: {e}") from None
    want = _backbone(variables, new)
    have = _backbone(loaded, new)
    for col in COLLECTIONS:
        for p in sorted(set(want[col]) | set(have[col])):
            w, h = want[col].get(p), have[col].get(p)
            if w is None or h is None or tuple(w.shape) != tuple(h.shape):
                raise CheckpointError(
                    f"config.finetune.source={source!r}: {col}/{p} is "
                    f"{'absent' if h is None else tuple(h.shape)} in the weights but "
                    f"{'absent' if w is None else tuple(w.shape)} in this model; leave "
                    f"config.model as the source sets it ({src.model} with {src.kwargs})"
                )
    out, fresh = _with_backbone(variables, have, new)
    return out, {"source": source, "step": 0, "loaded": sum(map(len, have.values())), "new": fresh,
                 "adapted": {}}  # fmt: skip


def load_backbone(source, variables, *, step: int = 0, new=NEW):
    """`variables` with every backbone array replaced by the source checkpoint's.

    -> (variables, info) where info = {'source', 'step', 'loaded': n arrays, 'new': [paths],
    'adapted': {path: how}}. A conv kernel that differs only in its input channels, 1 <-> 3
    (grey pre-training, colour data), is adapted by CHANNEL_RULE; any other difference is a
    CheckpointError.
    `source` may also name a pretrained file, 'torchvision/resnet50:PATH' (cnnlab.pretrained).
    """
    from cnnlab import pretrained

    if pretrained.split_source(source):
        return _load_pretrained(source, variables, new)
    directory = checkpoint_dir(source)
    if not directory.is_dir():
        raise CheckpointError(
            f"config.finetune.source={str(source)!r} does not exist; give the --workdir of a "
            f"pre-training run"
        )
    manager = reading_manager(directory)
    chosen = step
    try:
        step = chosen = pick_step(manager, directory, step)
        with reading(Path(directory) / str(step)):  # a damaged step can fail here already
            saved = manager.item_metadata(step)["state"]
        want = _backbone(variables, new)
        have = {col: tu.flatten_dict(dict(saved.get(col) or {}), sep="/") for col in COLLECTIONS}
        have = {col: {p: m for p, m in have[col].items() if not is_new(p, new)} for col in have}
        problems, counts = [], {"shape": 0, "missing": 0, "extra": 0}
        changes = {}  # 'col/path' -> (source channels, model channels)
        for col in COLLECTIONS:
            for p in sorted(set(want[col]) | set(have[col])):
                if p not in have[col]:
                    counts["missing"] += 1
                    problems.append(f"{col}/{p} missing in checkpoint")
                elif p not in want[col]:
                    counts["extra"] += 1
                    problems.append(f"{col}/{p} not in this model")
                elif change := channel_change(tuple(have[col][p].shape), want[col][p].shape):
                    changes[f"{col}/{p}"] = change
                elif tuple(have[col][p].shape) != tuple(want[col][p].shape):
                    counts["shape"] += 1
                    problems.append(
                        f"{col}/{p}: checkpoint {tuple(have[col][p].shape)} vs model "
                        f"{tuple(want[col][p].shape)}"
                    )
        if problems:
            raise CheckpointError(
                f"the backbone in {directory}/{step} does not fit this model "
                f"({counts['shape']} shape mismatches, {counts['missing']} missing, "
                f"{counts['extra']} extra): " + "; ".join(problems[:6]) + ". Use the source "
                f"run's model config (model.name and model.kwargs in its config.json); only "
                f"modules matching {list(new)} are re-initialised"
            )
        read_as = {w: have[w.split("/")[0]][w.split("/", 1)[1]].shape for w in changes}
        abstract = {
            col: tu.unflatten_dict(
                {p: _abstract(v, read_as.get(f"{col}/{p}")) for p, v in want[col].items()}, sep="/"
            )
            for col in COLLECTIONS
            if want[col]
        }
        with reading(Path(directory) / str(step)):
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item=abstract,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                        partial_restore=True,
                    )
                ),
            )["state"]
    except CheckpointError:
        raise
    except Exception as e:  # damaged files surface as many exception types from orbax
        where = f"{directory}/{chosen}" if chosen else str(directory)
        reason = describe(e)
        raise CheckpointError(
            f"the fine-tuning source checkpoint {where} does not restore ({reason}); pick another "
            f"kept step with config.finetune.source_step=N, or re-run the pre-training"
        ) from None
    finally:
        manager.close()
    backbone = {col: tu.flatten_dict(tree, sep="/") for col, tree in restored.items()}
    for where, change in changes.items():
        col, p = where.split("/", 1)
        backbone[col][p] = adapt_channels(backbone[col][p], change)
    out, fresh = _with_backbone(variables, backbone, new)
    loaded = sum(len(v) for v in want.values())
    adapted = {w: f"{a} -> {b} input channels: {CHANNEL_RULE[(a, b)]}"
               for w, (a, b) in changes.items()}  # fmt: skip
    return out, {"source": str(directory), "step": step, "loaded": loaded, "new": fresh,
                 "adapted": adapted}  # fmt: skip
