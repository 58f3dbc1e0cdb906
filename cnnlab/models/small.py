"""The notes' small networks: LeNet-5 and a small Xception-style binary classifier.

LeCun et al. 1998, "Gradient-based learning applied to document recognition": 32x32 -> conv5 6
-> pool -> conv5 16 -> pool -> 120 -> 84 -> 10 (61,706 parameters with full C3 connectivity).
The notes' variant (3 input channels, 8 then 16 filters, max pooling) has activation sizes
6,272 -> 1,568 -> 1,600 -> 400 -> 120 -> 84 -> 10: they shrink gradually towards the softmax.
Chollet 2017, "Xception", arXiv:1610.02357, and "Deep Learning with Python" 2nd ed. section
9.3.5: a regular conv on the RGB input (its channels are correlated), separable convs after it in
residual stages, global average pooling, dropout 0.5, one sigmoid output.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab import layers as L
from cnnlab.models.common import check_input, classify, layer_parts, unread_fields


class LeNet5(nn.Module):
    """conv 5x5 -> pool 2 -> conv 5x5 -> pool 2 -> dense -> dense -> dense (VALID convs)."""

    filters: Sequence[int] = (6, 16)
    hidden: Sequence[int] = (120, 84)
    pool: str = "avg"  # 'avg' (LeCun) or 'max' (the notes)
    act: Callable = nn.tanh
    num_classes: int = 10
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        pool = {"avg": L.AvgPool, "max": L.MaxPool}[self.pool]
        taps = {}
        for i, f in enumerate(self.filters, start=1):
            x = taps[f"conv{i}"] = self.act(L.Conv(f, 5, padding="VALID", name=f"conv{i}")(x))
            x = taps[f"pool{i}"] = pool(2, name=f"pool{i}")(x)
        x = x.reshape(x.shape[0], -1)  # (B, 5·5·16)
        for i, h in enumerate(self.hidden, start=1):
            x = taps[f"fc{i}"] = self.act(nn.Dense(h, name=f"fc{i}")(x))
        return classify(self, x, taps, train)


class MiniXception(nn.Module):
    """Conv 5x5 (32) -> residual stages of 2 separable convs + max pool -> pool -> dropout -> 1."""

    widths: Sequence[int] = (32, 64, 128, 256, 512)
    num_classes: int = 1  # one logit: sigmoid(logit) = P(class 1)
    dropout: float = 0.5
    skip: bool = True  # False drops the 1x1 strided projection shortcuts
    norm: str = "batch"  # 'batch', 'group', 'layer' or 'none' (cnnlab.layers.norm)
    conv_init: str = "lecun"  # conv kernels: 'lecun' or 'he' (cnnlab.layers.KERNEL_INITS)
    side_taps: Sequence[str] = ()
    side_head: str = "linear"
    side_hint: str = ""  # a feature side heads also learn to match (distillation hints)
    unread = staticmethod(unread_fields)  # the fields a configuration leaves unread

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        check_input(self, x)
        taps, parts = {}, layer_parts(self)
        norm, init = parts["norm"], parts["kernel_init"]
        bias = L.conv_bias(norm)  # every conv feeds a norm (pre-activation)
        x = taps["stem"] = L.Conv(32, 5, padding="VALID", use_bias=bias, kernel_init=init,
                                  name="stem_conv")(x)  # fmt: skip
        for i, w in enumerate(self.widths, start=1):
            residual = x
            for j in (1, 2):
                x = nn.relu(norm(use_running_average=not train, name=f"stage{i}_norm{j}")(x))
                x = L.SeparableConv(w, 3, use_bias=bias, kernel_init=init,
                                    name=f"stage{i}_sep{j}")(x)  # fmt: skip
            x = L.MaxPool(3, 2, padding="SAME", name=f"stage{i}_pool")(x)
            if self.skip:
                residual = L.PointwiseConv(
                    w, strides=2, use_bias=False, kernel_init=init, name=f"stage{i}_proj"
                )(residual)
                x = x + residual
            taps[f"stage{i}"] = x
        return classify(self, x, taps, train, self.dropout)
