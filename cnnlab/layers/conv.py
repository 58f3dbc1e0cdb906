"""Standard, pointwise (1x1) and grouped convolutions.

LeCun et al. 1998 (LeNet); Lin et al. 2013, arXiv:1312.4400 (1x1 "network in network");
Krizhevsky et al. 2012 / Xie et al. 2016, arXiv:1611.05431 (grouped convolution).

Deep-learning "convolution" is cross-correlation: the kernel is not mirrored. `flip_kernel=True`
mirrors it in both spatial axes, giving true (textbook) convolution.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from cnnlab.layers._common import IntPair, PaddingLike, check_nhwc, explicit_padding, pair

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
default_kernel_init = nn.initializers.lecun_normal()
# Conv kernel initialisations a model can name (its `conv_init` field):
# 'lecun': flax's default, truncated normal with variance 1/fan_in (what Keras's applications
#   and cnnlab used before `conv_init` existed);
# 'he': He et al. 2015 ("Delving deep into rectifiers", arXiv:1502.01852), as torchvision's
#   ResNets, MobileNetV2 and EfficientNets apply it: kaiming_normal_(mode='fan_out',
#   nonlinearity='relu'), an untruncated normal with variance 2/fan_out, fan_out = k·k·C_out.
KERNEL_INITS = {
    "lecun": default_kernel_init,
    "he": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
}


def kernel_init(name: str):
    """The conv kernel initialiser a model's `conv_init` field names ('he' or 'lecun')."""
    if name not in KERNEL_INITS:
        raise ValueError(f"conv_init must be one of {list(KERNEL_INITS)}; got {name!r}")
    return KERNEL_INITS[name]


def pointwise_dot(x, kernel, strides):
    """An unpadded 1x1 conv as one (N*H*W, C_in) x (C_in, C_out) matmul: same result as the conv,
    and on XLA:CPU about 2x faster forward + backward than its 1x1 conv. Flattening to 2-D matters:
    a 4-D dot_general's kernel gradient is ~2x slower (benchmarks/README.md)."""
    if strides != (1, 1):
        x = x[:, :: strides[0], :: strides[1]]
    *lead, c_in = x.shape
    y = x.reshape(-1, c_in) @ kernel[0, 0]
    return y.reshape(*lead, kernel.shape[-1])


class Conv(nn.Module):
    """k x k convolution of NHWC inputs; HWIO kernel of shape (kh, kw, C_in/groups, C_out)."""

    features: int
    kernel_size: IntPair = 3
    strides: IntPair = 1
    _: dataclasses.KW_ONLY  # the rest by keyword only: Keras' positional order differs
    padding: PaddingLike = "SAME"
    dilation: IntPair = 1
    groups: int = 1
    use_bias: bool = True
    flip_kernel: bool = False  # True: true convolution (mirrored kernel), not cross-correlation
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()

    def _check(self, c_in: int) -> None:
        if self.groups < 1 or c_in % self.groups or self.features % self.groups:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': groups={self.groups} must divide both the "
                f"input channels ({c_in}) and features ({self.features})"
            )

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        c_in = x.shape[-1]
        self._check(c_in)
        kh, kw = pair(self.kernel_size, "kernel_size")
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (kh, kw, c_in // self.groups, self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.flip_kernel:
            kernel = kernel[::-1, ::-1]
        strides, dilation = pair(self.strides, "strides"), pair(self.dilation, "dilation")
        pads = explicit_padding(self.padding, x.shape[1:3], (kh, kw), strides, dilation)
        if (kh, kw) == (1, 1) and self.groups == 1 and not any(map(any, pads)):
            y = pointwise_dot(x, kernel, strides)
        else:
            y = lax.conv_general_dilated(
                x,
                kernel,
                window_strides=strides,
                padding=pads,
                rhs_dilation=dilation,
                dimension_numbers=DIMENSION_NUMBERS,
                feature_group_count=self.groups,
            )  # (B, H_out, W_out, features)
        return y + bias if bias is not None else y

    def macs(self, in_shape, out_shape) -> int:
        """K_h·K_w·(C_in/groups)·C_out·H_out·W_out per example."""
        kh, kw = pair(self.kernel_size)
        return kh * kw * (in_shape[-1] // self.groups) * math.prod(out_shape[1:])


class PointwiseConv(Conv):
    """1x1 convolution: mixes channels at each pixel, no spatial extent."""

    kernel_size: IntPair = 1

    def _check(self, c_in: int) -> None:
        if pair(self.kernel_size) != (1, 1):
            raise ValueError(
                f"PointwiseConv '{self.name}' is 1x1; got kernel_size={self.kernel_size}"
            )
        super()._check(c_in)


class GroupedConv(Conv):
    """Grouped conv (ShuffleNet's grouped 1x1 by default): each group sees C_in/groups inputs."""

    kernel_size: IntPair = 1
    groups: int = 3  # ShuffleNet's default g = 3
