"""Per-cell diagnostics: per-layer gradient norms and activation sparsity.

Gradient norms per conv/dense kernel in forward order show the vanishing-gradient picture that
skip connections change (He et al. 2015; Glorot & Bengio 2010). Activation sparsity is the
fraction of exactly-zero ReLU outputs of each block, which the notes say grows with depth.
"""

import functools

import jax
import jax.numpy as jnp

from cnnlab.train.diagnostics import kernels_in_order


def layer_grad_norms(state, metrics) -> list[tuple[str, float]]:
    """(kernel path, gradient norm) in forward order, from a train step's metrics."""
    paths = [path for path, _ in kernels_in_order(state.params)]
    norms = jax.device_get(metrics["layer_grad_norms"])
    return [(p, float(n)) for p, n in zip(paths, norms, strict=True)]


def activation_sparsity(model, state, images) -> dict[str, float]:
    """Fraction of zeros in the stem and each block's output (eval mode), in forward order."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, features = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    taps = [k for k in features if k == "stem" or "_block" in k]
    return {k: float(jnp.mean(features[k] == 0)) for k in taps}
