"""Optimisers and learning-rate schedules from optax.

He et al. 2015: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k of 64k
iterations ('step' with boundaries (0.5, 0.75)). Loshchilov & Hutter: cosine; AdamW.
"""

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def _decay_mask(params):
    """Decay conv/dense kernels only, not biases or BatchNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def make_schedule(c, total_steps: int, lr: float | None = None):
    lr = c.lr if lr is None else lr
    if c.schedule == "constant":
        return optax.constant_schedule(lr)
    if c.schedule == "step":
        bounds = {int(b * total_steps): 0.1 for b in c.step_boundaries}
        return optax.piecewise_constant_schedule(lr, bounds)
    if c.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, c.warmup_steps, total_steps)
    raise ValueError(f"config.optim.schedule must be one of {SCHEDULES}; got {c.schedule!r}")


def make_optimizer(c, total_steps: int, lr: float | None = None):
    """-> (optax transformation, schedule) from config.optim (peak lr `lr` if given)."""
    schedule = make_schedule(c, total_steps, lr)
    if c.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(c.weight_decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=c.momentum, nesterov=c.nesterov),
        )
    elif c.optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=c.weight_decay, mask=_decay_mask)
    else:
        raise ValueError(f"config.optim.optimizer must be one of {OPTIMIZERS}; got {c.optimizer!r}")
    return tx, schedule
