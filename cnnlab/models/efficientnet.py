"""EfficientNet-B0 and compound scaling to B1-B7.

Tan & Le 2019, "EfficientNet", arXiv:1905.11946 (table 1: B0 stages of MBConv = inverted residual
+ squeeze-excite 0.25 + swish). Width rounds with `make_divisible`, depth with ceil; the head conv
has 4x the last stage's channels. Parameter counts equal torchvision's `efficientnet_b*`.
Stochastic depth is `drop_path_rate` (off by default here; torchvision trains B0 with 0.2).
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
from cnnlab.models.scaling import make_divisible, scale_depth

# expansion, kernel, first stride, channels, repeats (paper table 1)
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
# width, depth, resolution, dropout: the published B0-B7 coefficients
COEFFICIENTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


class EfficientNet(nn.Module):
    """3x3/2 conv 32 -> MBConv stages -> 1x1 conv -> pool -> dropout -> dense, scaled."""

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    se_ratio: float = 0.25
    skip: bool = True
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
            x, train, w(32), strides=2, act=nn.swish, padding=self.padding, **parts
        )
        stages = [
            (w(c), scale_depth(n, self.depth), s, {"expansion": t, "kernel_size": k})
            for t, k, s, c, n in B0_STAGES
        ]
        x = run_stages(
            x,
            train,
            taps,
            stages,
            "inverted",
            skip=self.skip,
            se_ratio=self.se_ratio,
            act=nn.swish,
            zero_init_residual=self.zero_init_residual,
            drop_path_rate=self.drop_path_rate,
            **parts,
            **padding_kwargs(self),
        )
        x = taps["head_conv"] = conv_bn(
            x, train, 4 * x.shape[-1], 1, act=nn.swish, name="head", **parts
        )
        return classify(self, x, taps, train, self.dropout)
