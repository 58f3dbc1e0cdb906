"""What every classifier shares: run stages of blocks, record named taps, finish with heads.

`taps` is the dict of named intermediates a model returns as its second output (`features` in
the API: stem, stageI_blockJ, stageI, pre_logits, side_logits); `features` stays a channel
count, as in the blocks."""

import dataclasses
import functools
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


def unread_fields(kwargs: dict) -> set[str]:
    """The fields a model with these settings never reads, so two configurations that differ only
    in them build the same net (the ablation grid trains such cells once: ablation.duplicates).
    Side-head settings without side taps; a plain twin's (skip=False) shortcut settings: it has no
    shortcut to choose, zero-initialise or drop. A family with more rules extends this one."""
    out = set()
    if not kwargs.get("side_taps"):
        out |= {"side_head", "side_hint"}
    if kwargs.get("skip") is False:
        out |= {"shortcut", "zero_init_residual", "drop_path_rate"}
    return out


def conv_variant(name: str):
    if name not in L.CONV_VARIANTS:
        raise ValueError(f"conv must be one of {sorted(L.CONV_VARIANTS)}; got {name!r}")
    return L.CONV_VARIANTS[name]


def make_block(kind: str, name: str, **kwargs) -> nn.Module:
    """Instantiate BLOCKS[kind]; a keyword the block does not take is an error, never dropped."""
    if kind not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}; got {kind!r}")
    cls = BLOCKS[kind]
    names = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kwargs) - names)
    for flag in ("skip", "zero_init_residual", "drop_path"):  # the shortcut's settings
        if flag in unknown:
            raise ValueError(
                f"block {kind!r} has no shortcut, so {flag}={kwargs[flag]} means nothing for it"
            )
    if "conv" in unknown:
        raise ValueError(f"block {kind!r} has no swappable k x k conv; use conv='standard'")
    if unknown:
        raise ValueError(f"block {kind!r} takes no {unknown}; its fields: {sorted(names)}")
    return cls(**kwargs, name=name)


class Stage(NamedTuple):
    """`n` blocks of `features` channels, the first with stride `strides`; `kwargs` per stage."""

    features: int
    n: int
    strides: int = 1
    kwargs: dict | None = None


def run_stages(x, train, taps, stages, block, drop_path_rate: float = 0.0, **block_kwargs):
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
            taps[f"stage{i}_block{j}"] = x
        taps[f"stage{i}"] = x
    return x


def classify(model, x, taps, train, dropout: float = 0.0):
    """Global pool -> [dropout] -> dense `head`; adds side heads. -> (logits, taps).
    `num_classes=0` leaves the head out: the pooled features come back in its place (a
    backbone, as Keras' `include_top=False, pooling='avg'` and timm's `num_classes=0`)."""
    if x.ndim == 4:
        x = L.GlobalAvgPool(name="pool")(x)
    taps["pre_logits"] = x  # (B, C)
    if model.num_classes == 0:
        return x, add_side_heads(model, taps, train)
    if dropout:
        x = nn.Dropout(dropout, deterministic=not train, name="dropout")(x)
    logits = nn.Dense(model.num_classes, name="head")(x)
    return logits, add_side_heads(model, taps, train)


def layer_parts(model) -> dict:
    """The norm factory and conv kernel initialiser that a model's `norm` and `conv_init` fields
    name, as the keywords `conv_bn` and every block take; a model's `bn_epsilon` (where it has
    one and it is set: ported weights, e.g. Keras' 1e-3) replaces BatchNorm's 1e-5."""
    norm = L.norm_layer(model.norm)
    eps = getattr(model, "bn_epsilon", None)
    if eps is not None:
        if model.norm != "batch":
            raise ValueError(f"bn_epsilon={eps} needs norm='batch'; got norm={model.norm!r}")
        norm = functools.partial(norm, epsilon=eps)
    return {"norm": norm, "kernel_init": L.kernel_init(model.conv_init)}


def padding_kwargs(model) -> dict:
    """The blocks' `padding` where a model's is not the default 'SAME' ('SYMMETRIC': PyTorch's
    padding, for torchvision weights), so that blocks without the field are left as they are."""
    if model.padding not in ("SAME", "SYMMETRIC"):
        raise ValueError(f"padding must be 'SAME' or 'SYMMETRIC'; got {model.padding!r}")
    return {} if model.padding == "SAME" else {"padding": model.padding}


def conv_bn(x, train, width, kernel=3, strides=1, padding="SAME", act=nn.relu, name="stem",
            norm=L.BatchNorm, kernel_init=L.default_kernel_init):  # fmt: skip
    """Conv -> norm -> act, as `{name}_conv` / `{name}_norm`; the conv has a bias only where
    `norm` (a `layers.norm_layer` factory) brings no offset."""
    x = L.Conv(width, kernel, strides, padding=padding, use_bias=L.conv_bias(norm),
               kernel_init=kernel_init, name=f"{name}_conv")(x)  # fmt: skip
    return act(norm(use_running_average=not train, name=f"{name}_norm")(x))


def check_input(model, x: jnp.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{type(model).__name__} expects NHWC images (batch, height, width, channels); "
            f"got shape {tuple(x.shape)}"
        )
