"""cnnlab.summary: parameter split, analytic MACs, and agreement with XLA's own cost analysis."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import cnnlab
from cnnlab import layers as L


def xla_flops(layer, x):
    variables = layer.init(jax.random.key(0), x)
    cost = jax.jit(layer.apply).lower(variables, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"]


# VALID padding and no bias: XLA skips products with padding zeros and counts bias adds, while the
# papers' convention (and cnnlab's) counts every K·K tap and no bias. Here both count the same ops.
@pytest.mark.parametrize(
    "layer",
    [
        L.Conv(6, 3, padding="VALID", use_bias=False),
        L.Conv(6, 3, strides=2, padding="VALID", use_bias=False),
        L.Conv(6, 3, dilation=2, padding="VALID", use_bias=False),
        L.Conv(6, 3, groups=2, padding="VALID", use_bias=False),
        L.PointwiseConv(10, use_bias=False),
        L.DepthwiseConv(3, padding="VALID", depth_multiplier=2, use_bias=False, impl="xla"),
        L.DepthwiseConv(5, strides=2, padding="VALID", use_bias=False, impl="xla"),
        L.SeparableConv(8, 3, padding="VALID", use_bias=False, impl="xla"),
        L.SpatialSeparableConv(8, 3, padding="VALID", use_bias=False),
        L.ConvTranspose(5, 3, strides=1, padding="VALID", use_bias=False),
        nn.Dense(7, use_bias=False),
        nn.Conv(6, (3, 3), padding="VALID", use_bias=False),
    ],
    ids=lambda m: f"{type(m).__name__}",
)
def test_analytic_macs_match_xla_cost_analysis(layer):
    x = jnp.ones((1, 10, 9, 4))
    s = cnnlab.summary(layer, x)
    assert s.flops == 2 * s.macs
    assert xla_flops(layer, x) == s.flops


class TinyNet(nn.Module):
    """Conv -> BN -> ReLU -> separable -> pool -> dense, mixing cnnlab and flax layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = L.Conv(32, 3, name="conv")(x)  # (B, 8, 8, 32)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
        x = L.SeparableConv(64, 3, strides=2, name="sep")(x)  # (B, 4, 4, 64)
        x = L.MaxPool(2, name="pool")(x)  # (B, 2, 2, 64)
        x = L.GlobalAvgPool(name="gap")(x)  # (B, 64)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(10, name="head")(x)


def test_summary_rows_and_totals():
    s = cnnlab.summary(TinyNet(), jnp.zeros((2, 8, 8, 3)))
    by_path = {r.path: r for r in s.rows}
    assert list(by_path) == [
        "conv",
        "bn",
        "sep/depthwise",
        "sep/pointwise",
        "pool",
        "gap",
        "Dropout_0",
        "head",
    ]
    # hand counts
    assert by_path["conv"].trainable == 3 * 3 * 3 * 32 + 32
    assert by_path["conv"].macs == 3 * 3 * 3 * 32 * 8 * 8
    assert (by_path["bn"].trainable, by_path["bn"].non_trainable) == (64, 64)
    assert by_path["bn"].macs == 8 * 8 * 32
    assert by_path["sep/depthwise"].macs == 3 * 3 * 32 * 4 * 4
    assert by_path["sep/pointwise"].macs == 32 * 64 * 4 * 4
    assert by_path["pool"].macs == 2 * 2 * 64 * 2 * 2
    assert by_path["gap"].macs == 2 * 2 * 64
    assert by_path["head"].macs == 64 * 10
    assert by_path["head"].output_shape == (2, 10)
    assert s.total_params == sum(r.params for r in s.rows) == 896 + 128 + 288 + 2112 + 650
    assert s.trainable_params == s.total_params - 64 and s.non_trainable_params == 64
    assert s.macs == sum(r.macs for r in s.rows)
    assert s.macs_by_kind()["DepthwiseConv"] == 3 * 3 * 32 * 4 * 4
    text = str(s)
    for needle in (
        "sep/pointwise",
        "PointwiseConv",
        "(2, 4, 4, 64)",
        "Trainable params:     4,010",
        "Non-trainable params: 64",
        f"MACs per example:     {s.macs:,}",
        "FLOPs",
    ):
        assert needle in text


def test_summary_passes_call_arguments():
    train = cnnlab.summary(TinyNet(), jnp.zeros((1, 8, 8, 3)), train=True)
    assert train.total_params == cnnlab.summary(TinyNet(), jnp.zeros((1, 8, 8, 3))).total_params


def test_composite_module_with_own_params_gets_a_row():
    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x):
            gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],))
            return L.PointwiseConv(4, name="proj")(x * gamma)

    s = cnnlab.summary(Scaled(), jnp.zeros((1, 3, 3, 2)))
    assert [(r.path, r.trainable) for r in s.rows] == [("Scaled", 2), ("proj", 12)]
    assert s.total_params == 14


def test_unknown_layer_cost_is_flagged_not_guessed():
    class Mystery(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x * self.param("w", nn.initializers.ones, (x.shape[-1],))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return L.PointwiseConv(2)(Mystery()(x))

    s = cnnlab.summary(Net(), jnp.zeros((1, 2, 2, 3)))
    assert s.rows[0].macs is None
    assert s.macs == 3 * 2 * 2 * 2
    assert "MACs exclude layers of unknown cost: Mystery_0" in str(s)
