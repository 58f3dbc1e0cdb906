"""Pooling as modules, so `cnnlab.summary` sees them as layers (flax's pools are functions).

Max pooling usually has no padding (f = 2, s = 2 halves H and W); global average pooling collapses
7x7xC to 1x1xC (Lin et al. 2013, arXiv:1312.4400).
"""

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.layers._common import IntPair, check_nhwc, pair


class MaxPool(nn.Module):
    """Max over k x k windows; no parameters."""

    window: IntPair = 2
    strides: IntPair | None = None  # default: the window size
    padding: str = "VALID"

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        return nn.max_pool(x, pair(self.window), pair(self.strides or self.window), self.padding)

    def macs(self, in_shape, out_shape) -> int:
        """One compare-accumulate per window element: K·K·C·H_out·W_out."""
        kh, kw = pair(self.window)
        return kh * kw * out_shape[1] * out_shape[2] * out_shape[3]


class AvgPool(MaxPool):
    """Mean over k x k windows (padding excluded from the count, as in Keras); no parameters."""

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        return nn.avg_pool(
            x,
            pair(self.window),
            pair(self.strides or self.window),
            self.padding,
            count_include_pad=False,
        )


class GlobalAvgPool(nn.Module):
    """(B, H, W, C) -> (B, C): the mean over all positions."""

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        return jnp.mean(x, axis=(1, 2))

    def macs(self, in_shape, out_shape) -> int:
        """One accumulate per input element: H·W·C."""
        return in_shape[1] * in_shape[2] * in_shape[3]
