"""Convolution variants, one concept per file. All take NHWC inputs and HWIO kernels."""

from cnnlab.layers.conv import (
    KERNEL_INITS,
    Conv,
    GroupedConv,
    PointwiseConv,
    default_kernel_init,
    kernel_init,
)
from cnnlab.layers.depthwise import DepthwiseConv
from cnnlab.layers.norm import (
    NORMS,
    BatchNorm,
    GroupNorm,
    NoNorm,
    conv_bias,
    group_count,
    norm_layer,
)
from cnnlab.layers.pooling import AvgPool, GlobalAvgPool, MaxPool
from cnnlab.layers.porting import from_keras
from cnnlab.layers.separable import (
    Rank1Factors,
    SeparableConv,
    SpatialSeparableConv,
    factorize_rank1,
)
from cnnlab.layers.shuffle import ChannelShuffle
from cnnlab.layers.transpose import ConvTranspose

__all__ = [
    "KERNEL_INITS",
    "NORMS",
    "AvgPool",
    "BatchNorm",
    "ChannelShuffle",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "GlobalAvgPool",
    "GroupNorm",
    "GroupedConv",
    "MaxPool",
    "NoNorm",
    "PointwiseConv",
    "Rank1Factors",
    "SeparableConv",
    "SpatialSeparableConv",
    "conv_bias",
    "default_kernel_init",
    "factorize_rank1",
    "from_keras",
    "group_count",
    "kernel_init",
    "norm_layer",
]

# Drop-in replacements for a k x k conv: each takes (features, kernel_size, strides, ...).
CONV_VARIANTS = {
    "standard": Conv,
    "separable": SeparableConv,
    "spatial_separable": SpatialSeparableConv,
}
__all__ += ["CONV_VARIANTS"]
