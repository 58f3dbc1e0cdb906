"""What every classifier shares: run stages of blocks, record named features, finish with heads."""

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from cnnlab import blocks as B
from cnnlab import layers as L
from cnnlab.blocks.drop_path import rates as drop_path_rates
from cnnlab.heads import add_side_heads

# Block families a generic network can stack; fields they lack cannot be set.
BLOCKS = {
    "basic": B.BasicBlock,
    "bottleneck": B.Bottleneck,
    "inverted": B.InvertedResidual,
    "mobilenet_v1": B.DepthwiseSeparableBlock,
    "shuffle": B.ShuffleUnit,
}


def conv_variant(name: str):
    if name not in L.CONV_VARIANTS:
        raise ValueError(f"conv must be one of {sorted(L.CONV_VARIANTS)}; got {name!r}")
    return L.CONV_VARIANTS[name]


def make_block(kind: str, name: str, **kwargs) -> nn.Module:
    """Instantiate BLOCKS[kind] with the kwargs it has; a setting it cannot honour is an error."""
    if kind not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}; got {kind!r}")
    cls = BLOCKS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    # settings that only mean something for a block with a shortcut
    asked = {
        "skip": kwargs.get("skip") is False,
        "zero_init_residual": kwargs.get("zero_init_residual"),
        "drop_path": kwargs.get("drop_path"),
    }
    for flag in (f for f, on in asked.items() if on and f not in names):
        raise ValueError(
            f"block {kind!r} has no shortcut, so {flag}={kwargs[flag]} means nothing for it"
        )
    if "conv" in kwargs and kwargs["conv"] is not L.Conv and "conv" not in names:
        raise ValueError(f"block {kind!r} has no swappable k x k conv; use conv='standard'")
    return cls(**{k: v for k, v in kwargs.items() if k in names}, name=name)


class Stage(NamedTuple):
    """`n` blocks of `features` channels, the first with stride `strides`; `kwargs` per stage."""

    features: int
    n: int
    strides: int = 1
    kwargs: dict | None = None


def run_stages(x, train, features, stages, block, drop_path_rate: float = 0.0, **block_kwargs):
    """Stack `stages` of `block`; blocks named stage{i}_block{j}, each output recorded as a tap.
    `drop_path_rate`: stochastic depth growing linearly to that rate at the last block."""
    stages = [Stage(*s) for s in stages]
    drops = iter(drop_path_rates(sum(st.n for st in stages), drop_path_rate))
    for i, st in enumerate(stages, start=1):
        for j in range(1, st.n + 1):
            drop = next(drops)
            blk = make_block(
                block,
                f"stage{i}_block{j}",
                features=st.features,
                strides=st.strides if j == 1 else 1,
                **({"drop_path": drop} if drop_path_rate else {}),
                **block_kwargs,
                **(st.kwargs or {}),
            )
            x = blk(x, train=train)
            features[f"stage{i}_block{j}"] = x
        features[f"stage{i}"] = x
    return x


def classify(model, x, features, train, dropout: float = 0.0):
    """Global pool -> [dropout] -> dense `head`; adds side heads. Returns (logits, features)."""
    if x.ndim == 4:
        x = L.GlobalAvgPool(name="pool")(x)
    features["pre_logits"] = x  # (B, C)
    if dropout:
        x = nn.Dropout(dropout, deterministic=not train, name="dropout")(x)
    logits = nn.Dense(model.num_classes, name="head")(x)
    return logits, add_side_heads(model, features, train)


def conv_bn(x, train, width, kernel=3, strides=1, padding="SAME", act=nn.relu, name="stem"):
    """Conv (no bias) -> BN -> act, as `{name}_conv` / `{name}_norm`."""
    x = L.Conv(width, kernel, strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    return act(B.BatchNorm(use_running_average=not train, name=f"{name}_norm")(x))


def check_input(model, x: jnp.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{type(model).__name__} expects NHWC images (batch, height, width, channels); "
            f"got shape {tuple(x.shape)}"
        )
