"""Frozen parameters in training: no gradient, no update, and (Keras semantics) frozen BatchNorm
layers normalise with their running statistics and leave them unchanged.

`frozen_apply(model.apply, frozen, norms)` wraps a model's apply: frozen parameters pass through
`stop_gradient` (so XLA drops the backward pass below the lowest trainable layer) and the
BatchNorm layers in `norms` run in inference mode even when `train=True`. `group_optimizer` gives
each group its own learning rate with `optax.multi_transform`; frozen leaves get
`optax.set_to_zero()` (no update, no optimiser state, no weight decay): they stay bit-identical.
"""

import flax.linen as nn
import jax
import optax

from cnnlab.paths import path_str
from cnnlab.train.optim import make_optimizer


def _stop_frozen(params, frozen: frozenset[str]):
    def leaf(path, x):
        return jax.lax.stop_gradient(x) if path_str(path) in frozen else x

    return jax.tree_util.tree_map_with_path(leaf, params)


def _norms_in_inference(norms: frozenset[tuple[str, ...]]):
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.BatchNorm)
            and tuple(module.scope.path) in norms
        ):  # same layer, running statistics, nothing written back
            frozen = module.clone(parent=None, use_running_average=True)
            return frozen.apply(module.variables, *args, **kwargs)
        return next_fun(*args, **kwargs)

    return interceptor


class FrozenApply:
    """`apply_fn` with frozen parameters and inference-mode BatchNorm layers `norms`."""

    def __init__(self, apply_fn, frozen: frozenset[str], norms=frozenset()):
        self.apply_fn, self.frozen, self.norms = apply_fn, frozenset(frozen), frozenset(norms)

    def __call__(self, variables, *args, **kwargs):
        if self.frozen:
            variables = {**variables, "params": _stop_frozen(variables["params"], self.frozen)}
        if not self.norms:
            return self.apply_fn(variables, *args, **kwargs)
        with nn.intercept_methods(_norms_in_inference(self.norms)):
            return self.apply_fn(variables, *args, **kwargs)


def group_optimizer(c, total_steps: int, labels, lrs: dict[str, float]):
    """config.optim's optimiser per group with its own peak lr; 'frozen' leaves never move.

    `labels` is a pytree of 'frozen' / 'backbone' / 'head' (`select.param_labels`); `lrs` maps
    the trainable groups to learning rates. -> (tx, {group: schedule}).
    """
    present = set(jax.tree.leaves(labels))
    txs, schedules = {"frozen": optax.set_to_zero()}, {}
    for group in sorted(present - {"frozen"}):
        txs[group], schedules[group] = make_optimizer(c, total_steps, lr=lrs[group])
    return optax.multi_transform(txs, labels), schedules
