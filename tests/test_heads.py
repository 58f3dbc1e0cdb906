"""Side heads: attach at any named tap by configuration, detach without touching the backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnlab
from cnnlab import models
from cnnlab.heads import strip_side_heads

X = jnp.ones((2, 32, 32, 3))


def init(m):
    return m.init(jax.random.key(0), X)


@pytest.mark.parametrize("head", ["linear", "googlenet"])
def test_side_heads_appear_per_tap_and_strip_cleanly(head):
    taps = ("stage1", "stage2_block2")
    m = models.create("resnet20", side_taps=taps, side_head=head)
    v = init(m)
    assert {k for k in v["params"] if k.startswith("side_")} == {f"side_{t}" for t in taps}
    logits, features = m.apply(v, X)
    assert set(features["side_logits"]) == set(taps)
    assert all(features["side_logits"][t].shape == (2, 10) for t in taps)
    # dropping the heads leaves exactly the backbone: same paths, same values, same logits
    bare = models.create("resnet20")
    v_bare = init(bare)
    stripped = strip_side_heads(v)
    assert jax.tree.structure(stripped) == jax.tree.structure(v_bare)
    jax.tree.map(np.testing.assert_array_equal, stripped, v_bare)
    bare_logits, bare_features = bare.apply(stripped, X)
    np.testing.assert_array_equal(bare_logits, logits)
    assert "side_logits" not in bare_features


def test_googlenet_head_layers_and_dropout():
    m = models.create("resnet20", side_taps=("stage2",), side_head="googlenet")
    s = cnnlab.summary(m, X)
    head = [r for r in s.rows if r.path.startswith("side_stage2/")]
    assert [r.kind for r in head] == ["AvgPool", "PointwiseConv", "Dense", "Dropout", "Dense"]
    conv = head[1]
    assert conv.trainable == 32 * 128 + 128  # 1x1 conv to 128 channels
    v = init(m)
    a = m.apply(v, X, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
    b = m.apply(v, X, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    sa, sb = a[0][1]["side_logits"]["stage2"], b[0][1]["side_logits"]["stage2"]
    assert not np.allclose(sa, sb)  # dropout 0.7 is active in training
    # at evaluation dropout is off: other dropout keys give the same side logits
    ea = m.apply(v, X, rngs={"dropout": jax.random.key(1)})[1]["side_logits"]["stage2"]
    eb = m.apply(v, X, rngs={"dropout": jax.random.key(2)})[1]["side_logits"]["stage2"]
    np.testing.assert_array_equal(ea, eb)


def test_unknown_tap_lists_the_available_ones():
    m = models.create("resnet20", side_taps=("stage9",))
    with pytest.raises(
        ValueError, match=r"no feature named \['stage9'\] .*available taps: \['stem'"
    ):
        init(m)
    with pytest.raises(ValueError, match="side_head must be one of"):
        init(models.create("resnet20", side_taps=("stage1",), side_head="tiny"))


@pytest.mark.parametrize(
    "name", ["mobilenet_v2", "efficientnet_b0", "lenet5_notes", "mini_xception"]
)
def test_side_heads_attach_to_other_families(name):
    taps = ("pool2",) if name.startswith("lenet") else ("stage2",)
    m = models.create(name, side_taps=taps)
    x = jnp.zeros((1, 32, 32, models.spec(name).input_shape[2]))
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), x))
    logits, features = jax.eval_shape(lambda v: m.apply(v, x), v)
    assert features["side_logits"][taps[0]].shape == logits.shape


def test_googlenet_head_sizes_at_resnet20_stage1():
    """Hand counts at a 32x32x16 tap, 10 classes. Paper sizes: 5x5/3 pool -> 10x10, 1x1 conv 128
    (16·128 + 128), FC 1024 (12,800·1024 + 1024), FC 10 (1024·10 + 10). Scaled: 8x8/8 pool ->
    4x4, conv 8 (16·8 + 8), FC 64 (128·64 + 64), FC 10 (64·10 + 10)."""
    x = jnp.zeros((1, 32, 32, 3))

    def side_params(head):
        net = models.create("resnet20", side_taps=("stage1",), side_head=head)
        v = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
        return sum(a.size for a in jax.tree.leaves(v["params"]["side_stage1"]))

    assert side_params("googlenet") == 2_176 + 13_108_224 + 10_250 == 13_120_650
    assert side_params("googlenet_scaled") == 136 + 8_256 + 650 == 9_042
