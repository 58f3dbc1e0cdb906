"""Small-network blocks without a residual add: MobileNetV1 and SqueezeNet's Fire module.

Howard et al. 2017, "MobileNets", arXiv:1704.04861 (figure 3: 3x3 depthwise -> BN -> ReLU ->
1x1 -> BN -> ReLU). Iandola et al. 2016, "SqueezeNet", arXiv:1602.07360 (Fire: 1x1 squeeze, then
1x1 and 3x3 expand filters concatenated; convs with bias, no BN).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.blocks.convs import conv_kwargs
from cnnlab.layers import BatchNorm, Conv, DepthwiseConv, PointwiseConv, default_kernel_init


class DepthwiseSeparableBlock(nn.Module):
    """MobileNetV1 block: depthwise k x k (strided) -> BN -> act -> pointwise -> BN -> act."""

    features: int
    strides: int = 1
    kernel_size: int = 3
    act: Callable = nn.relu
    norm: Any = BatchNorm
    kernel_init: Any = default_kernel_init  # of every conv here (models: layers.kernel_init)
    depthwise: Any = DepthwiseConv  # the k x k conv, as in InvertedResidual and ShuffleUnit

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.depthwise(self.kernel_size, self.strides, **conv_kwargs(self), name="depthwise")(x)
        x = self.act(self.norm(use_running_average=not train, name="depthwise_norm")(x))
        x = PointwiseConv(self.features, **conv_kwargs(self), name="pointwise")(x)
        return self.act(self.norm(use_running_average=not train, name="pointwise_norm")(x))


class Fire(nn.Module):
    """Fire module: squeeze 1x1 -> ReLU -> [expand 1x1 | expand 3x3] -> ReLU, concatenated."""

    squeeze: int
    expand1x1: int
    expand3x3: int
    act: Callable = nn.relu
    conv: Any = Conv  # the 3x3 expand conv (SqueezeNet: convs with bias, no BatchNorm)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no BN or dropout inside
        s = self.act(PointwiseConv(self.squeeze, name="squeeze")(x))
        e1 = self.act(PointwiseConv(self.expand1x1, name="expand1x1")(s))
        e3 = self.act(self.conv(self.expand3x3, 3, name="expand3x3")(s))
        return jnp.concatenate([e1, e3], axis=-1)  # (B, H, W, expand1x1 + expand3x3)
