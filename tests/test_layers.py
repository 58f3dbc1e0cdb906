"""Every conv variant against an independent numpy reference (tests/reference.py)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from reference import assert_close, conv2d, conv_transpose2d, depthwise2d, same_pads

from cnnlab import layers as L

PADDINGS = ["SAME", "VALID", 1, ((2, 0), (1, 2))]


def pads_for(padding, hw, k, s, d):
    if padding == "SAME":
        return tuple(same_pads(n, k, s, d) for n in hw)
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding


def init_apply(layer, x):
    variables = layer.init(jax.random.key(1), x)
    return variables, layer.apply(variables, x)


@pytest.mark.parametrize(
    "k,s,d,padding,groups",
    [(3, 1, 1, p, 1) for p in PADDINGS]
    + [
        (3, 2, 1, "SAME", 1),
        (3, 2, 1, "VALID", 2),
        (3, 1, 2, "SAME", 2),
        (5, 2, 2, 1, 1),
        (2, 2, 1, "SAME", 4),
        (1, 1, 1, "VALID", 1),
    ],
)
def test_conv_matches_numpy(rng, k, s, d, padding, groups):
    x = rng.normal(size=(2, 9, 8, 4)).astype(np.float32)
    layer = L.Conv(8, k, strides=s, padding=padding, dilation=d, groups=groups)
    v, y = init_apply(layer, x)
    ref = conv2d(
        x, v["params"]["kernel"], (s, s), pads_for(padding, (9, 8), k, s, d), (d, d), groups
    )
    assert_close(y, ref + np.asarray(v["params"]["bias"]))
    # and the same op spelled directly through lax with string padding
    if isinstance(padding, str):
        direct = jax.lax.conv_general_dilated(
            x,
            v["params"]["kernel"],
            (s, s),
            padding,
            rhs_dilation=(d, d),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        assert_close(y, np.asarray(direct) + np.asarray(v["params"]["bias"]))


def test_flip_kernel_is_true_convolution(rng):
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    layer = L.Conv(3, 3, padding="VALID", flip_kernel=True, use_bias=False)
    v, y = init_apply(layer, x)
    w = np.asarray(v["params"]["kernel"])
    assert_close(y, conv2d(x, w[::-1, ::-1]))
    # true convolution by definition: out[i,j] = sum x[i + 2 - a, j + 2 - b] w[a, b]
    out = np.zeros((1, 4, 4, 3))
    for i, j, a, b in itertools.product(range(4), range(4), range(3), range(3)):
        out[0, i, j] += x[0, i + 2 - a, j + 2 - b] @ w[a, b]
    assert_close(y, out)


def test_pointwise_and_grouped(rng):
    x = rng.normal(size=(2, 5, 5, 6)).astype(np.float32)
    v, y = init_apply(L.PointwiseConv(4, strides=2), x)
    assert v["params"]["kernel"].shape == (1, 1, 6, 4)
    assert_close(y, conv2d(x, v["params"]["kernel"], (2, 2)) + np.asarray(v["params"]["bias"]))
    v, y = init_apply(L.GroupedConv(9, groups=3), x)
    assert v["params"]["kernel"].shape == (1, 1, 2, 9)
    assert_close(y, conv2d(x, v["params"]["kernel"], groups=3) + np.asarray(v["params"]["bias"]))
    with pytest.raises(ValueError, match="1x1"):
        L.PointwiseConv(4, kernel_size=3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        L.Conv(8, groups=4).init(jax.random.key(0), x)


DEPTHWISE_CASES = [
    (3, 1, 1, "SAME", 1),
    (3, 2, 1, "SAME", 2),
    (3, 1, 2, "VALID", 1),
    (5, 2, 1, 1, 3),
    (3, 2, 2, ((2, 0), (1, 2)), 1),
    (4, 3, 1, "SAME", 1),
]


@pytest.mark.parametrize("impl", ["xla", "shifted"])
@pytest.mark.parametrize("k,s,d,padding,m", DEPTHWISE_CASES)
def test_depthwise_matches_numpy(rng, impl, k, s, d, padding, m):
    x = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
    layer = L.DepthwiseConv(k, s, padding=padding, dilation=d, depth_multiplier=m, impl=impl)
    v, y = init_apply(layer, x)
    assert v["params"]["kernel"].shape == (k, k, 1, 3 * m)
    ref = depthwise2d(x, v["params"]["kernel"], (s, s), pads_for(padding, (9, 10), k, s, d), (d, d))
    assert_close(y, ref + np.asarray(v["params"]["bias"]))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_matmul_path_equals_xla_conv_in_value_and_gradient(rng, stride):
    """An unpadded 1x1 conv runs as a matmul; it must equal lax.conv_general_dilated exactly-ish."""
    x = jnp.asarray(rng.normal(size=(2, 7, 9, 5)), jnp.float32)
    layer = L.PointwiseConv(6, strides=stride)
    v = layer.init(jax.random.key(0), x)

    def direct(v, x):
        y = lax.conv_general_dilated(x, v["params"]["kernel"], (stride, stride), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        return y + v["params"]["bias"]

    loss = lambda f: jax.value_and_grad(lambda v, x: jnp.sum(jnp.sin(f(v, x))), (0, 1))
    (la, ga), (lb, gb) = loss(layer.apply)(v, x), loss(direct)(v, x)
    assert layer.apply(v, x).shape == (2, -(-7 // stride), -(-9 // stride), 6)
    assert_close(la, np.asarray(lb))
    jax.tree.map(lambda p, q: assert_close(p, np.asarray(q)), ga, gb)


@pytest.mark.parametrize("k,s,d,padding,m", DEPTHWISE_CASES)
def test_depthwise_impls_agree_in_value_and_gradient(rng, k, s, d, padding, m):
    """'shifted' has a hand-written kernel gradient (a loop over images); XLA's is the reference."""
    x = jnp.asarray(rng.normal(size=(3, 9, 10, 4)), jnp.float32)
    a, b = (
        L.DepthwiseConv(k, s, padding=padding, dilation=d, depth_multiplier=m, impl=i)
        for i in ("xla", "shifted")
    )
    v = a.init(jax.random.key(0), x)

    def loss(layer):
        return jax.jit(jax.value_and_grad(lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x))), (0, 1)))

    (la, (gva, gxa)), (lb, (gvb, gxb)) = loss(a)(v, x), loss(b)(v, x)
    assert_close(la, np.asarray(lb))
    assert_close(gxa, np.asarray(gxb))
    jax.tree.map(lambda p, q: assert_close(p, np.asarray(q)), gva, gvb)


