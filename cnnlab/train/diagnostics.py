"""Per-layer gradient norms: each conv/dense kernel's (no side heads), the vanishing-gradient
picture that skip connections change (He et al. 2015; Glorot & Bengio 2010). A train step
returns them only when its `StepConfig.layer_grad_norms` is set.

They come in sorted path order, which is the order jax gives every dict it builds (gradients,
updated parameters, a jitted init), whatever order the model created its layers in; the forward
order is the model's to say (`cnnlab.ablation.diagnostics.forward_order`, from its summary)."""

import jax.numpy as jnp


def kernels(tree, prefix=()) -> list[tuple[str, object]]:
    """(path, array) for every 'kernel' leaf but the side heads', sorted by path."""
    out = []
    for key, value in tree.items():
        if key.startswith("side_"):
            continue
        if isinstance(value, dict):
            out += kernels(value, (*prefix, key))
        elif key == "kernel":
            out.append(("/".join(prefix), value))
    return sorted(out, key=lambda pair: pair[0])


def layer_grad_norms(grads) -> jnp.ndarray:
    """(n_kernels,) gradient norms in the order of `kernels`."""
    return jnp.stack([jnp.linalg.norm(g) for _, g in kernels(grads)])
