"""ResNets: the CIFAR family of depth 6n+2 and the ImageNet ResNet-18/34/50/101/152.

He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385.
CIFAR (section 4.2): 3x3 conv 16 -> 3 stages of n blocks at 16/32/64 channels (32x32, 16x16,
8x8) -> global pool -> 10-way dense; option A (zero-pad) shortcuts; plain twins by `skip=False`.
ImageNet (table 1): 7x7/2 conv 64 -> 3x3/2 max pool -> 4 stages -> pool -> 1000-way dense, option
B (projection) shortcuts; parameter counts equal torchvision's.
Both initialise their convs as the paper states (section 3.4: "as in [13]", He et al. 2015) and
torchvision does: `conv_init='he'`, a normal with variance 2/fan_out (`layers.KERNEL_INITS`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab import layers as L
from cnnlab.models.common import (
    check_input,
    classify,
    conv_bn,
    conv_variant,
    layer_parts,
    padding_kwargs,
    run_stages,
    unread_fields,
)

CIFAR_BLOCK_DEPTH = {"basic": 6, "bottleneck": 9}  # layers per unit of n (2 or 3 convs x 3 stages)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: depth = 6n + 2 (basic) or 9n + 2 (bottleneck)."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    block: str = "basic"
    shortcut: str = "zero_pad"  # option A; 'projection' is option B
    skip: bool = True
    conv: str = "standard"  # k x k conv variant in every block
    zero_init_residual: bool = False  # each block's last BN scale starts at 0 (skip=True only)
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linear in depth, Huang)
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "he"  # conv kernels as the paper (section 3.4) and torchvision: He
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread

    def n_blocks(self) -> int:
        per = CIFAR_BLOCK_DEPTH.get(self.block)
        if per is None:
            raise ValueError(
                f"block must be one of {sorted(CIFAR_BLOCK_DEPTH)}; got {self.block!r}"
            )
        n, rest = divmod(self.depth - 2, per)
        if rest or n < 1:
            valid = ", ".join(str(per * k + 2) for k in (1, 2, 3, 5, 7, 9, 18))
            raise ValueError(
                f"depth={self.depth} is not {per}n+2 for block={self.block!r}; "
                f"use one of {valid}, ..."
            )
        return n

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        n, taps = self.n_blocks(), {}
        parts = layer_parts(self)
        x = taps["stem"] = conv_bn(x, train, self.width, **parts)
        x = run_stages(
            x,
            train,
            taps,
            [(self.width * 2**i, n, 1 if i == 0 else 2) for i in range(3)],
            self.block,
            skip=self.skip,
            shortcut=self.shortcut,
            conv=conv_variant(self.conv),
            zero_init_residual=self.zero_init_residual,
            drop_path_rate=self.drop_path_rate,
            **parts,
        )
        return classify(self, x, taps, train)


class ResNet(nn.Module):
    """ImageNet ResNet: stem, four stages of `stage_sizes` blocks at width·(1, 2, 4, 8)."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    num_classes: int = 1000
    width: int = 64
    shortcut: str = "projection"  # option B
    skip: bool = True
    conv: str = "standard"
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linear in depth)
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "he"  # conv kernels as the paper (section 3.4) and torchvision: He
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread
    # for ported weights (cnnlab.pretrained): PyTorch's symmetric padding of strided convs,
    # another BatchNorm epsilon, the original v1's stride in the first 1x1 (Keras' ResNet50)
    padding: str = "SAME"
    bn_epsilon: float | None = None
    stride_in_1x1: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        taps = {}
        parts = layer_parts(self)
        x = conv_bn(x, train, self.width, 7, 2, padding=3, **parts)
        x = L.MaxPool(3, 2, padding=((1, 1), (1, 1)), name="stem_pool")(x)  # (B, H/4, W/4, 64)
        taps["stem"] = x
        if self.stride_in_1x1:
            if self.block != "bottleneck":
                raise ValueError(f"stride_in_1x1 needs block='bottleneck'; got {self.block!r}")
            parts["stride_in_1x1"] = True
        stages = [
            (self.width * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(self.stage_sizes)
        ]
        x = run_stages(
            x,
            train,
            taps,
            stages,
            self.block,
            skip=self.skip,
            shortcut=self.shortcut,
            conv=conv_variant(self.conv),
            zero_init_residual=self.zero_init_residual,
            drop_path_rate=self.drop_path_rate,
            **parts,
            **padding_kwargs(self),
        )
        return classify(self, x, taps, train)
