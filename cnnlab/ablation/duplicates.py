"""Cells that would train the same net: found before training, trained once.

A grid axis can change nothing for some cells: `zero_init_residual` on a plain twin (no residual
branch to zero), `side_loss` without side heads, `momentum` under AdamW. Two cells whose
*effective* settings agree would train identically, so the second reuses the first's result
(`CellResult.same_as` names it) and the grid says which axis changed nothing where.

Effective settings: the run's typed spec (`cnnlab.train.RunSpec`: model with its defaults filled
in, data, optimiser, loss, training, seed, steps), less what the code does not read for that
cell: the training settings in `INERT` below (each rule names the setting that makes the others
unread) and the model fields its family declares unread (`cnnlab.models.unread`, e.g. a plain
twin's zero_init_residual). The learning rate is compared as the peak lr the optimiser gets.
Settings outside the spec (the grid's own keys: `batch_seeds` changes float rounding only,
`grad_norm_steps` what is recorded) do not count.
"""

import dataclasses
import json

from cnnlab import models, train
from cnnlab.ablation.grid import cell_config, cell_name

# (section, condition on the section, keys it leaves unread); in order, so a condition may find
# a key an earlier rule removed (.get)
INERT = (
    ("loss", lambda s: not s["side_taps"],
     ("side_head", "side_weight", "side_schedule", "side_gamma", "side_drop_step", "side_loss",
      "side_alpha", "side_temperature", "side_hint", "side_hint_target")),
    ("loss", lambda s: s.get("side_loss") != "distill",
     ("side_alpha", "side_temperature", "side_hint", "side_hint_target")),
    ("loss", lambda s: s.get("side_loss") == "distill" and not s["side_hint"],
     ("side_hint_target",)),
    ("loss", lambda s: s.get("side_schedule") != "threshold", ("side_gamma",)),
    ("loss", lambda s: s.get("side_schedule") != "drop", ("side_drop_step",)),
    ("optim", lambda s: s["optimizer"] != "sgd", ("momentum", "nesterov")),
    ("optim", lambda s: s["schedule"] != "step", ("step_boundaries",)),
    ("optim", lambda s: s["warmup"] != "constant" or not s["warmup_steps"], ("warmup_factor",)),
    ("optim", lambda s: not s["warmup_steps"], ("warmup",)),
    ("optim", lambda s: True, ("lr", "lr_batch")),  # compared as the peak lr instead
    ("train", lambda s: not s["train_subset"], ("precise_bn",)),
    ("train", lambda s: not s["patience"], ("min_delta",)),
    ("data", lambda s: s["name"] != "synthetic", ("synthetic",)),
)  # fmt: skip


def effective(spec: train.RunSpec) -> dict:
    """What decides a cell's training, as JSON-able values."""
    out = {name: dataclasses.asdict(getattr(spec, name)) for name in ("data", "optim", "loss",
                                                                      "train")}  # fmt: skip
    kwargs = {**models.defaults(spec.model.name), **spec.model.kwargs}
    unread = models.unread(spec.model.name, kwargs)  # as the model's family declares
    out["model_kwargs"] = {k: v for k, v in kwargs.items() if k not in unread}
    for section, applies, keys in INERT:
        if applies(out[section]):
            for k in keys:
                out[section].pop(k, None)
    out["model"] = [spec.model.name, spec.model.binary]
    out.update(seed=spec.seed, steps=spec.steps, peak_lr=spec.peak_lr)
    return json.loads(json.dumps(out, default=str, sort_keys=True))


def find(config, cells: list[dict]) -> dict[str, str]:
    """{cell name: the name of the first earlier cell it would train identically to}."""
    first, same = {}, {}
    for o in cells:
        key = json.dumps(effective(train.RunSpec.of(cell_config(config, o))), sort_keys=True)
        name = cell_name(o)
        if key in first:
            same[name] = first[key]
        else:
            first[key] = name
    return same


def explain(cells: list[dict], same: dict[str, str]) -> list[str]:
    """One line per group of settings that changed nothing: the axes and the cells."""
    by_name = {cell_name(o): o for o in cells}
    groups: dict[tuple, list] = {}
    for dup, orig in same.items():
        a, b = by_name[orig], by_name[dup]
        axes = tuple(sorted(k for k in a if a[k] != b[k]))
        groups.setdefault(axes, []).append((dup, orig))
    return [
        f"{' and '.join(axes)} change nothing for {len(pairs)} cell(s), which reuse an identical "
        f"cell's result instead of training it again (e.g. {pairs[0][0]} = {pairs[0][1]})"
        for axes, pairs in groups.items()
    ]
