"""Optimisers and learning-rate schedules from optax.

He et al. 2015: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 at batch 128 divided by 10 at 32k and
48k of 64k iterations ('step' with boundaries (0.5, 0.75)); ResNet-110 warmed up at lr 0.01 first
(`warmup='constant'`). Goyal et al. 2017, arXiv:1706.02677: lr scaled linearly with the batch
(`lr_batch`), linear warm-up. Li, Yumer & Ramanan 2020, "Budgeted Training", arXiv:1905.04753:
decay to zero over exactly the run's steps ('cosine', 'linear'). Loshchilov & Hutter: AdamW.
"""

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")
WARMUPS = ("linear", "constant")


DECAY_ON = ("kernels", "all")


def decay_mask(on: str = "kernels"):
    """Which parameters weight decay applies to: 'kernels' (conv and dense kernels; not biases,
    BatchNorm scales and offsets: the usual modern choice, e.g. Goyal et al. 2017 section 5.1
    and torchvision's recipes), or 'all' (every parameter, as Caffe's ResNets did)."""
    if on not in DECAY_ON:
        raise ValueError(f"config.optim.weight_decay_on must be one of {DECAY_ON}; got {on!r}")
    if on == "all":
        return None
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: path[-1].key == "kernel", params
    )


def make_schedule(c, total_steps: int, lr: float | None = None):
    """Warm-up over `c.warmup_steps` (linear from 0, or constant at `c.warmup_factor`·lr), then
    `c.schedule` over the remaining steps; 'cosine' and 'linear' reach 0 at `total_steps`.
    `c` is an OptimSpec (cnnlab.train.config), `lr` the peak lr (default `c.lr`)."""
    lr = c.lr if lr is None else lr
    warm = c.warmup_steps
    rest = max(total_steps - warm, 1)
    if c.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif c.schedule == "step":  # boundaries are fractions of the whole run, warm-up included
        bounds = {max(int(b * total_steps) - warm, 0): 0.1 for b in c.step_boundaries}
        main = optax.piecewise_constant_schedule(lr, bounds)
    elif c.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, rest)
    elif c.schedule == "linear":
        main = optax.linear_schedule(lr, 0.0, rest)
    else:
        raise ValueError(f"config.optim.schedule must be one of {SCHEDULES}; got {c.schedule!r}")
    if not warm:
        return main
    mode = c.warmup
    if mode == "linear":
        ramp = optax.linear_schedule(0.0, lr, warm)
    elif mode == "constant":
        ramp = optax.constant_schedule(lr * c.warmup_factor)
    else:
        raise ValueError(f"config.optim.warmup must be one of {WARMUPS}; got {mode!r}")
    return optax.join_schedules([ramp, main], [warm])


def make_optimizer(c, total_steps: int, lr: float | None = None):
    """-> (optax transformation, schedule) from an OptimSpec (peak lr `lr` if given)."""
    schedule = make_schedule(c, total_steps, lr)
    mask = decay_mask(c.weight_decay_on)
    if c.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(c.weight_decay, mask=mask),
            optax.sgd(schedule, momentum=c.momentum, nesterov=c.nesterov),
        )
    elif c.optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=c.weight_decay, mask=mask)
    else:
        raise ValueError(f"config.optim.optimizer must be one of {OPTIMIZERS}; got {c.optimizer!r}")
    return tx, schedule
