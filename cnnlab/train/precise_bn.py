"""Precise BatchNorm: recompute every BN layer's statistics with the final weights.

Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576, section 3: the running
averages mix statistics of many past weights, which after a short or fast-moving run describe no
single network; evaluating with statistics of the final weights removes that error. Here the
statistics are the batch mean and (biased) variance each BN layer sees in one train-mode forward
pass of a fixed set of training images, with no update of the weights.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def precise_batch_stats(apply_fn, variables: dict, images: jnp.ndarray, rng=None) -> dict:
    """New `batch_stats`: each BatchNorm's mean and variance over `images` in train mode.

    Jit it with `apply_fn` bound. Layers the forward pass does not reach keep their statistics.
    """
    stats = jax.tree.map(lambda a: a, variables.get("batch_stats", {}))  # a copy to fill in

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            x = jnp.asarray(args[0], jnp.promote_types(args[0].dtype, jnp.float32))
            axis = module.axis if isinstance(module.axis, tuple | list) else (module.axis,)
            feature_axes = {a % x.ndim for a in axis}
            axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
            mean = x.mean(axes)
            _set(stats, module.path, {"mean": mean, "var": ((x - mean) ** 2).mean(axes)})
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        apply_fn(
            variables,
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0) if rng is None else rng},
        )
    return stats
