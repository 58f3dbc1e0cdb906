"""Ablation grids: the cartesian product of config axes, one training run per cell."""

import copy
import itertools

from cnnlab import dotted
from cnnlab.errors import ConfigError

FORM = (
    "config.grid must be one product ((dotted key, (value, ...)), ...), e.g. (('seed', (0, 1)),), "
    "or a tuple of such products (their cells joined)"
)


def _is_axis(axis) -> bool:
    return isinstance(axis, (tuple, list)) and len(axis) == 2 and isinstance(axis[0], str)


def products(grid) -> list:
    """config.grid as a list of products: one product ((key, values), ...) or several
    (((key, values), ...), ...), whose cells are joined (a grid made of several products)."""
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ConfigError(f"{FORM}; got {grid!r}")
    return [grid] if all(_is_axis(a) for a in grid) else list(grid)


def check_axes(grid) -> None:
    """Every product of config.grid well formed, every axis with a value, and every product
    naming the same keys in the same order (so that cell names line up)."""
    keys = None
    for product in products(grid):
        if not isinstance(product, (tuple, list)) or not product:
            raise ConfigError(f"{FORM}; got {product!r}")
        for axis in product:
            if not _is_axis(axis):
                raise ConfigError(f"{FORM}; got the axis {axis!r}")
            key, values = axis
            if not isinstance(values, (tuple, list)):
                raise ConfigError(
                    f"config.grid axis {key!r}: values must be a tuple; got {values!r}"
                )
            if not values:
                raise ConfigError(f"config.grid axis {key!r} has no values; give it at least one")
        names = [k for k, _ in product]
        if len(set(names)) < len(names):
            raise ConfigError(f"config.grid names a key twice: {names}")
        if keys is not None and names != keys:
            raise ConfigError(
                f"config.grid: every product must name the same keys in the same order; "
                f"{names} differs from {keys}"
            )
        keys = names


def expand(grid) -> list[dict]:
    """config.grid -> [{key: value, ...}]: each product in row-major order, products in turn,
    a cell that two products share listed once."""
    check_axes(grid)
    cells = {}
    for product in products(grid):
        keys = [k for k, _ in product]
        for combo in itertools.product(*(v for _, v in product)):
            cell = dict(zip(keys, combo, strict=True))
            cells.setdefault(cell_name(cell), cell)
    return list(cells.values())


def grid_axes(grid) -> list[tuple[str, list]]:
    """(key, values) of every axis over all products: values in first-seen order, once each."""
    check_axes(grid)
    out: dict[str, dict] = {}
    for product in products(grid):
        for key, values in product:
            for v in values:
                out.setdefault(key, {}).setdefault(label(v), v)
    return [(k, list(v.values())) for k, v in out.items()]


def label(value) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(map(str, value)) or "none"
    return str(value)


def cell_name(overrides: dict) -> str:
    """'depth=20,skip=False,side_taps=stage1+stage2,seed=0' (last key component = value)."""
    return ",".join(f"{dotted.short(k)}={label(v)}" for k, v in overrides.items())


def apply(config, overrides: dict):
    """A copy of `config` with dotted keys set; unknown keys are a clear error, except under
    `model.kwargs`, which takes any field of the model (checked by `train.validate`)."""
    c = copy.deepcopy(config)
    for key, value in overrides.items():
        parent, _, leaf = key.rpartition(".")
        node, missing = dotted.walk(c, parent)
        if missing is not None:
            raise ConfigError(f"grid key {key!r}: config has no {missing!r}")
        if leaf not in node and dotted.short(parent) != "kwargs":  # kwargs: any model field
            raise ConfigError(f"grid key {key!r}: config has no {leaf!r}")
        with node.ignore_type(), node.unlocked():  # config_flags locks configs
            node[leaf] = value
    return c


def shard(cells: list, spec: str) -> list:
    """'i/N' -> every N-th cell starting at i (0-based)."""
    try:
        i, n = (int(x) for x in spec.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ConfigError(f"--shard must be i/N with 0 <= i < N; got {spec!r}") from None
    return cells[i::n]


def cell_config(config, overrides: dict):
    """A cell's training config: the grid's overrides, then the extra overrides of every
    `config.when` entry ((condition pairs), (override pairs)) whose condition the cell meets,
    e.g. ResNet-110's warm-up only at depth 110. `when` settings do not enter cell names."""
    cfg = apply(config, overrides)
    for condition, extra in config.when:
        if all(label(overrides.get(k)) == label(v) for k, v in condition):
            cfg = apply(cfg, dict(extra))
    return cfg
