"""MobileNetV1 and MobileNetV2 with width multiplier, at any input resolution.

Howard et al. 2017, "MobileNets", arXiv:1704.04861 (table 1); parameter counts equal Keras'
`MobileNet` (ReLU6, dropout 1e-3). Sandler et al. 2018, "MobileNetV2", arXiv:1801.04381 (table 2);
parameter counts equal torchvision's `mobilenet_v2`. Channels are `make_divisible(c · width, 8)`;
MobileNetV2's last conv keeps 1280 channels for width <= 1.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models.common import (
    check_input,
    classify,
    conv_bn,
    layer_parts,
    padding_kwargs,
    run_stages,
    unread_fields,
)
from cnnlab.models.scaling import make_divisible

# MobileNetV1: (pointwise features, stride) of the 13 depthwise-separable blocks
V1_BLOCKS = (
    *((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)),
    *((512, 1),) * 5,
    *((1024, 2), (1024, 1)),
)
# MobileNetV2: expansion t, channels c, repeats n, first stride s (paper table 2)
V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV1(nn.Module):
    """3x3/2 conv 32 -> 13 depthwise-separable blocks (one stage each) -> pool -> dense."""

    width: float = 1.0
    num_classes: int = 1000
    dropout: float = 1e-3
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "lecun"  # conv kernels: 'lecun' or 'he' (cnnlab.layers.KERNEL_INITS)
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        w = lambda c: make_divisible(c * self.width)
        taps = {}
        parts = layer_parts(self)
        x = taps["stem"] = conv_bn(x, train, w(32), strides=2, act=nn.relu6, **parts)
        stages = [(w(c), 1, s) for c, s in V1_BLOCKS]
        x = run_stages(x, train, taps, stages, "mobilenet_v1", act=nn.relu6, **parts)
        return classify(self, x, taps, train, self.dropout)


class MobileNetV2(nn.Module):
    """3x3/2 conv 32 -> 17 inverted residuals in 7 stages -> 1x1 conv 1280 -> pool -> dense."""

    width: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    skip: bool = True
    linear_bottleneck: bool = True  # False: the paper's ReLU6-after-projection ablation
    se_ratio: float | None = None
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linear in depth)
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "lecun"  # conv kernels: 'lecun' or 'he' (cnnlab.layers.KERNEL_INITS)
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread
    # for ported weights (cnnlab.pretrained): PyTorch's symmetric padding of strided convs
    # ('SYMMETRIC'; Keras pads as 'SAME'), another BatchNorm epsilon (Keras: 1e-3)
    padding: str = "SAME"
    bn_epsilon: float | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        w = lambda c: make_divisible(c * self.width)
        taps = {}
        parts = layer_parts(self)
        x = taps["stem"] = conv_bn(
            x, train, w(32), strides=2, act=nn.relu6, padding=self.padding, **parts
        )
        stages = [(w(c), n, s, {"expansion": t}) for t, c, n, s in V2_STAGES]
        x = run_stages(
            x,
            train,
            taps,
            stages,
            "inverted",
            skip=self.skip,
            linear_bottleneck=self.linear_bottleneck,
            se_ratio=self.se_ratio,
            zero_init_residual=self.zero_init_residual,
            drop_path_rate=self.drop_path_rate,
            **parts,
            **padding_kwargs(self),
        )
        last = make_divisible(1280 * max(1.0, self.width))
        x = taps["head_conv"] = conv_bn(x, train, last, 1, act=nn.relu6, name="head", **parts)
        return classify(self, x, taps, train, self.dropout)
