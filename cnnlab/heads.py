"""Side heads for deep supervision, attached to a model's named features by configuration.

Lee et al. 2014, "Deeply-Supervised Nets", arXiv:1409.5185 (a classifier per hidden layer);
Szegedy et al. 2014, "Going Deeper with Convolutions" (GoogLeNet), arXiv:1409.4842, section 5:
auxiliary head = 5x5/3 average pool -> 1x1 conv (128, ReLU) -> FC 1024 (ReLU) -> dropout 0.7 ->
linear. Zhang et al. 2019, "Be Your Own Teacher", arXiv:1905.08094: a side head may also carry
a hint adapter (`side_<tap>_hint`) whose output learns to match a deeper feature. Side heads are
training-time only: their variables live under top-level `side_<tap>*` keys, so
`strip_side_heads` removes them without touching the backbone.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.layers import AvgPool, GlobalAvgPool, PointwiseConv


class LinearHead(nn.Module):
    """Global average pool -> dense to `num_classes`."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim == 4:
            x = GlobalAvgPool(name="pool")(x)
        return nn.Dense(self.num_classes, name="fc")(x)


class GoogLeNetHead(nn.Module):
    """GoogLeNet's auxiliary classifier; the pool window shrinks to fit small feature maps.

    Its sizes were set for Inception 4a/4d's 14x14x512 maps (pooled to 4x4, 128 channels, FC
    1024). On a CIFAR net it is large: at stage1 of ResNet-20 (32x32x16, pooled to 10x10x128)
    it adds 13.1M parameters to a 0.27M backbone. `scaled=True` ('googlenet_scaled') keeps the
    paper's proportions instead: average pool to 4x4, C/4 channels (at least 8), FC 8·C/4
    (9,042 parameters at that tap, 10-class head)."""

    num_classes: int
    window: int = 5
    strides: int = 3
    conv_features: int = 128
    hidden: int = 1024
    dropout: float = 0.7
    scaled: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim != 4:
            raise ValueError(f"GoogLeNetHead needs a (B, H, W, C) feature map; got {x.shape}")
        conv_features, hidden = self.conv_features, self.hidden
        if self.scaled:  # 14x14x512 -> 4x4x128 -> 1024 in the paper, for any map
            window = strides = max(1, min(x.shape[1], x.shape[2]) // 4)
            conv_features = max(8, x.shape[-1] // 4)
            hidden = 8 * conv_features
        else:
            window = min(self.window, x.shape[1], x.shape[2])
            strides = min(self.strides, window)
        x = AvgPool(window, strides, name="pool")(x)
        x = nn.relu(PointwiseConv(conv_features, name="conv")(x))
        x = nn.relu(nn.Dense(hidden, name="fc1")(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="fc2")(x)


HEADS = {
    "linear": LinearHead,
    "googlenet": GoogLeNetHead,  # the paper's sizes: 13.1M parameters at ResNet-20's stage1
    "googlenet_scaled": functools.partial(GoogLeNetHead, scaled=True),  # the paper's proportions
}


class HintAdapter(nn.Module):
    """BYOT's feature adapter, reduced to its job: global average pool of the side head's input,
    then a dense layer to the target feature's size, so the two can be compared."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim == 4:
            x = GlobalAvgPool(name="pool")(x)
        return nn.Dense(self.features, name="fc")(x)


def add_side_heads(model: nn.Module, features: dict, train: bool) -> dict:
    """Inside a model's compact `__call__`: run `model.side_head` on each of `model.side_taps`.

    Adds `features['side_logits'] = {tap: logits}` when any tap is configured; with
    `model.side_hint` naming a feature, also `features['side_hints'] = {tap: adapter output}` and
    `features['hint_target']`, that feature globally pooled to (B, D).
    """
    taps = tuple(model.side_taps)
    if not taps:
        return features
    available = [k for k in features if k != "side_logits"]
    unknown = [t for t in taps if t not in features]
    if unknown:
        raise ValueError(
            f"side_taps: no feature named {unknown} in {type(model).__name__}; "
            f"available taps: {available}"
        )
    if model.side_head not in HEADS:
        raise ValueError(f"side_head must be one of {sorted(HEADS)}; got {model.side_head!r}")
    head = HEADS[model.side_head]
    side = {tap: features[tap] for tap in taps}
    features["side_logits"] = {
        tap: head(model.num_classes, name=f"side_{tap}")(x, train=train) for tap, x in side.items()
    }
    if model.side_hint:
        if model.side_hint not in available:
            raise ValueError(
                f"side_hint_target: no feature named {model.side_hint!r} in "
                f"{type(model).__name__} to distil hints from; available taps: {available}"
            )
        target = features[model.side_hint]
        target = target.mean(axis=(1, 2)) if target.ndim == 4 else target
        features["hint_target"] = target
        features["side_hints"] = {
            tap: HintAdapter(target.shape[-1], name=f"side_{tap}_hint")(x)
            for tap, x in side.items()
        }
    return features


def strip_side_heads(variables: dict) -> dict:
    """Drop every `side_*` subtree (all collections): the backbone's variables, for inference."""
    return {
        col: {k: v for k, v in tree.items() if not k.startswith("side_")}
        for col, tree in variables.items()
    }