def test_depthwise_shifted_bf16_kernel_gradient_accumulates_in_f32(rng):
    """bf16 compute sums the kernel gradient over 64 images in float32, not in bf16."""
    x = jnp.asarray(rng.normal(size=(64, 8, 8, 4)) + 1.0, jnp.float32)  # non-zero mean: big sums
    f32 = L.DepthwiseConv(3, use_bias=False, impl="shifted")
    v = f32.init(jax.random.key(0), x)

    def kernel_grad(layer):
        g = jax.grad(lambda v: jnp.sum(layer.apply(v, x).astype(jnp.float32)))(v)
        return np.asarray(g["params"]["kernel"], np.float64)

    ref, low = kernel_grad(f32), kernel_grad(f32.clone(dtype=jnp.bfloat16))
    # bf16 rounding of the inputs alone is ~0.4% relative; summing in bf16 would be far worse
    np.testing.assert_allclose(low, ref, rtol=1e-2)


def test_depthwise_auto_picks_per_backend(monkeypatch):
    from cnnlab.layers import depthwise

    monkeypatch.setattr(depthwise.jax, "default_backend", lambda: "cpu")
    assert depthwise.resolve_impl("auto") == "shifted"
    monkeypatch.setattr(depthwise.jax, "default_backend", lambda: "gpu")
    assert depthwise.resolve_impl("auto") == "xla"
    assert depthwise.resolve_impl("shifted") == "shifted"
    with pytest.raises(ValueError, match="one of"):
        depthwise.resolve_impl("fast")


