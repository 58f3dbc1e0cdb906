"""Which parameters train: freeze the backbone, all but its last N layers/blocks/stages, or by
path pattern (Keras `layer.trainable = False`, PyTorch `requires_grad_(False)`).

Paths are '/'-joined parameter names, e.g. 'stage3_block3/conv2/kernel'. The new head (top-level
modules matching `NEW`: the classifier 'head' and deep-supervision 'side_*' heads) is always
re-initialised on fine-tuning and trains unless a `freeze` pattern names it.
"""

import fnmatch
import re

import flax.traverse_util as tu
import jax

from cnnlab.paths import path_str
from cnnlab.summary import summary

NEW = ("head", "side_*")  # top-level modules a fine-tune initialises afresh (new classes)
UNITS = ("layer", "block", "stage")


def paths(tree) -> list[str]:
    """'/'-joined leaf paths of a nested dict (parameters, batch statistics)."""
    return list(tu.flatten_dict(tree, sep="/"))


def is_new(path: str, new=NEW) -> bool:
    return any(fnmatch.fnmatchcase(path.split("/")[0], pat) for pat in new)


def call_order(model, example_input) -> list[str]:
    """Top-level submodules in the order the forward pass calls them (traced, no compute)."""
    order: list[str] = []
    for row in summary(model, example_input, train=False).rows:
        top = row.path.split("/")[0]
        if row.params and top not in order:
            order.append(top)
    return order


def unit_name(module: str, unit: str) -> str:
    """The unit a top-level module belongs to: 'stem_conv' and 'stem_norm' -> 'stem' for
    'block' and 'stage'; 'stage2_block1' -> 'stage2' for 'stage'; else the module itself."""
    if unit == "stage" and (m := re.match(r"(stage\d+)_", module)):
        return m.group(1)
    if unit in ("stage", "block"):  # a conv + its norm ('stem_conv', 'stem_norm') are one unit
        return re.sub(r"_(conv|norm)$", "", module)
    return module


def units(order: list[str], unit: str = "block", new=NEW) -> list[tuple[str, list[str]]]:
    """Backbone modules grouped into units, in forward order: [(unit name, [modules])]."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {list(UNITS)}; got {unit!r}")
    out: list[tuple[str, list[str]]] = []
    for module in order:
        if is_new(module, new):
            continue
        name = unit_name(module, unit)
        if out and out[-1][0] == name:
            out[-1][1].append(module)
        else:
            out.append((name, [module]))
    return out


def _matching(all_paths, patterns, what: str) -> set[str]:
    hit = set()
    for pat in patterns:
        found = {p for p in all_paths if fnmatch.fnmatchcase(p, pat)}
        if not found:
            raise ValueError(
                f"{what} pattern {pat!r} matches no parameter; paths look like "
                f"{all_paths[0]!r} (fnmatch: '*' spans '/')"
            )
        hit |= found
    return hit


def select_frozen(
    params,
    order: list[str],
    *,
    unfreeze_last: int = 0,
    unit: str = "block",
    unfreeze=(),
    freeze=(),
    new=NEW,
) -> frozenset[str]:
    """Paths of the frozen parameters.

    The backbone (everything not `new`) is frozen except its last `unfreeze_last` units (-1:
    none frozen). Then `unfreeze` patterns make matching paths trainable and `freeze` patterns
    freeze matching paths (an explicit freeze wins).
    """
    all_paths = paths(params)
    groups = units(order, unit, new)
    if unfreeze_last < -1 or unfreeze_last > len(groups):
        raise ValueError(
            f"unfreeze_last={unfreeze_last} but the backbone has {len(groups)} {unit}s "
            f"({', '.join(g for g, _ in groups)}); use 0..{len(groups)}, or -1 for all"
        )
    keep = len(groups) if unfreeze_last == -1 else unfreeze_last
    frozen_modules = {m for _, mods in groups[: len(groups) - keep] for m in mods}
    frozen = {p for p in all_paths if p.split("/")[0] in frozen_modules}
    frozen -= _matching(all_paths, unfreeze, "unfreeze")
    frozen |= _matching(all_paths, freeze, "freeze")
    return frozenset(frozen)


def param_labels(params, frozen: frozenset[str], new=NEW):
    """Per-leaf optimiser group: 'frozen', 'backbone' (pre-trained, trainable) or 'head' (new)."""

    def label(path, _):
        p = path_str(path)
        return "frozen" if p in frozen else "head" if is_new(p, new) else "backbone"

    return jax.tree_util.tree_map_with_path(label, params)


def frozen_norms(variables, frozen: frozenset[str]) -> frozenset[tuple[str, ...]]:
    """Module paths of the BatchNorm layers (modules with batch statistics) whose scale and bias
    are all frozen; one without scale/bias goes with the top-level module it sits in."""
    by_module: dict[str, list[str]] = {}
    for p in paths(variables["params"]):
        by_module.setdefault(p.rsplit("/", 1)[0], []).append(p)
    out = set()
    for module in {p.rsplit("/", 1)[0] for p in paths(variables.get("batch_stats", {}))}:
        top = module.split("/")[0]
        mine = by_module.get(module) or _params_under(by_module, top)
        if mine and all(p in frozen for p in mine):
            out.add(tuple(module.split("/")))
    return frozenset(out)


def _params_under(by_module: dict[str, list[str]], top: str) -> list[str]:
    return [p for m, ps in by_module.items() if m.split("/")[0] == top for p in ps]
