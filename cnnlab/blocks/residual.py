"""Residual basic block and bottleneck, each with a plain twin (`skip=False`).

He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385 (figure 5):
basic = 3x3 -> BN -> ReLU -> 3x3 -> BN, add, ReLU; bottleneck = 1x1 reduce -> 3x3 -> 1x1 restore
(expansion 4), BN after each conv, ReLU after the add. The bottleneck strides in its 3x3 conv
(torchvision's "ResNet v1.5"; same parameters as striding the first 1x1, which
`stride_in_1x1=True` does: the original v1, Keras' ResNet50).

`zero_init_residual` starts the scale of the branch's last BatchNorm at zero (Goyal et al. 2017,
arXiv:1706.02677, section 5.1; torchvision's `zero_init_residual`), so each block begins as its
shortcut. A plain twin (`skip=False`) cannot use it: its output would be identically zero, so the
field is ignored there and the twins then differ in that one initialisation.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.blocks.convs import conv_kwargs
from cnnlab.blocks.drop_path import drop_path
from cnnlab.blocks.shortcut import RESIDUAL_HINT, check_add, materialize, shortcut
from cnnlab.layers import BatchNorm, Conv, PointwiseConv, default_kernel_init


def last_norm(block, train: bool, name: str, has_shortcut: bool):
    """The residual branch's last BatchNorm, its scale zero-initialised when the block asks for
    it and has a shortcut to fall back on."""
    kwargs = (
        {"scale_init": nn.initializers.zeros} if block.zero_init_residual and has_shortcut else {}
    )
    return block.norm(use_running_average=not train, name=name, **kwargs)


class BasicBlock(nn.Module):
    """Two k x k convs; F(x) + shortcut(x) when `skip`, the plain F(x) otherwise.

    When the shape changes, `shortcut='projection'` (the default here, as in torchvision's
    ResNets: option B) or `'zero_pad'` (option A, parameter-free; what the CIFAR ResNets of the
    paper's table 6 use, so `CifarResNet` passes it; it can only add channels)."""

    features: int
    strides: int = 1
    skip: bool = True
    shortcut: str = "projection"  # when the shape changes: 'projection' (B), 'zero_pad' (A)
    conv: Any = Conv  # any conv variant taking (features, kernel_size, strides)
    norm: Any = BatchNorm
    kernel_init: Any = default_kernel_init  # of every conv here (models: layers.kernel_init)
    act: Callable = nn.relu
    zero_init_residual: bool = False  # last BN scale starts at 0 (only where skip is on)
    drop_path: float = 0.0  # stochastic depth: P(skip the branch) in training (skip=True only)
    padding: str = "SAME"  # of the k x k convs: 'SAME' (TF, flax) or 'SYMMETRIC' (PyTorch)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = self.conv(self.features, 3, self.strides, **conv_kwargs(self), name="conv1")(x)
        y = self.act(self.norm(use_running_average=not train, name="norm1")(y))
        y = self.conv(self.features, 3, 1, **conv_kwargs(self), name="conv2")(y)
        y = last_norm(self, train, "norm2", self.skip)(y)  # (B, H/s, W/s, features)
        if self.skip:
            s = shortcut(self, x, y.shape, train)
            check_add(self, s, y, RESIDUAL_HINT)
            y = drop_path(self, y, self.drop_path, train) + s
        return materialize(self.act(y))  # see materialize: keeps XLA:CPU from recomputing


class Bottleneck(nn.Module):
    """1x1 reduce to `features` -> k x k -> 1x1 restore to 4·features; skip as in BasicBlock."""

    features: int
    strides: int = 1
    skip: bool = True
    shortcut: str = "projection"
    expansion: int = 4
    conv: Any = Conv
    norm: Any = BatchNorm
    kernel_init: Any = default_kernel_init  # of every conv here (models: layers.kernel_init)
    act: Callable = nn.relu
    zero_init_residual: bool = False
    drop_path: float = 0.0
    padding: str = "SAME"  # of the k x k conv: 'SAME' (TF, flax) or 'SYMMETRIC' (PyTorch)
    stride_in_1x1: bool = False  # True: the original v1 (Keras' ResNet50) strides in conv1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        s1, s2 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = PointwiseConv(self.features, strides=s1, **conv_kwargs(self), name="conv1")(x)
        y = self.act(self.norm(use_running_average=not train, name="norm1")(y))
        y = self.conv(self.features, 3, s2, **conv_kwargs(self), name="conv2")(y)
        y = self.act(self.norm(use_running_average=not train, name="norm2")(y))
        y = PointwiseConv(self.features * self.expansion, **conv_kwargs(self), name="conv3")(y)
        y = last_norm(self, train, "norm3", self.skip)(y)
        if self.skip:
            s = shortcut(self, x, y.shape, train)
            check_add(self, s, y, RESIDUAL_HINT)
            y = drop_path(self, y, self.drop_path, train) + s
        return materialize(self.act(y))  # see materialize: keeps XLA:CPU from recomputing
