"""Per-cell diagnostics: per-layer gradient norms and activation sparsity.

Gradient norms per conv/dense kernel in forward order show the vanishing-gradient picture that
skip connections change (He et al. 2015; Glorot & Bengio 2010). Activation sparsity is the
fraction of exactly-zero ReLU outputs of each block, which the notes say grows with depth.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.train.step import _losses


def kernels_in_order(tree, prefix=()):
    """(path, array) for every 'kernel' leaf, in module creation (forward) order; no side heads."""
    for key, value in tree.items():
        if key.startswith("side_"):
            continue
        if isinstance(value, dict):
            yield from kernels_in_order(value, (*prefix, key))
        elif key == "kernel":
            yield "/".join(prefix), value


@functools.partial(jax.jit, static_argnames="cfg")
def _grads(state, batch, rng, cfg):
    def loss_fn(params):
        (logits, features), _ = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        return _losses(logits, features, batch["label"], cfg, state.step)[0]

    return jax.grad(loss_fn)(state.params)


def layer_grad_norms(state, batch, cfg) -> list[tuple[str, float]]:
    grads = jax.device_get(_grads(state, batch, jax.random.key(0), cfg))
    return [(path, float(np.linalg.norm(g))) for path, g in kernels_in_order(grads)]


def activation_sparsity(model, state, images) -> dict[str, float]:
    """Fraction of zeros in the stem and each block's output (eval mode), in forward order."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, features = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    taps = [k for k in features if k == "stem" or "_block" in k]
    return {k: float(jnp.mean(features[k] == 0)) for k in taps}
