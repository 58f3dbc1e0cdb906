"""Blocks: shapes, parameter counts by hand, shortcut semantics, plain twins, clear shape errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import assert_close

import cnnlab
from cnnlab import blocks as B
from cnnlab import models

IDENTITY = lambda x: x  # an activation that lets tests see the raw add


def params(block, x):
    return cnnlab.summary(block, x)


def init_apply(block, x, **kw):
    """Jitted: eagerly, every op of a block compiles on its own (a ShuffleUnit: seconds)."""
    v = jax.jit(block.init)(jax.random.key(0), x)
    return v, jax.jit(functools.partial(block.apply, **kw))(v, x)


def bn(c):  # trainable gamma + beta
    return 2 * c


def test_basic_block_counts_and_shapes():
    x = jnp.zeros((1, 8, 8, 16))
    s = params(B.BasicBlock(16), x)
    assert s.trainable_params == 2 * 9 * 16 * 16 + 2 * bn(16)
    assert s.non_trainable_params == 2 * bn(16)
    s = params(B.BasicBlock(32, 2, shortcut="projection"), x)
    assert s.trainable_params == 9 * 16 * 32 + 9 * 32 * 32 + 2 * bn(32) + 16 * 32 + bn(32)
    assert s.rows[-1].output_shape == (1, 4, 4, 32)
    s = params(B.BasicBlock(32, 2, shortcut="zero_pad"), x)  # option A adds no parameters
    assert s.trainable_params == 9 * 16 * 32 + 9 * 32 * 32 + 2 * bn(32)


def test_bottleneck_counts():
    x = jnp.zeros((1, 8, 8, 64))
    s = params(B.Bottleneck(64), x)  # ResNet-50 conv2_x first block: 64 -> 256 needs a projection
    convs = 64 * 64 + 9 * 64 * 64 + 64 * 256
    assert s.trainable_params == convs + bn(64) + bn(64) + bn(256) + 64 * 256 + bn(256)
    out = next(r for r in s.rows if r.path == "conv3").output_shape
    assert out == (1, 8, 8, 256)
    s = params(B.Bottleneck(64, strides=2), jnp.zeros((1, 8, 8, 256)))
    assert next(r for r in s.rows if r.path == "conv2").output_shape == (1, 4, 4, 64)  # v1.5


def test_skip_adds_exactly_the_identity(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 8)), jnp.float32)
    res, plain = B.BasicBlock(8, act=IDENTITY), B.BasicBlock(8, act=IDENTITY, skip=False)
    v, y = init_apply(res, x)
    assert jax.tree.structure(v) == jax.tree.structure(plain.init(jax.random.key(0), x))
    assert_close(y - plain.apply(v, x), np.asarray(x))


def test_option_a_subsamples_and_zero_pads(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 8)), jnp.float32)
    res = B.BasicBlock(16, 2, shortcut="zero_pad", act=IDENTITY)
    v, y = init_apply(res, x)
    diff = y - B.BasicBlock(16, 2, skip=False, act=IDENTITY).apply(v, x)
    expected = np.zeros((2, 3, 3, 16))
    expected[..., :8] = np.asarray(x)[:, ::2, ::2]
    assert_close(diff, expected)


def test_plain_twin_of_projection_block_has_no_projection():
    x = jnp.zeros((1, 8, 8, 16))
    res = params(B.BasicBlock(32, 2, shortcut="projection"), x)
    plain = params(B.BasicBlock(32, 2, skip=False), x)
    assert res.trainable_params - plain.trainable_params == 16 * 32 + bn(32)


def test_notes_mismatched_add_is_a_clear_error():
    """(30,30,64) + (30,30,32) cannot be added."""
    with pytest.raises(ValueError) as e:
        B.BasicBlock(32, shortcut="identity").init(jax.random.key(0), jnp.zeros((1, 30, 30, 64)))
    msg = str(e.value)
    assert "BasicBlock" in msg and "(30, 30, 64)" in msg and "(30, 30, 32)" in msg
    assert "shortcut='projection'" in msg


def test_stride_without_shape_changing_shortcut_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Bottleneck .*\(8, 8, 64\).*\(4, 4, 64\)"):
        B.Bottleneck(16, strides=2, shortcut="identity").init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 64))
        )
    with pytest.raises(ValueError, match="shortcut must be one of"):
        B.BasicBlock(32, 2, shortcut="B").init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)))


def test_inverted_residual_counts():
    x = jnp.zeros((1, 8, 8, 24))
    s = params(B.InvertedResidual(24, expansion=6), x)
    hidden = 24 * 6
    assert s.trainable_params == 24 * hidden + 9 * hidden + hidden * 24 + 2 * bn(hidden) + bn(24)
    s = params(B.InvertedResidual(16, expansion=1), jnp.zeros((1, 8, 8, 32)))  # no expand conv
    assert "expand" not in [r.path for r in s.rows]
    assert s.trainable_params == 9 * 32 + 32 * 16 + bn(32) + bn(16)
    # MBConv: squeeze-excite with int(C_in · 0.25) squeeze channels, 1x1 convs with bias
    s = params(B.InvertedResidual(24, se_ratio=0.25, kernel_size=5), x)
    se = 6
    assert s.trainable_params == (
        24 * hidden + 25 * hidden + hidden * 24 + 2 * bn(hidden) + bn(24)
        + hidden * se + se + se * hidden + hidden
    )  # fmt: skip


def test_inverted_residual_adds_only_at_stride_1_with_equal_channels(rng):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)), jnp.float32)
    for block, adds in [
        (B.InvertedResidual(16), True),
        (B.InvertedResidual(16, strides=2), False),
        (B.InvertedResidual(24), False),
    ]:
        v, y = init_apply(block, x)
        plain = block.clone(skip=False).apply(v, x)
        if adds:
            assert_close(y - plain, np.asarray(x))
        else:
            assert_close(y, np.asarray(plain))


def test_linear_bottleneck_has_no_activation_after_projection(rng):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)), jnp.float32)
    v, y = init_apply(B.InvertedResidual(24), x)
    assert float(y.min()) < 0  # linear projection keeps negatives
    y_relu = B.InvertedResidual(24, linear_bottleneck=False).apply(v, x)
    assert float(y_relu.min()) >= 0 and float(y_relu.max()) <= 6  # ReLU6 after projection


def test_squeeze_excite_gates_channels(rng):
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
    se = B.SqueezeExcite(2)
    v, y = init_apply(se, x)
    p = v["params"]
    s = np.asarray(x).mean(axis=(1, 2))  # (B, C)
    h = np.maximum(s @ np.asarray(p["reduce"]["kernel"])[0, 0] + np.asarray(p["reduce"]["bias"]), 0)
    g = h @ np.asarray(p["expand"]["kernel"])[0, 0] + np.asarray(p["expand"]["bias"])
    assert_close(y, np.asarray(x) / (1 + np.exp(-g))[:, None, None, :])


def test_mobilenet_v1_block_and_fire():
    s = params(B.DepthwiseSeparableBlock(64, 2), jnp.zeros((1, 8, 8, 32)))
    assert s.trainable_params == 9 * 32 + 32 * 64 + bn(32) + bn(64)
    assert s.rows[-1].output_shape == (1, 4, 4, 64)
    # SqueezeNet fire2: 96 -> squeeze 16 -> expand 64 + 64 = 11,920 parameters (paper table 1)
    s = params(B.Fire(16, 64, 64), jnp.zeros((1, 55, 55, 96)))
    assert s.trainable_params == 11920
    _, y = init_apply(B.Fire(16, 64, 64), jnp.ones((1, 5, 5, 96)))
    assert y.shape == (1, 5, 5, 128) and float(y.min()) >= 0


def test_shuffle_unit_shapes_and_groups():
    x = jnp.zeros((1, 8, 8, 240))
    s = params(B.ShuffleUnit(240, groups=3), x)
    gconv1 = next(r for r in s.rows if r.path == "gconv1")
    assert gconv1.trainable == 240 // 3 * 60  # grouped 1x1: each group sees C/g inputs
    _, y = init_apply(B.ShuffleUnit(240, groups=3), jnp.ones((1, 8, 8, 240)))
    assert y.shape == (1, 8, 8, 240)
    _, y = init_apply(B.ShuffleUnit(480, groups=3, strides=2), jnp.ones((1, 8, 8, 240)))
    assert y.shape == (1, 4, 4, 480)  # 240 pooled + 240 from the branch
    _, y = init_apply(B.ShuffleUnit(480, groups=3, strides=2, skip=False), jnp.ones((1, 8, 8, 240)))
    assert y.shape == (1, 4, 4, 480)
    with pytest.raises(ValueError, match=r"ShuffleUnit .*stride-1 unit needs features = C_in"):
        B.ShuffleUnit(120, groups=3).init(jax.random.key(0), x)


@pytest.mark.parametrize(
    "block",
    [
        B.BasicBlock(16, 2, shortcut="zero_pad"),
        B.Bottleneck(8, 2),
        B.InvertedResidual(16, se_ratio=0.25),
        B.DepthwiseSeparableBlock(16, 2),
        B.Fire(4, 8, 8),
        B.ShuffleUnit(24, groups=2, strides=2),
    ],
    ids=lambda b: type(b).__name__,
)
def test_blocks_train_mode_jit_and_finite_grads(rng, block):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 8)), jnp.float32)
    v = jax.jit(block.init)(jax.random.key(0), x)

    @jax.jit
    def loss_and_grad(params, x):
        def loss(p):
            y, upd = block.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
            return jnp.mean(y**2), upd

        return jax.value_and_grad(loss, has_aux=True)(params)

    (value, updates), grads = loss_and_grad(v["params"], x)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    if "batch_stats" in v:  # train mode updates the running statistics
        before, after = jax.tree.leaves(v["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_materialized_block_output_keeps_values_and_gradients(rng, monkeypatch):
    """The CPU optimization barrier on a residual block's output changes speed, not numbers."""
    from cnnlab.blocks import residual

    x = jnp.asarray(rng.standard_normal((2, 8, 8, 8)), jnp.float32)
    net = B.BasicBlock(16, strides=2)
    variables = net.init(jax.random.key(0), x)

    def loss_and_grads(v, x):
        def loss(params, x):
            y, _ = net.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.tanh(y) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(v["params"], x)

    hlo = jax.jit(loss_and_grads).lower(variables, x).as_text()
    assert ("opt-barrier" in hlo or "optimization_barrier" in hlo) == (
        jax.default_backend() == "cpu"
    )
    with_barrier = jax.jit(loss_and_grads)(variables, x)
    monkeypatch.setattr(residual, "materialize", lambda y: y)
    without = jax.jit(loss_and_grads)(variables, x)
    for a, b in zip(jax.tree.leaves(with_barrier), jax.tree.leaves(without), strict=True):
        assert_close(a, b, tol=1e-5)