@pytest.mark.parametrize("s,m,depthwise_bias", [(1, 1, False), (2, 2, True)])
def test_separable_is_depthwise_then_pointwise(rng, s, m, depthwise_bias):
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)
    layer = L.SeparableConv(5, 3, strides=s, depth_multiplier=m, depthwise_bias=depthwise_bias)
    v, y = init_apply(layer, x)
    p = v["params"]
    assert ("bias" in p["depthwise"]) == depthwise_bias
    mid = depthwise2d(x, p["depthwise"]["kernel"], (s, s), pads_for("SAME", (7, 7), 3, s, 1))
    if depthwise_bias:
        mid = mid + np.asarray(p["depthwise"]["bias"])
    ref = conv2d(mid, p["pointwise"]["kernel"]) + np.asarray(p["pointwise"]["bias"])
    assert_close(y, ref)


@pytest.mark.parametrize(
    "s,d,padding", [(1, 1, "SAME"), (2, 1, "VALID"), (2, 2, "SAME"), (1, 1, 2)]
)
def test_spatial_separable_equals_dense_rank1_product(rng, s, d, padding):
    x = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
    layer = L.SpatialSeparableConv(4, 3, strides=s, dilation=d, padding=padding, use_bias=False)
    v, y = init_apply(layer, x)
    col, row = v["params"]["column"]["kernel"], v["params"]["row"]["kernel"]  # (3,1,3,4), (1,3,4,4)
    # the equivalent dense kernel: K[a, b, i, o] = sum_m col[a, i, m] · row[b, m, o]
    dense = np.einsum("aim,bmo->abio", np.asarray(col)[:, 0], np.asarray(row)[0])
    assert_close(y, conv2d(x, dense, (s, s), pads_for(padding, (9, 9), 3, s, d), (d, d)))


def test_spatial_separable_reproduces_sobel(rng):
    """One channel: k x 1 then 1 x k with Sobel's factors equals the 3x3 Sobel correlation."""
    x = rng.normal(size=(1, 6, 6, 1)).astype(np.float32)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    f = L.factorize_rank1(sobel)
    params = {
        "column": {"kernel": jnp.asarray(f.column, jnp.float32).reshape(3, 1, 1, 1)},
        "row": {"kernel": jnp.asarray(f.row, jnp.float32).reshape(1, 3, 1, 1)},
    }
    y = L.SpatialSeparableConv(1, use_bias=False, padding="VALID").apply({"params": params}, x)
    assert_close(y, conv2d(x, sobel[:, :, None, None]))


def test_factorize_rank1():
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    f = L.factorize_rank1(sobel)
    assert f.exact and f.rank == 1 and f.error < 1e-12
    np.testing.assert_allclose(f.column, [1, 2, 1], atol=1e-12)
    np.testing.assert_allclose(f.row, [1, 0, -1], atol=1e-12)
    # the notes' orientation: K = [1 2 1; 0 0 0; -1 -2 -1] = [1, 0, -1]^T [1, 2, 1]
    f = L.factorize_rank1([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    np.testing.assert_allclose(f.column, [1, 0, -1], atol=1e-12)
    np.testing.assert_allclose(f.row, [1, 2, 1], atol=1e-12)
    # rank 2: best rank-1 fit, error = the second singular value (Eckart-Young)
    k = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    f = L.factorize_rank1(k)
    s = np.linalg.svd(k, compute_uv=False)
    assert not f.exact and f.rank == 3
    assert f.error == pytest.approx(np.sqrt(s[1] ** 2 + s[2] ** 2))
    with pytest.raises(ValueError, match="2-D"):
        L.factorize_rank1(np.ones((3, 3, 1)))


@pytest.mark.parametrize(
    "k,s,d,padding,expected_hw",
    [
        (3, 2, 1, "SAME", (10, 12)),
        (3, 2, 1, "VALID", (11, 13)),
        (2, 3, 1, "VALID", (15, 18)),
        (4, 2, 1, 1, (10, 12)),
        (3, 1, 2, "SAME", (5, 6)),
        (3, 2, 1, ((1, 0), (0, 1)), (10, 12)),
    ],
)
def test_conv_transpose_matches_scatter(rng, k, s, d, padding, expected_hw):
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    layer = L.ConvTranspose(4, k, s, padding=padding, dilation=d)
    v, y = init_apply(layer, x)
    assert y.shape[1:3] == expected_hw  # Keras / PyTorch output-size rules
    crops = layer._crops((5, 6))
    ref = conv_transpose2d(x, v["params"]["kernel"], (s, s), (d, d), crops)
    assert_close(y, ref + np.asarray(v["params"]["bias"]))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_transpose_is_adjoint_of_strided_conv(rng, padding):
    """<ConvT(y), z> = <y, Conv(z)> for the same kernel, strides and padding."""
    y = jnp.asarray(rng.normal(size=(1, 4, 4, 3)), jnp.float32)
    ct = L.ConvTranspose(2, 3, 2, padding=padding, use_bias=False)
    v = ct.init(jax.random.key(0), y)
    out = ct.apply(v, y)  # (1, H, W, 2)
    z = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    conv = L.Conv(3, 3, 2, padding=padding, use_bias=False)
    # Conv maps 2 -> 3 channels with kernel (3,3,2,3): the transposed kernel, I/O swapped
    cz = conv.apply({"params": {"kernel": jnp.swapaxes(v["params"]["kernel"], 2, 3)}}, z)
    assert cz.shape == y.shape
    assert float(jnp.vdot(out, z)) == pytest.approx(float(jnp.vdot(y, cz)), rel=1e-4)


def test_channel_shuffle_permutation():
    x = jnp.arange(12, dtype=jnp.float32).reshape(1, 1, 1, 12)
    y = np.asarray(L.ChannelShuffle(3).apply({}, x)).ravel()
    g, n = 3, 4
    expected = [j * n + i for i in range(n) for j in range(g)]  # output i·g + j <- input j·n + i
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="must divide"):
        L.ChannelShuffle(5).apply({}, x)


def test_pooling(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    ref_max = x.reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    assert_close(L.MaxPool(2).apply({}, x), ref_max)
    assert_close(L.AvgPool(2).apply({}, x), x.reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4)))
    assert_close(L.GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)))


