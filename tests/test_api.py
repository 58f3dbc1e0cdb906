"""The API a notebook user touches: module imports, named models, shortcut errors, Keras ports."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab import models
from cnnlab.blocks import BasicBlock


def test_summary_is_a_module_and_a_function():
    S = importlib.import_module("cnnlab.summary")
    import cnnlab.summary as S2

    assert S is S2 and S.Summary is cnnlab.Summary and callable(S.layer_macs)
    x = jnp.zeros((1, 8, 8, 3))
    assert cnnlab.summary(L.Conv(4, 3), x).total_params == 3 * 3 * 3 * 4 + 4
    assert S.summary(L.Conv(4, 3), x).total_params == 112


def test_every_submodule_is_an_attribute_after_import_cnnlab():
    """docs/getting-started.md calls cnnlab.distributed.start() after `import cnnlab` (it raised
    AttributeError); a name that is no submodule is still an AttributeError."""
    import subprocess
    import sys

    code = "import cnnlab; print(cnnlab.distributed.start.__name__, cnnlab.data.load.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["start", "load"], out.stderr[-500:]
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        cnnlab.nosuch  # noqa: B018


def test_a_named_model_keeps_its_defining_fields():
    want = r"'resnet20' is defined by depth=20; depth=56 is another model: use its registered "
    with pytest.raises(ValueError, match=want + r"name or create\('cifar_resnet', depth=56\)"):
        models.create("resnet20", depth=56)
    with pytest.raises(ValueError, match=r"'plain56' is defined by skip=False"):
        models.create("plain56", skip=True)
    with pytest.raises(ValueError, match=r"'resnet50' is defined by block='bottleneck'"):
        models.create("resnet50", block="basic")
    assert models.create("resnet20", depth=20, skip=False).depth == 20  # same value, other field
    assert models.create("efficientnet_b0", dropout=0.0).dropout == 0.0  # not a defining field


def test_zero_pad_cannot_remove_channels_and_says_what_to_use():
    x = jnp.zeros((1, 8, 8, 64))
    with pytest.raises(ValueError, match=r"zero_pad' can only add channels, not go from 64 to 32; "
                       r"use shortcut='projection'"):  # fmt: skip
        BasicBlock(32, shortcut="zero_pad").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"'projection' \(the blocks' default\)"):
        BasicBlock(32, shortcut="identity").init(jax.random.key(0), x)
    v = BasicBlock(128, strides=2, shortcut="zero_pad").init(jax.random.key(0), x)
    assert "proj_conv" not in v["params"]  # option A adds channels without parameters


def test_arguments_after_strides_are_keyword_only():
    for layer in (L.Conv, L.SeparableConv, L.ConvTranspose, L.SpatialSeparableConv):
        with pytest.raises(TypeError):
            layer(8, 3, 1, "VALID")
    with pytest.raises(TypeError):  # Keras' DepthwiseConv2D(3, 1, 'valid', depth_multiplier=2)
        L.DepthwiseConv(3, 1, "VALID", 2)
    assert L.DepthwiseConv(3, 1, padding="VALID", depth_multiplier=2).depth_multiplier == 2


def test_from_keras_depthwise_matches_keras_semantics():
    """Keras DepthwiseConv2D: out[..., c·m + j] = sum over the window of x[..., c]·K[a, b, c, j],
    computed here by explicit patches (VALID, stride 1)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)  # Keras (kh, kw, C_in, m)
    want = np.zeros((2, 4, 3, 3, 2), np.float32)
    for a in range(3):
        for b in range(3):
            want += x[:, a : a + 4, b : b + 3, :, None] * k[a, b]
    layer = L.DepthwiseConv(3, padding="VALID", depth_multiplier=2, use_bias=False)
    got = layer.apply({"params": {"kernel": L.from_keras("DepthwiseConv2D", k)}}, x)
    np.testing.assert_allclose(np.asarray(got), want.reshape(2, 4, 3, 6), rtol=1e-5, atol=1e-5)


def test_from_keras_conv_transpose_matches_the_gradient_of_a_conv():
    """Keras Conv2DTranspose(filters=F) with kernel K (kh, kw, F, C_in) is the adjoint of a
    Conv2D whose kernel is K (HWIO with I = F, O = C_in): y = J^T x, taken here with jax.vjp."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)  # C_in = 3
    k = rng.normal(size=(3, 3, 5, 3)).astype(np.float32)  # Keras (kh, kw, F=5, C_in=3)

    def conv(y):
        return jax.lax.conv_general_dilated(y, k, (2, 2), "VALID", dimension_numbers=("NHWC",
                                            "HWIO", "NHWC"))  # fmt: skip

    _, vjp = jax.vjp(conv, jnp.zeros((1, 9, 9, 5)))  # (4 - 1)·2 + 3 = 9
    (want,) = vjp(jnp.asarray(x))
    layer = L.ConvTranspose(5, 3, 2, padding="VALID", use_bias=False)
    got = layer.apply({"params": {"kernel": L.from_keras("Conv2DTranspose", k)}}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kind must be one of"):
        L.from_keras("Conv1D", k)


def test_progress_off_a_terminal_prints_plain_lines_at_an_interval(monkeypatch):
    import io

    from cnnlab import progress

    log = io.StringIO()  # not a terminal
    clock = iter(range(0, 10_000, 7))  # 7 s per call of time.monotonic
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress.bar(total=20, desc="train resnet20", unit="step", file=log)
    assert isinstance(bar, progress.PlainProgress)
    for _ in range(20):
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 20 * 7 // 30 + 1  # every >= 30 s, + end
    assert lines[-1].startswith("train resnet20: 20/20 (100%) steps in ")
    assert lines[-1].endswith("step/s, loss=0.5")


def test_make_block_rejects_keywords_its_block_does_not_take():
    from cnnlab.models.common import make_block

    with pytest.raises(ValueError, match=r"block 'mobilenet_v1' takes no \['expansion'\]"):
        make_block("mobilenet_v1", "b", features=8, expansion=6)
    with pytest.raises(ValueError, match="has no shortcut, so skip=True means nothing"):
        make_block("mobilenet_v1", "b", features=8, skip=True)
    with pytest.raises(ValueError, match="no swappable k x k conv"):
        make_block("inverted", "b", features=8, conv=L.SeparableConv)
    assert make_block("inverted", "b", features=8, expansion=2).expansion == 2


def test_every_block_takes_its_norm_act_and_k_by_k_conv_as_fields():
    import dataclasses
    import functools

    import flax.linen as nn

    from cnnlab import blocks as B

    conv_field = {"BasicBlock": "conv", "Bottleneck": "conv", "Fire": "conv",
                  "InvertedResidual": "depthwise", "DepthwiseSeparableBlock": "depthwise",
                  "ShuffleUnit": "depthwise"}  # fmt: skip
    for name, field in conv_field.items():
        names = {f.name for f in dataclasses.fields(getattr(B, name))}
        assert {"act", field} <= names and ("norm" in names or name == "Fire"), name
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 24))
    relu6 = B.ShuffleUnit(24, act=nn.relu6)
    v = relu6.init(jax.random.key(1), x)
    assert (
        float(relu6.apply(v, 10 * x).max()) <= 6.0 < float(B.ShuffleUnit(24).apply(v, 10 * x).max())
    )
    xla = functools.partial(L.DepthwiseConv, impl="xla")
    a, b = B.DepthwiseSeparableBlock(16), B.DepthwiseSeparableBlock(16, depthwise=xla)
    v = a.init(jax.random.key(2), x)
    np.testing.assert_allclose(a.apply(v, x), b.apply(v, x), rtol=1e-5, atol=1e-5)
