"""Every worked example in the study notes (../shared/seeds/), reproduced with cnnlab."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L


def count(layer, x):
    return cnnlab.summary(layer, x)


def test_separable_conv2d_3x3_32_to_64_is_2400_params():
    # 288 depthwise + 2048 pointwise + 64 pointwise biases; Keras has no depthwise bias
    s = count(L.SeparableConv(64, 3), jnp.zeros((1, 8, 8, 32)))
    assert s.trainable_params == 2400
    assert [r.trainable for r in s.rows] == [288, 2048 + 64]


def test_separable_conv2d_with_depthwise_bias_is_2432_params():
    s = count(L.SeparableConv(64, 3, depthwise_bias=True), jnp.zeros((1, 8, 8, 32)))
    assert s.trainable_params == 2432
    assert [r.trainable for r in s.rows] == [288 + 32, 2048 + 64]


def test_depthwise_separable_on_7x7x3_to_2_filters_with_all_biases_is_38():
    # depthwise 27 weights + 3 biases = 30; pointwise 6 weights + 2 biases = 8
    s = count(L.SeparableConv(2, 3, depthwise_bias=True), jnp.zeros((1, 7, 7, 3)))
    assert [r.trainable for r in s.rows] == [30, 8]
    assert s.trainable_params == 38 and s.non_trainable_params == 0


def test_batchnorm_after_32_channels_is_128_params_64_trainable():
    class ConvBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=True)(L.Conv(32, 3)(x))

    s = count(ConvBN(), jnp.zeros((1, 8, 8, 3)))
    bn = s.rows[1]
    assert (bn.kind, bn.params, bn.trainable, bn.non_trainable) == ("BatchNorm", 128, 64, 64)


def test_patch_with_vertical_edge_kernel_gives_minus_6_then_relu_0():
    patch = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # [[1,2,3],[4,5,6],[7,8,9]]
    kernel = jnp.array([[1.0, 0.0, -1.0]] * 3).reshape(3, 3, 1, 1)  # every row is 1 0 -1
    conv = L.Conv(1, 3, padding="VALID", use_bias=False)
    out = conv.apply({"params": {"kernel": kernel}}, patch)
    assert float(out.squeeze()) == -6.0  # (1-3) + (4-6) + (7-9): cross-correlation
    assert float(nn.relu(out).squeeze()) == 0.0
    # a true convolution mirrors the kernel, so the same patch gives +6
    flipped = conv.clone(flip_kernel=True).apply({"params": {"kernel": kernel}}, patch)
    assert float(flipped.squeeze()) == 6.0


@pytest.mark.parametrize("c_in,c_out,n,hw", [(3, 8, 3, 7), (16, 32, 5, 10)])
def test_comparison_table_params_cost_and_channels(c_in, c_out, n, hw):
    """The notes' table: normal C_in·C_out·N·N, pointwise C_in·C_out, depthwise C_in·N·N."""
    x = jnp.zeros((1, hw, hw, c_in))
    normal = count(L.Conv(c_out, n, use_bias=False), x)
    pointwise = count(L.PointwiseConv(c_out, use_bias=False), x)
    depthwise = count(L.DepthwiseConv(n, use_bias=False), x)
    separable = count(L.SeparableConv(c_out, n, use_bias=False), x)
    assert normal.total_params == c_in * c_out * n * n
    assert pointwise.total_params == c_in * c_out
    assert depthwise.total_params == c_in * n * n
    # output channels: C_out, C_out, C_in (same as input)
    assert [s.rows[-1].output_shape[-1] for s in (normal, pointwise, depthwise)] == [
        c_out,
        c_out,
        c_in,
    ]
    # cost formulas, SAME padding so H_out = W_out = hw
    assert normal.macs == n * n * c_in * c_out * hw * hw
    assert depthwise.macs == n * n * c_in * hw * hw
    assert separable.macs == (n * n * c_in + c_in * c_out) * hw * hw
    assert pointwise.macs == c_in * c_out * hw * hw
    # the separable layer is cheaper by 1/C_out + 1/N²
    assert separable.macs / normal.macs == pytest.approx(1 / c_out + 1 / n**2)


def test_spatial_separable_costs_6_instead_of_9_operations_per_output():
    x = jnp.zeros((1, 12, 12, 1))
    full = count(L.Conv(1, 3, use_bias=False), x)
    separable = count(L.SpatialSeparableConv(1, 3, use_bias=False), x)
    assert full.macs == 9 * 12 * 12 and separable.macs == 6 * 12 * 12
    assert full.total_params == 9 and separable.total_params == 6  # 3x3 vs 1x3 + 3x1


def test_sobel_kernel_factorises_into_column_and_row():
    k = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    f = L.factorize_rank1(k)
    assert f.exact
    np.testing.assert_allclose(np.outer(f.column, f.row), k, atol=1e-12)
    np.testing.assert_allclose(f.row, [1, 2, 1], atol=1e-12)  # K_horizontal
    np.testing.assert_allclose(f.column, [1, 0, -1], atol=1e-12)  # K_vertical


def test_one_by_one_conv_32x32x64_with_128_filters():
    s = count(L.PointwiseConv(128), jnp.zeros((1, 32, 32, 64)))
    assert s.rows[0].output_shape == (1, 32, 32, 128)  # spatial size kept, channels changed
    assert s.trainable_params == 64 * 128 + 128


def test_max_pool_f2_s2_halves_height_and_width_with_no_params():
    s = count(L.MaxPool(2, 2), jnp.zeros((1, 28, 28, 6)))
    assert s.rows[0].output_shape == (1, 14, 14, 6) and s.total_params == 0


def test_global_average_pool_collapses_7x7x1000_to_1000():
    y = L.GlobalAvgPool().apply({}, jax.random.normal(jax.random.key(0), (1, 7, 7, 1000)))
    assert y.shape == (1, 1000)
