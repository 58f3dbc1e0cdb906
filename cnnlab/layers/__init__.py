"""Convolution variants, one concept per file. All take NHWC inputs and HWIO kernels."""

from cnnlab.layers.conv import Conv, GroupedConv, PointwiseConv
from cnnlab.layers.depthwise import DepthwiseConv
from cnnlab.layers.norm import BatchNorm
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
    "AvgPool",
    "BatchNorm",
    "ChannelShuffle",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "GlobalAvgPool",
    "GroupedConv",
    "MaxPool",
    "PointwiseConv",
    "Rank1Factors",
    "SeparableConv",
    "SpatialSeparableConv",
    "factorize_rank1",
    "from_keras",
]

# Drop-in replacements for a k x k conv: each takes (features, kernel_size, strides, ...).
CONV_VARIANTS = {
    "standard": Conv,
    "separable": SeparableConv,
    "spatial_separable": SpatialSeparableConv,
}
__all__ += ["CONV_VARIANTS"]