@pytest.mark.parametrize(
    "layer",
    [
        L.Conv(4),
        L.DepthwiseConv(),
        L.SeparableConv(4),
        L.SpatialSeparableConv(4),
        L.ConvTranspose(4, strides=2),
        L.GroupedConv(4, groups=2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_jit_grad_and_dtypes(rng, layer):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    v = layer.init(jax.random.key(0), x)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x) ** 2)))(v)
    assert all(
        bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
        for g in jax.tree.leaves(grads)
    )
    # bf16 compute, f32 params
    low = layer.clone(dtype=jnp.bfloat16)
    assert low.apply(v, x).dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(low.init(jax.random.key(0), x)))


def test_bad_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects NHWC input .* got shape \(6, 6, 3\)"):
        L.Conv(4).init(jax.random.key(0), jnp.zeros((6, 6, 3)))


def test_group_norm_follows_its_group_rule_and_normalises_each_group():
    """Wu & He's 32 groups where the channels allow, at least 2 channels per group; each
    example's group (H, W, its channels) normalised to mean 0, variance 1 (numpy reference);
    LayerNorm is one group; 'none' is the identity and asks its conv for a bias."""
    assert [L.group_count(c) for c in (3, 4, 16, 24, 32, 64, 96, 256)] == [
        1, 2, 8, 12, 16, 32, 32, 32,
    ]  # fmt: skip
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 4, 4, 16)).astype(np.float32)

    def reference(groups):
        g = x.reshape(2, 4, 4, groups, 16 // groups)
        mean, var = g.mean((1, 2, 4), keepdims=True), g.var((1, 2, 4), keepdims=True)
        return ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)

    for kind, groups in (("group", 8), ("layer", 1)):
        norm = L.norm_layer(kind)(use_running_average=True)
        v = norm.init(jax.random.key(0), x)
        assert set(v) == {"params"}  # no running statistics
        assert jax.tree.map(jnp.shape, v["params"]) == {"scale": (16,), "bias": (16,)}
        np.testing.assert_allclose(norm.apply(v, x), reference(groups), rtol=1e-4, atol=1e-4)
    none = L.norm_layer("none")(use_running_average=True)
    assert none.init(jax.random.key(0), x) == {} and (none.apply({}, x) == x).all()
    assert L.conv_bias(L.norm_layer("none")) and not L.conv_bias(L.norm_layer("group"))
    with pytest.raises(ValueError, match="norm must be one of"):
        L.norm_layer("instance")
    with pytest.raises(ValueError, match="norm='none' has no scale to zero-initialise"):
        L.norm_layer("none")(use_running_average=True, scale_init=jax.nn.initializers.zeros)
