"""A plain or residual network of any depth and width, from any block and conv variant."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models.common import (
    check_input,
    classify,
    conv_bn,
    conv_variant,
    layer_parts,
    run_stages,
    unread_fields,
)


class GenericNet(nn.Module):
    """3x3 stem -> stages of `block` -> pool -> dense. One call builds any ablation variant.

    e.g. GenericNet(block='basic', stage_sizes=(9, 9, 9), skip=False, conv='separable').
    """

    block: str = "basic"  # a key of cnnlab.models.common.BLOCKS
    stage_sizes: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)
    strides: Sequence[int] = (1, 2, 2)
    stem_width: int = 16
    conv: str = "standard"
    skip: bool = True
    shortcut: str = "projection"
    zero_init_residual: bool = False  # residual blocks' last BN scale starts at 0
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linear in depth, Huang)
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "lecun"  # conv kernels: 'lecun' or 'he' (cnnlab.layers.KERNEL_INITS)
    block_kwargs: Any = None  # extra block fields, e.g. {'expansion': 6}
    num_classes: int = 10
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)

    @staticmethod
    def unread(kwargs: dict) -> set[str]:
        """common.unread_fields, and `shortcut` where the block has none (not basic/bottleneck)."""
        out = unread_fields(kwargs)
        if kwargs.get("block", "basic") not in ("basic", "bottleneck"):
            out |= {"shortcut"}
        return out

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        if not len(self.stage_sizes) == len(self.widths) == len(self.strides):
            raise ValueError(
                f"GenericNet: stage_sizes {tuple(self.stage_sizes)}, widths "
                f"{tuple(self.widths)} and strides {tuple(self.strides)} must have equal lengths"
            )
        taps = {}
        parts = layer_parts(self)
        x = taps["stem"] = conv_bn(x, train, self.stem_width, **parts)
        kwargs = {**parts, **(self.block_kwargs or {})}
        if self.block in ("basic", "bottleneck"):
            kwargs.update(shortcut=self.shortcut, conv=conv_variant(self.conv))
        elif self.conv != "standard":
            raise ValueError(
                f"block {self.block!r} has no swappable k x k conv; use conv='standard'"
            )
        if not self.skip:
            kwargs["skip"] = False
        if self.zero_init_residual:
            kwargs["zero_init_residual"] = True
        stages = list(zip(self.widths, self.stage_sizes, self.strides, strict=True))
        x = run_stages(
            x, train, taps, stages, self.block, drop_path_rate=self.drop_path_rate, **kwargs
        )
        return classify(self, x, taps, train)
