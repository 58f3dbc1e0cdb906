"""ShuffleNet unit: grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1.

Zhang et al. 2017, "ShuffleNet", arXiv:1707.01083 (figure 2): stride 1 adds the input; stride 2
concatenates a 3x3 average-pooled input, so the branch makes `features - C_in` channels.
Bottleneck width is features / 4. `skip=False` drops the add (stride 1) or the pooled branch
(stride 2, where the grouped 1x1 then makes all `features` channels).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.blocks.convs import conv_kwargs
from cnnlab.blocks.drop_path import drop_path
from cnnlab.blocks.residual import last_norm
from cnnlab.blocks.shortcut import check_add
from cnnlab.layers import (
    AvgPool,
    BatchNorm,
    ChannelShuffle,
    Conv,
    DepthwiseConv,
    default_kernel_init,
)


class ShuffleUnit(nn.Module):
    """ShuffleNet v1 unit with `groups` groups in both 1x1 convs."""

    features: int
    groups: int = 3
    strides: int = 1
    skip: bool = True
    group_first_conv: bool = True  # False for the very first unit (input has too few channels)
    norm: Any = BatchNorm
    kernel_init: Any = default_kernel_init  # of every conv here (models: layers.kernel_init)
    act: Callable = nn.relu
    depthwise: Any = DepthwiseConv  # the 3x3 conv, as in InvertedResidual
    zero_init_residual: bool = False  # norm3 scale starts at 0 in stride-1 units with the add
    drop_path: float = 0.0  # stochastic depth in stride-1 units with the add

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        concat = self.skip and self.strides > 1
        out = self.features - x.shape[-1] if concat else self.features
        mid = self.features // 4
        g1 = self.groups if self.group_first_conv else 1
        y = Conv(mid, 1, groups=g1, **conv_kwargs(self), name="gconv1")(x)
        y = self.act(self.norm(use_running_average=not train, name="norm1")(y))
        y = ChannelShuffle(self.groups, name="shuffle")(y)
        y = self.depthwise(3, self.strides, **conv_kwargs(self), name="depthwise")(y)
        y = self.norm(use_running_average=not train, name="norm2")(y)
        y = Conv(out, 1, groups=self.groups, **conv_kwargs(self), name="gconv2")(y)
        y = last_norm(self, train, "norm3", self.skip and not concat)(y)
        if concat:
            pooled = AvgPool(3, self.strides, padding="SAME", name="pool")(x)
            return self.act(jnp.concatenate([pooled, y], axis=-1))
        if self.skip:
            check_add(self, x, y, "a stride-1 unit needs features = C_in; use strides=2 to grow")
            y = drop_path(self, y, self.drop_path, train) + x
        return self.act(y)