@pytest.mark.parametrize(
    "block, c_in",
    [
        (B.BasicBlock(16, zero_init_residual=True), 16),
        (B.Bottleneck(4, zero_init_residual=True), 16),
        (B.InvertedResidual(16, expansion=6, zero_init_residual=True), 16),
        (B.ShuffleUnit(24, groups=3, zero_init_residual=True), 24),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v),
)
def test_zero_init_residual_makes_each_block_its_shortcut_at_init(rng, block, c_in):
    """Goyal et al. 2017: with the branch's last BN scale at 0 the residual branch outputs
    exactly zero, so the block is act(x) (x for the linear inverted residual)."""
    x = jnp.asarray(rng.normal(size=(2, 6, 6, c_in)), jnp.float32)
    variables = block.init(jax.random.key(1), x)
    expect = x if isinstance(block, B.InvertedResidual) else jax.nn.relu(x)
    for train in (False, True):
        y = block.apply(variables, x, train=train, mutable=["batch_stats"] if train else False)
        y = y[0] if train else y
        np.testing.assert_array_equal(np.asarray(y), np.asarray(expect))
    # the plain twin cannot use it: its branch keeps the default unit scale and computes
    plain = block.clone(skip=False)
    scales = [
        np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            plain.init(jax.random.key(1), x)["params"]
        )
        if path[-1].key == "scale"
    ]
    assert all((s == 1).all() for s in scales)


def test_zero_init_residual_reaches_every_block_of_the_models():
    x = jnp.zeros((1, 8, 8, 3))  # which blocks add their input does not depend on the size
    init = lambda m: jax.jit(m.init)(jax.random.key(0), x)  # jitted: eager init compiles per op
    v = init(models.create("resnet20", zero_init_residual=True))
    zeroed = [k for k, m in v["params"].items() if "norm2" in m and not m["norm2"]["scale"].any()]
    assert len(zeroed) == 9  # every basic block of ResNet-20
    v = init(models.create("mobilenet_v2", zero_init_residual=True))
    zeroed = [k for k, m in v["params"].items() if "project_norm" in m
              and not m["project_norm"]["scale"].any()]  # fmt: skip
    assert len(zeroed) == 10  # the inverted residuals that add their input (stride 1, C equal)
    with pytest.raises(ValueError, match=r"mobilenet_v1.*zero_init_residual=True means nothing"):
        net = models.create("generic", block="mobilenet_v1", zero_init_residual=True)
        jax.eval_shape(lambda: net.init(jax.random.key(0), x))
