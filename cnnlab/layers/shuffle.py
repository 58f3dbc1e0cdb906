"""Channel shuffle, which lets grouped convolutions exchange information between groups.

Zhang et al. 2017, "ShuffleNet", arXiv:1707.01083.
"""

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.layers._common import check_nhwc


class ChannelShuffle(nn.Module):
    """(B,H,W,g·n) -> (g, n) -> transpose -> (B,H,W,n·g): output i·g + j <- input j·n + i."""

    groups: int

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        b, h, w, c = x.shape
        if self.groups < 1 or c % self.groups:
            raise ValueError(
                f"ChannelShuffle '{self.name}': groups={self.groups} must divide the "
                f"{c} input channels"
            )
        x = x.reshape(b, h, w, self.groups, c // self.groups)
        return jnp.swapaxes(x, 3, 4).reshape(b, h, w, c)

    def macs(self, in_shape, out_shape) -> int:
        """A permutation: no arithmetic."""
        return 0
