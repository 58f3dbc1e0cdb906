"""Per-layer gradient norms: each conv/dense kernel's, in forward order (no side heads), the
vanishing-gradient picture that skip connections change (He et al. 2015; Glorot & Bengio 2010).
A train step returns them only when its `StepConfig.layer_grad_norms` is set."""

import jax.numpy as jnp


def kernels_in_order(tree, prefix=()):
    """(path, array) for every 'kernel' leaf in module creation (forward) order, no side heads.

    Flax keeps parameters in creation order; jax's tree utilities would sort the keys.
    """
    for key, value in tree.items():
        if key.startswith("side_"):
            continue
        if isinstance(value, dict):
            yield from kernels_in_order(value, (*prefix, key))
        elif key == "kernel":
            yield "/".join(prefix), value


def layer_grad_norms(grads) -> jnp.ndarray:
    """(n_kernels,) gradient norms in the order of `kernels_in_order`."""
    return jnp.stack([jnp.linalg.norm(g) for _, g in kernels_in_order(grads)])
