"""Shortcut connections for residual blocks, and the shape check for the residual add.

He et al. 2015, "Deep Residual Learning", arXiv:1512.03385, section 3.3: when a block changes
shape, option A is a parameter-free identity (strided subsampling + zero-padded channels),
option B a projection (1x1 strided conv + BN). Shapes that differ cannot be added: (30,30,64) +
(30,30,32) is an error, not a broadcast.
"""

import jax
import jax.numpy as jnp

from cnnlab.blocks.convs import conv_kwargs
from cnnlab.layers import PointwiseConv

SHORTCUTS = ("projection", "zero_pad", "identity")


def check_add(block, shortcut: jnp.ndarray, residual: jnp.ndarray, hint: str) -> None:
    """Raise a clear error when the two branches of a residual add differ in shape."""
    if shortcut.shape != residual.shape:
        raise ValueError(
            f"{type(block).__name__} '{block.name or 'top level'}': cannot add the shortcut of "
            f"shape {tuple(shortcut.shape[1:])} to the residual branch of shape "
            f"{tuple(residual.shape[1:])} (H, W, C); {hint}"
        )


RESIDUAL_HINT = (
    "set shortcut='projection' (the blocks' default) or 'zero_pad' (adds channels only; the "
    "CIFAR ResNets' option A), or keep strides=1 and features = C_in"
)


def shortcut(block, x: jnp.ndarray, out_shape, train: bool) -> jnp.ndarray:
    """The block's shortcut for input x: identity when shapes match, else per `block.shortcut`."""
    if block.shortcut not in SHORTCUTS:
        raise ValueError(
            f"{type(block).__name__} '{block.name or 'top level'}': "
            f"shortcut must be one of {SHORTCUTS}; "
            f"got {block.shortcut!r}"
        )
    if tuple(x.shape) == tuple(out_shape) or block.shortcut == "identity":
        return x
    s = block.strides
    if block.shortcut == "projection":  # option B
        x = PointwiseConv(out_shape[-1], strides=s, **conv_kwargs(block), name="proj_conv")(x)
        return block.norm(use_running_average=not train, name="proj_norm")(x)
    # option A: subsample like a stride-s SAME conv, then append zero channels
    extra = out_shape[-1] - x.shape[-1]
    if extra < 0:
        raise ValueError(
            f"{type(block).__name__} '{block.name or 'top level'}': shortcut='zero_pad' can only "
            f"add channels, not go from {x.shape[-1]} to {out_shape[-1]}; use "
            f"shortcut='projection' (a 1x1 conv + BN)"
        )
    x = x[:, ::s, ::s, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra))) if extra > 0 else x


def materialize(y: jnp.ndarray) -> jnp.ndarray:
    """A residual block's output, kept in memory on XLA:CPU (`lax.optimization_barrier`).

    Without it XLA:CPU fuses the residual stream's elementwise recomputation (BN, add, ReLU of
    every earlier block) into each weight-gradient transpose, work that grows with the square of
    the depth: the ResNet-20 train step is 1.3-1.4x faster with it (benchmarks/README.md). Other
    backends are left to their own fusion heuristics. Values and gradients are unchanged.
    """
    if jax.default_backend() != "cpu":
        return y
    return jax.lax.optimization_barrier(y)
