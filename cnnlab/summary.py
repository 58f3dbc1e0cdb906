"""`summary(model, x)`: a per-layer table of shapes, parameters and multiply-accumulates (MACs).

Like Keras' `model.summary()`, plus cost. MACs are analytic, per example (batch of 1):
  standard conv   K·K·(C_in/groups)·C_out·H_out·W_out
  depthwise conv  K·K·C_in·m·H_out·W_out
  separable       depthwise + pointwise (each is its own row)
  transposed conv K·K·C_in·C_out·H_in·W_in
  dense           in·out (per position, if applied to a feature map)
  batch norm      H·W·C (inference: one fused multiply-add per element)
  pooling         K·K·C·H_out·W_out (one accumulate per window element); global pool H·W·C
Bias additions and activations are not counted. FLOPs = 2 x MACs (what XLA's cost analysis and
`nn.tabulate(compute_flops=True)` report). Papers' ResNet "FLOPs" and MobileNet "MAdds" are MACs.

Trainable parameters are the 'params' collection; everything else (BatchNorm running mean/var in
'batch_stats') is non-trainable.
"""

import dataclasses
import math
import sys
import types
from typing import Any

import flax.linen as nn
import jax

from cnnlab.paths import path_str


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer of the summary."""

    path: str
    kind: str
    output_shape: tuple[int, ...]
    trainable: int
    non_trainable: int
    macs: int | None  # None: a layer kind whose cost cnnlab does not know
    frozen: int = 0  # parameters ('params' collection) frozen for fine-tuning

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable + self.frozen


@dataclasses.dataclass(frozen=True)
class Summary:
    """Rows plus totals; `str(summary)` is the printable table."""

    rows: tuple[Row, ...]
    trainable_params: int
    non_trainable_params: int  # BatchNorm running statistics and other non-'params' state
    frozen_params: int = 0  # 'params' frozen for fine-tuning (Keras counts them non-trainable)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params + self.frozen_params

    @property
    def macs(self) -> int:
        """Total multiply-accumulates per example (layers of unknown cost count 0)."""
        return sum(r.macs or 0 for r in self.rows)

    @property
    def flops(self) -> int:
        """2 x MACs: a multiply-add is two floating-point operations."""
        return 2 * self.macs

    @property
    def conv_dense_macs(self) -> int:
        """MACs of conv and dense layers only: the papers' and torchvision's convention."""
        return sum(r.macs or 0 for r in self.rows if r.kind in CONV_DENSE_KINDS)

    def macs_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.kind] = out.get(r.kind, 0) + (r.macs or 0)
        return out

    def __str__(self) -> str:
        show_frozen = self.frozen_params > 0
        head = ("Layer (path)", "Kind", "Output shape", "Trainable", "Non-trainable", "MACs")
        if show_frozen:
            head = (*head[:4], "Frozen", *head[4:])
        body = [
            (
                r.path,
                r.kind,
                str(r.output_shape),
                f"{r.trainable:,}",
                *((f"{r.frozen:,}",) if show_frozen else ()),
                f"{r.non_trainable:,}",
                "?" if r.macs is None else f"{r.macs:,}",
            )
            for r in self.rows
        ]
        widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
        line = lambda cells: "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        rule = "-" * len(line(head))
        unknown = [r.path for r in self.rows if r.macs is None]
        lines = [
            rule,
            line(head),
            rule,
            *map(line, body),
            rule,
            f"Total params:         {self.total_params:,}",
            f"Trainable params:     {self.trainable_params:,}",
            *([f"Frozen params:        {self.frozen_params:,}"] if show_frozen else []),
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"MACs per example:     {self.macs:,}  (= {self.flops:,} FLOPs, 2 per MAC)",
            f"  conv + dense only:  {self.conv_dense_macs:,}  (the papers' convention)",
        ]
        if unknown:
            lines.append(f"MACs exclude layers of unknown cost: {', '.join(unknown)}")
        return "\n".join([*lines, rule])


def _prod(shape) -> int:
    return math.prod(int(n) for n in shape)


def _flax_macs(module: nn.Module, in_shape, out_shape) -> int | None:
    """Costs of flax's own layers, for models that mix them with cnnlab's."""
    if isinstance(module, nn.Dense):
        return in_shape[-1] * _prod(out_shape[1:])
    if isinstance(module, nn.Conv) and not isinstance(module, nn.ConvTranspose):
        k = _prod(module.kernel_size)
        return k * (in_shape[-1] // module.feature_group_count) * _prod(out_shape[1:])
    if isinstance(module, nn.ConvTranspose):
        return _prod(module.kernel_size) * _prod(in_shape[1:]) * out_shape[-1]
    if isinstance(module, (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        return _prod(out_shape[1:])
    if isinstance(module, nn.Dropout):
        return 0
    return None


def layer_macs(module: nn.Module, in_shape, out_shape) -> int | None:
    """Analytic MACs per example of one call, or None when the kind is unknown."""
    if hasattr(module, "macs"):
        return int(module.macs(in_shape, out_shape))
    return _flax_macs(module, in_shape, out_shape)


def _first_shape(tree) -> tuple[int, ...] | None:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
    return tuple(leaves[0].shape) if leaves else None


def _count(tree) -> int:
    return sum(_prod(x.shape) for x in jax.tree.leaves(tree))


def _count_frozen(tree, frozen: frozenset[str], prefix: str = "") -> int:
    return sum(
        _prod(x.shape)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if prefix + path_str(p) in frozen
    )


def _subtree(variables, path: tuple[str, ...]):
    """Variables owned directly by `path` (not by its children), per collection."""
    own: dict[str, Any] = {}
    for col, tree in variables.items():
        node = tree
        for name in path:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            direct = {k: v for k, v in node.items() if not isinstance(v, dict)}
            if direct:
                own[col] = direct
    return own


def summary(
    model: nn.Module, example_input, *args, rngs=None, frozen=frozenset(), **kwargs
) -> Summary:
    """Trace `model.init(rngs, example_input, *args, **kwargs)` abstractly and tabulate its layers.

    Nothing is computed: shapes come from `jax.eval_shape`. Extra args/kwargs go to the model call
    (e.g. `train=False`). Each leaf module (and each module owning variables directly) is a row.
    `frozen`: '/'-joined parameter paths frozen for fine-tuning (`cnnlab.finetune`), counted
    apart from the trainable ones.
    """
    calls: list[tuple[tuple[str, ...], nn.Module, Any, Any]] = []

    def record(next_fun, call_args, call_kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*call_args, **call_kwargs)
        slot = len(calls)  # reserve the slot first so rows follow call order, parents first
        calls.append(None)
        out = next_fun(*call_args, **call_kwargs)
        calls[slot] = (
            tuple(context.module.scope.path),
            context.module,
            _first_shape(call_args),
            out,
        )
        return out

    rngs = rngs if rngs is not None else {"params": jax.random.key(0), "dropout": jax.random.key(1)}

    def init():
        with nn.intercept_methods(record):
            return model.init(rngs, example_input, *args, **kwargs)

    variables = jax.eval_shape(init)
    paths = [c[0] for c in calls]
    rows, seen = [], set()
    for path, module, in_shape, out in calls:
        is_leaf = not any(p[: len(path)] == path and len(p) > len(path) for p in paths)
        own = _subtree(variables, path) if path not in seen else {}
        if not (is_leaf or own):
            continue
        seen.add(path)
        out_shape = _first_shape(out)
        macs = layer_macs(module, in_shape, out_shape) if is_leaf and in_shape else None
        if macs is None and is_leaf and not own:
            macs = 0 if type(module).__name__ in _FREE else None
        prefix = "".join(f"{name}/" for name in path)
        n_frozen = _count_frozen(own.get("params", {}), frozen, prefix)
        rows.append(
            Row(
                path="/".join(path) or type(model).__name__,
                kind=type(module).__name__,
                output_shape=out_shape,
                trainable=_count(own.get("params", {})) - n_frozen,
                non_trainable=sum(_count(t) for c, t in own.items() if c != "params"),
                macs=macs,
                frozen=n_frozen,
            )
        )
    n_frozen = _count_frozen(variables.get("params", {}), frozen)
    unknown = set(frozen) - {
        "/".join(str(k.key) for k in p)
        for p, _ in jax.tree_util.tree_flatten_with_path(variables.get("params", {}))[0]
    }
    if unknown:
        raise ValueError(f"frozen names parameters this model does not have: {sorted(unknown)[:3]}")
    trainable = _count(variables.get("params", {})) - n_frozen
    non_trainable = sum(_count(t) for c, t in variables.items() if c != "params")
    return Summary(tuple(rows), trainable, non_trainable, n_frozen)


# Layers whose MACs papers count ("FLOPs" of ResNet / EfficientNet, "mult-adds" of MobileNet).
CONV_DENSE_KINDS = {
    "Conv",
    "PointwiseConv",
    "GroupedConv",
    "DepthwiseConv",
    "ConvTranspose",
    "Dense",
    "DenseGeneral",
}

# Parameter-free modules with no arithmetic worth counting (reshapes, identity, dropout).
_FREE = {"Dropout", "Identity", "Flatten"}

__all__ = ["Row", "Summary", "layer_macs", "summary"]


class _CallableModule(types.ModuleType):
    """`cnnlab.summary(model, x)` is the function above, while `import cnnlab.summary as S`
    stays this module (`S.Summary`, `S.layer_macs`, ...): the package exports the module, and
    calling the module calls `summary`."""

    def __call__(self, *args, **kwargs) -> Summary:
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
