"""Stochastic depth ("drop path"): in training, each example skips a residual branch with
probability `rate`, the surviving branches scaled by 1/(1 - rate) so that evaluation is the
identity (no rescaling at test time, as in timm's DropPath; Huang et al. scale at test instead).

Huang et al. 2016, "Deep Networks with Stochastic Depth", arXiv:1603.09382, section 3: the
drop probability grows linearly with depth, p_l = (l / L) · p_L for block l of L; `rates(n, p)`
gives that rule and the models apply it through `drop_path_rate`. The draw uses the 'dropout'
rng the train step passes. A block without a shortcut (a plain twin) has nothing to fall back
on, so it ignores the rate.
"""

import jax
import jax.numpy as jnp


def drop_path(module, branch: jnp.ndarray, rate: float, train: bool) -> jnp.ndarray:
    """Inside a block's compact `__call__`: the residual branch with stochastic depth."""
    if not train or not rate:
        return branch
    keep = 1.0 - rate
    shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)  # one draw per example
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
    return jnp.where(mask, branch / keep, jnp.zeros_like(branch))


def rates(n_blocks: int, final_rate: float) -> list[float]:
    """Huang et al.'s linear rule: block l (1-based) of n drops with probability l/n · final."""
    if not 0.0 <= final_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1); got {final_rate}")
    return [final_rate * block / n_blocks for block in range(1, n_blocks + 1)]
