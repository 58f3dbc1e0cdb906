"""Inverted residual with linear bottleneck (MobileNetV2), optional squeeze-and-excite (MBConv).

Sandler et al. 2018, "MobileNetV2", arXiv:1801.04381: 1x1 expansion (ReLU6) -> 3x3 depthwise
(ReLU6) -> 1x1 linear projection (no activation: ReLU on the low-dimensional bottleneck loses
information; `linear_bottleneck=False` is the paper's ablation). Residual only when the stride is
1 and channels match. Hu et al. 2017, "Squeeze-and-Excitation Networks", arXiv:1709.01507;
Tan & Le 2019, "EfficientNet", arXiv:1905.11946 (MBConv = this block + SE + swish).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.blocks.convs import conv_kwargs
from cnnlab.blocks.drop_path import drop_path
from cnnlab.blocks.residual import last_norm
from cnnlab.layers import BatchNorm, DepthwiseConv, PointwiseConv, default_kernel_init


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 reduce (`features`) -> act -> 1x1 expand -> sigmoid gate on channels."""

    features: int  # squeeze channels
    act: Callable = nn.relu
    gate: Callable = nn.sigmoid

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        s = self.act(PointwiseConv(self.features, name="reduce")(s))
        s = self.gate(PointwiseConv(x.shape[-1], name="expand")(s))
        return x * s


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise k x k -> [SE] -> project (1x1, linear); + x when shapes allow."""

    features: int
    strides: int = 1
    expansion: int = 6
    kernel_size: int = 3
    skip: bool = True
    linear_bottleneck: bool = True
    se_ratio: float | None = None  # squeeze channels = int(C_in · se_ratio), as in EfficientNet
    act: Callable = nn.relu6
    norm: Any = BatchNorm
    kernel_init: Any = default_kernel_init  # of every conv here (models: layers.kernel_init)
    depthwise: Any = DepthwiseConv
    zero_init_residual: bool = False  # project BN scale starts at 0 where the block adds x
    drop_path: float = 0.0  # stochastic depth where the block adds x (cnnlab/blocks/drop_path.py)
    padding: str = "SAME"  # of the depthwise conv: 'SAME' (TF, Keras) or 'SYMMETRIC' (PyTorch)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c_in = x.shape[-1]
        residual = self.skip and self.strides == 1 and c_in == self.features
        y = x
        if self.expansion != 1:
            y = PointwiseConv(c_in * self.expansion, **conv_kwargs(self), name="expand")(y)
            y = self.act(self.norm(use_running_average=not train, name="expand_norm")(y))
        y = self.depthwise(self.kernel_size, self.strides, **conv_kwargs(self), name="depthwise")(y)
        y = self.act(self.norm(use_running_average=not train, name="depthwise_norm")(y))
        if self.se_ratio:
            y = SqueezeExcite(max(1, int(c_in * self.se_ratio)), act=self.act, name="se")(y)
        y = PointwiseConv(self.features, **conv_kwargs(self), name="project")(y)
        y = last_norm(self, train, "project_norm", residual)(y)
        if not self.linear_bottleneck:
            y = self.act(y)
        if residual:
            y = drop_path(self, y, self.drop_path, train) + x
        return y  # (B, H/s, W/s, features)
