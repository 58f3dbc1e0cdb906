"""Normalisation for every block and model: BatchNorm (the default), GroupNorm, LayerNorm, none.

BatchNorm has PyTorch's defaults: PyTorch's momentum 0.1 (weight of the new batch) is flax's
momentum 0.9 (weight of the running average); epsilon 1e-5 as in PyTorch and torchvision (Keras:
1e-3). Trainable scale and offset ('params'), running mean and variance ('batch_stats', not
trained).

`norm_layer(kind)` is what a model passes to its blocks as `norm`: a factory called as
`norm(use_running_average=..., name=..., [scale_init=...])`, for

- 'batch': BatchNorm as above;
- 'group': GroupNorm (Wu & He 2018, arXiv:1803.08494) with `group_count(C)` groups: the paper's
  32 where the channels allow, and at least 2 channels per group (16 channels: 8 groups of 2);
  per-example statistics, no running averages;
- 'layer': LayerNorm over each example's (H, W, C) with a scale and offset per channel (GroupNorm
  with one group, as Wu & He define it);
- 'none': no normalisation; the conv before it then gets a bias (`conv_bias`).

Every kind but 'none' has 2·C trainable parameters per layer; only 'batch' has batch statistics
(PreciseBN and the weight average's recomputed statistics skip models without them)."""

import functools
from typing import Any

import flax.linen as nn

BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
MAX_GROUPS = 32  # Wu & He's default G


def group_count(channels: int) -> int:
    """GroupNorm's groups for `channels`: the largest divisor of C that is at most
    min(32, C // 2) (so at least 2 channels per group), 1 below 4 channels."""
    top = min(MAX_GROUPS, channels // 2)
    return max((g for g in range(1, top + 1) if channels % g == 0), default=1)


class GroupNorm(nn.Module):
    """flax's GroupNorm with `group_count(C)` groups, C read from the input; its scale and
    offset live in this module's own scope (no extra level in the parameter paths)."""

    epsilon: float = 1e-5
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x):
        norm = nn.GroupNorm(
            num_groups=group_count(x.shape[-1]), epsilon=self.epsilon, scale_init=self.scale_init
        )
        nn.share_scope(self, norm)
        return norm(x)


class NoNorm(nn.Module):
    """The identity where a norm would be (norm='none'); it has no parameters."""

    @nn.compact
    def __call__(self, x):
        return x


def _per_example(cls, use_running_average=None, **kwargs):
    del use_running_average  # per-example statistics: the same in training and evaluation
    return cls(**kwargs)


def _none(use_running_average=None, scale_init=None, **kwargs):
    del use_running_average
    if scale_init is not None:
        raise ValueError(
            "norm='none' has no scale to zero-initialise; set zero_init_residual=False"
        )
    return NoNorm(**kwargs)


# over each example's (H, W, C), a scale and offset per channel
LayerNorm = functools.partial(
    nn.LayerNorm, reduction_axes=(-3, -2, -1), feature_axes=-1, epsilon=1e-5
)
_FACTORIES = {
    "batch": BatchNorm,
    "group": functools.partial(_per_example, GroupNorm),
    "layer": functools.partial(_per_example, LayerNorm),
    "none": _none,
}
NORMS = tuple(_FACTORIES)  # 'batch', 'group', 'layer', 'none'


def norm_layer(kind: str):
    """The norm factory blocks take as `norm`, for kind 'batch', 'group', 'layer' or 'none'."""
    if kind not in _FACTORIES:
        raise ValueError(f"norm must be one of {list(NORMS)}; got {kind!r}")
    return _FACTORIES[kind]


def conv_bias(norm) -> bool:
    """Whether a conv followed by `norm` needs its own bias: only without a norm (which would
    otherwise bring the offset)."""
    return norm is _none
