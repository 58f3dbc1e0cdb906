"""Ablation grids: the cartesian product of config axes, one training run per cell."""

import copy
import itertools


def expand(axes) -> list[dict]:
    """axes: ((dotted config key, values), ...) -> [{key: value, ...}] in row-major order."""
    keys = [k for k, _ in axes]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
    ]


def label(value) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(map(str, value)) or "none"
    return str(value)


def cell_name(overrides: dict) -> str:
    """'depth=20,skip=False,side_taps=stage1+stage2,seed=0' (last key component = value)."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={label(v)}" for k, v in overrides.items())


def apply(config, overrides: dict):
    """A copy of `config` with dotted keys set; unknown keys are a clear error, except under
    `model.kwargs`, which takes any field of the model (checked by `train.validate`)."""
    c = copy.deepcopy(config)
    for key, value in overrides.items():
        node, *path, leaf = [c, *key.split(".")]
        for part in path:
            if part not in node:
                raise ValueError(f"grid key {key!r}: config has no {part!r}")
            node = node[part]
        if leaf not in node and path[-1:] != [
            "kwargs"
        ]:  # kwargs: any model field (validated later)
            raise ValueError(f"grid key {key!r}: config has no {leaf!r}")
        with node.ignore_type(), node.unlocked():  # config_flags locks configs
            node[leaf] = value
    return c


def shard(cells: list, spec: str) -> list:
    """'i/N' -> every N-th cell starting at i (0-based)."""
    try:
        i, n = (int(x) for x in spec.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ValueError(f"--shard must be i/N with 0 <= i < N; got {spec!r}") from None
    return cells[i::n]


def cell_config(config, overrides: dict):
    """A cell's training config: the grid's overrides, then the extra overrides of every
    `config.when` entry ((condition pairs), (override pairs)) whose condition the cell meets,
    e.g. ResNet-110's warm-up only at depth 110. `when` settings do not enter cell names."""
    cfg = apply(config, overrides)
    for condition, extra in config.get("when", ()):
        if all(label(overrides.get(k)) == label(v) for k, v in condition):
            cfg = apply(cfg, dict(extra))
    return cfg
