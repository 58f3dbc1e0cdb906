"""Model registry: published parameter counts and MACs; every model traced, run, differentiated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab import models

# Trainable parameters of the reference implementations (BatchNorm running stats excluded).
REFERENCE_PARAMS = {
    # CIFAR ResNets, option A, as counted by the reference PyTorch port of the paper's table 6
    # (0.27M, 0.46M, 0.66M, 0.85M, 1.7M in the paper)
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "cifar_resnet": 269_722,  # default depth 20
    # torchvision
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    # Keras MobileNet(alpha=1.0): 4,253,864 total of which 21,888 non-trainable
    "mobilenet_v1": 4_231_976,
    # LeCun's LeNet-5 with a fully connected C3: 156 + 2,416 + 48,120 + 10,164 + 850
    "lenet5": 61_706,
    # the notes' table: 608 + 3,216 + 48,120 + 10,164 + 850 (the course's table misprints the FC
    # counts as 48,001 / 10,081 / 841; 400·120 + 120 = 48,120)
    "lenet5_notes": 62_958,
    # Deep Learning with Python 9.3.5: 721,857 total, 3,008 of them BatchNorm statistics
    "mini_xception": 718_849,
}
# Models that are families or builders rather than a published network; plain twins are
# checked against their residual nets below.
NO_PUBLISHED_COUNT = {"generic"} | {f"plain{d}" for d in (20, 32, 44, 56, 110)}

# Conv + dense MACs (the papers' convention): torchvision's "GFLOPS" column (which are MACs).
REFERENCE_GMACS = {
    "resnet18": 1.81,
    "resnet34": 3.66,
    "resnet50": 4.09,
    "resnet101": 7.80,
    "resnet152": 11.51,
    "mobilenet_v2": 0.30,
    "efficientnet_b0": 0.39,
    "efficientnet_b1": 0.69,
}

# Full compile + run in the default suite costs seconds per model; these deep ones are `slow`
# (their blocks are compiled in test_blocks.py and every model is still traced abstractly here).
SLOW = {
    "resnet20", "plain20",  # the cifar_resnet code path, compiled here as `cifar_resnet`
    "resnet32",
    "resnet34",
    "resnet44", "resnet56", "resnet110", "plain32", "plain44", "plain56", "plain110",
    "resnet50", "resnet101", "resnet152", "mobilenet_v2",
    "mobilenet_v1", "mini_xception",  # depthwise-heavy: XLA:CPU's slow path, 18-22 s each
} | {f"efficientnet_b{i}" for i in range(8)}  # fmt: skip


def summary_of(name, **overrides):
    s = models.spec(name)
    return cnnlab.summary(models.create(name, **overrides), jnp.zeros((1, *s.input_shape)))


def test_every_model_has_a_reference_count_or_says_why_not():
    assert set(models.available()) == set(REFERENCE_PARAMS) | NO_PUBLISHED_COUNT


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(name):
    assert summary_of(name).trainable_params == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_GMACS))
def test_macs_match_torchvision(name):
    assert round(summary_of(name).conv_dense_macs / 1e9, 2) == REFERENCE_GMACS[name]


def test_non_trainable_counts_match_keras():
    assert summary_of("mobilenet_v1").non_trainable_params == 21_888
    assert summary_of("mobilenet_v2").non_trainable_params == 34_112
    # Keras EfficientNetB0 reports 42,023: its input Normalization layer holds 7 more
    assert summary_of("efficientnet_b0").non_trainable_params == 42_016
    assert summary_of("mini_xception").total_params == 721_857


@pytest.mark.parametrize(
    "width,mparams,mmacs", [(1.0, 4.2, 569), (0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41)]
)
def test_mobilenet_v1_width_multiplier_matches_paper_table_6(width, mparams, mmacs):
    s = summary_of("mobilenet_v1", width=width)
    assert round(s.trainable_params / 1e6, 1) == mparams
    assert abs(s.conv_dense_macs / 1e6 - mmacs) < 1  # the paper rounds to millions


@pytest.mark.parametrize(
    "width,mmacs", [(1.4, 582), (1.3, 509), (1.0, 300), (0.75, 209), (0.5, 97), (0.35, 59)]
)
def test_mobilenet_v2_width_multiplier_macs_match_reference_table(width, mmacs):
    """The MobileNetV2 reference (TF-slim) table of multiply-adds at 224x224."""
    assert abs(summary_of("mobilenet_v2", width=width).conv_dense_macs / 1e6 - mmacs) < 1


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    assert [models.make_divisible(32 * w) for w in (0.35, 0.5, 0.75, 1.0, 1.4)] == [
        16, 16, 24, 32, 48,
    ]  # fmt: skip
    s = summary_of("mobilenet_v2", width=1.4)
    widths = {r.output_shape[-1] for r in s.rows if r.kind in ("Conv", "PointwiseConv")}
    assert all(c % 8 == 0 for c in widths)
    head = next(r for r in s.rows if r.path == "head_conv")
    assert head.output_shape[-1] == 1792  # 1280 · 1.4, kept at 1280 for width <= 1
    assert (
        next(
            r for r in summary_of("mobilenet_v2", width=0.5).rows if r.path == "head_conv"
        ).output_shape[-1]
        == 1280
    )


@pytest.mark.parametrize("size", [96, 128, 160])
def test_mobilenets_take_any_resolution(size):
    for name in ("mobilenet_v1", "mobilenet_v2"):
        s = cnnlab.summary(models.create(name), jnp.zeros((1, size, size, 3)))
        assert s.trainable_params == REFERENCE_PARAMS[name]
        assert s.rows[-1].output_shape == (1, 1000)


def test_compound_scaling():
    depth, width, res = models.compound_scale(1)
    assert depth * width**2 * res**2 == pytest.approx(1.92, abs=0.01)  # α·β²·γ² ≈ 2
    b0 = summary_of("efficientnet_b0")
    n_blocks = len({r.path.split("/")[0] for r in b0.rows if r.path.startswith("stage")})
    assert n_blocks == 16  # 1 + 2 + 2 + 3 + 3 + 4 + 1
    b3 = summary_of("efficientnet_b3")  # depth 1.4: ceil(1.4 n) blocks per stage
    assert len({r.path.split("/")[0] for r in b3.rows if r.path.startswith("stage")}) == sum(
        int(np.ceil(1.4 * n)) for n in (1, 2, 2, 3, 3, 4, 1)
    )


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_has_exactly_the_option_a_parameter_count(depth):
    res, plain = summary_of(f"resnet{depth}"), summary_of(f"plain{depth}")
    assert plain.total_params == res.total_params
    assert [r.path for r in plain.rows] == [r.path for r in res.rows]


def test_cifar_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match=r"depth=21 is not 6n\+2 for block='basic'; use one of 8"):
        summary_of("cifar_resnet", depth=21)
    assert summary_of("cifar_resnet", depth=8).trainable_params < REFERENCE_PARAMS["resnet20"]
    s = summary_of("cifar_resnet", depth=29, block="bottleneck")  # 9n+2
    assert s.rows[-1].output_shape == (1, 10)


def test_lenet_notes_activation_sizes_shrink_gradually():
    m = models.create("lenet5_notes")
    x = jnp.zeros((1, 32, 32, 3))
    (logits, features) = m.apply(m.init(jax.random.key(0), x), x)
    sizes = [int(np.prod(features[k].shape[1:])) for k in ("conv1", "pool1", "conv2", "pool2")]
    sizes += [features["fc1"].shape[-1], features["fc2"].shape[-1], logits.shape[-1]]
    assert [3072, *sizes] == [3072, 6272, 1568, 1600, 400, 120, 84, 10]


def test_mini_xception_is_conv_then_separable_with_one_sigmoid_logit():
    s = summary_of("mini_xception")
    assert s.rows[0].kind == "Conv"  # regular conv on correlated RGB channels
    assert {r.kind for r in s.rows if "sep" in r.path} == {"DepthwiseConv", "PointwiseConv"}
    assert s.rows[-1].output_shape == (1, 1)
    assert "Dropout" in {r.kind for r in s.rows}


def test_generic_builder_reproduces_cifar_resnet_and_swaps_parts():
    assert (
        summary_of("generic", stage_sizes=(3, 3, 3), shortcut="zero_pad").trainable_params
        == REFERENCE_PARAMS["resnet20"]
    )
    sep = summary_of("generic", conv="separable", skip=False)
    assert "DepthwiseConv" in sep.macs_by_kind()
    inv = summary_of("generic", block="inverted", block_kwargs={"expansion": 4})
    assert "InvertedResidual" not in {r.kind for r in inv.rows}  # rows are leaf layers
    assert any(r.path == "stage2_block1/expand" for r in inv.rows)
    with pytest.raises(ValueError, match="no shortcut, so skip=False"):
        summary_of("generic", block="mobilenet_v1", skip=False)
    with pytest.raises(ValueError, match="conv must be one of"):
        summary_of("generic", conv="hexagonal")


# (model, base settings, a change its family declares unread); each built both ways must be the
# same net: same parameters from one key, same outputs in training (drop path draws included)
UNREAD_CASES = [
    ("cifar_resnet", dict(depth=8, skip=False), dict(zero_init_residual=True)),
    ("cifar_resnet", dict(depth=8, skip=False), dict(drop_path_rate=0.3, shortcut="projection")),
    ("generic", dict(stage_sizes=(1, 1, 1), block="inverted"), dict(shortcut="zero_pad")),
    ("lenet5", dict(), dict(side_head="conv")),
    pytest.param(
        "mobilenet_v2",
        dict(skip=False, width=0.35),
        dict(zero_init_residual=True),
        marks=pytest.mark.slow,
    ),  # 11 s: the full tier
]


@pytest.mark.parametrize("name,base,change", UNREAD_CASES)
def test_fields_a_family_declares_unread_change_nothing(name, base, change):
    assert set(change) <= models.unread(name, {**base, **change})
    size = 32 if name != "mobilenet_v2" else 64
    x = jax.random.normal(jax.random.key(0), (2, size, size, models.spec(name).input_shape[2]))
    outs = []
    for kwargs in (base, {**base, **change}):
        model = models.create(name, **kwargs)
        v = model.init(jax.random.key(1), x)
        (logits, _), _ = model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
        )
        outs.append((v, logits))
    assert jax.tree.structure(outs[0][0]) == jax.tree.structure(outs[1][0])
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, outs[0][0], outs[1][0])))
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_unread_fields_are_only_those_a_configuration_ignores():
    """A field the net reads is never declared unread (a residual net's zero-init, side heads'
    kind with side taps, a basic block's shortcut), and families without rules declare none."""
    assert models.unread("resnet20", {}) == {"side_head", "side_hint"}
    assert models.unread("resnet20", {"side_taps": ("stage1",)}) == set()
    assert models.unread("plain20", {"side_taps": ("stage1",)}) == {
        "shortcut", "zero_init_residual", "drop_path_rate"}  # fmt: skip
    assert "shortcut" not in models.unread("generic", {"block": "bottleneck"})
    assert models.unread("mini_xception", {"skip": False, "side_taps": ("stage1",)}) == set()


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'resnet21'; available: cifar_resnet"):
        models.create("resnet21")
    with pytest.raises(ValueError, match=r"model 'resnet20' has no field \['dept'\]; allowed:"):
        models.create("resnet20", dept=56)
    with pytest.raises(ValueError, match="expects NHWC images"):
        models.create("resnet20").init(jax.random.key(0), jnp.zeros((32, 32, 3)))


TAPS = ("stem", "stage1", "pre_logits")


# EfficientNet-B2..B7 repeat B0/B1's blocks at more depth: their tracing (3-6 s each) is in
# the full tier; their parameter counts (test_parameter_count_matches_reference) trace them here.
DEEP_TRACES = {f"efficientnet_b{i}" for i in range(2, 8)}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP_TRACES else n
             for n in models.available()]
)  # fmt: skip
def test_every_model_traces_in_train_and_eval(name):
    """Abstract (no compile): init, eval and train forward; gradients are compiled below."""
    m, hw = models.create(name), models.spec(name).input_shape
    x = jnp.zeros((2, 32, 32, hw[2]))
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), x))
    logits, features = jax.eval_shape(lambda v: m.apply(v, x), v)
    assert logits.shape == (2, m.num_classes)
    named = ("conv1", "pool2", "fc2") if name.startswith("lenet") else ("stem", "stage1")
    assert all(t in features for t in (*named, "pre_logits"))
    (logits, _), updates = jax.eval_shape(
        lambda v: m.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}
        ),
        v,
    )
    assert logits.shape == (2, m.num_classes)
    assert jax.tree.structure(updates.get("batch_stats", {})) == jax.tree.structure(
        v.get("batch_stats", {})
    )


# EfficientNet-B2..B7 are B0/B1's blocks at more depth and width: compiling each took 75-150 s
# on 2 cores (850 s for the family, a third of the full tier), for no code path B0 and B1 do not
# compile. They are traced (test_every_model_traces_in_train_and_eval) and counted
# (test_parameter_count_matches_reference), not compiled.
NOT_COMPILED = {f"efficientnet_b{i}" for i in range(2, 8)}


def _compiled_params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
            for n in models.available() if n not in NOT_COMPILED]  # fmt: skip


@pytest.mark.parametrize("name", _compiled_params())
def test_every_model_jits_runs_and_has_finite_gradients(name):
    m, hw = models.create(name), models.spec(name).input_shape
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, hw[2]))
    v = jax.jit(lambda x: m.init(jax.random.key(0), x))(x)

    @jax.jit
    def step(v, x):
        def loss(p):
            (y, _), _ = m.apply(
                {**v, "params": p},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(1)},
            )
            return jnp.mean(y**2), y

        (value, y_train), grads = jax.value_and_grad(loss, has_aux=True)(v["params"])
        y_eval, _ = m.apply(v, x, train=False)
        return value, grads, y_train, y_eval

    value, grads, y_train, y_eval = step(v, x)
    assert y_train.shape == y_eval.shape == (2, m.num_classes)
    assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(y_eval)))
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) > 0 for g in leaves) > len(leaves) // 2


def test_resnet20_macs_by_hand():
    """Every conv of a stage costs 9·C_in·C_out·H·W; the strided first convs halve H, W."""
    hand = (
        9 * 3 * 16 * 32 * 32  # stem
        + 6 * 9 * 16 * 16 * 32 * 32  # stage 1: 6 convs at 32x32
        + 9 * 16 * 32 * 16 * 16 + 5 * 9 * 32 * 32 * 16 * 16  # stage 2 at 16x16
        + 9 * 32 * 64 * 8 * 8 + 5 * 9 * 64 * 64 * 8 * 8  # stage 3 at 8x8
        + 64 * 10  # classifier
    )  # fmt: skip
    assert summary_of("resnet20").conv_dense_macs == hand == 40_551_040


def test_every_norm_kind_has_the_hand_counted_parameters():
    """ResNet-20 has 19 norm layers (the stem's and two per block) over 16 + 6·16 + 6·32 + 6·64
    = 688 channels: BatchNorm brings 2·688 trainable parameters and 2·688 statistics, GroupNorm
    and LayerNorm the same 2·688 trainable and no statistics; 'none' drops them and gives each
    of the 19 convs before a norm a bias instead (688)."""
    counts = {}
    for norm in L.NORMS:
        m = models.create("resnet20", norm=norm)
        v = jax.eval_shape(lambda m=m: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
        size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
        counts[norm] = (size(v["params"]), size(v.get("batch_stats", {})))
    convs_and_head = 269_722 - 2 * 688  # the paper's 0.27M: test_parameter_count_matches_...
    assert counts == {
        "batch": (convs_and_head + 2 * 688, 2 * 688),
        "group": (convs_and_head + 2 * 688, 0),
        "layer": (convs_and_head + 2 * 688, 0),
        "none": (convs_and_head + 688, 0),
    }


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1", "mobilenet_v2", "efficientnet_b0",
                                  "generic", "mini_xception"])  # fmt: skip
def test_every_family_with_batchnorm_takes_the_other_norms(name):
    """No BatchNorm statistics left with group norm, and with 'none' no norm parameters at all."""
    shape = models.spec(name).input_shape
    for norm, leftover in (("group", "norm"), ("none", "norm")):
        m = models.create(name, norm=norm)
        v = jax.eval_shape(lambda m=m: m.init(jax.random.key(0), jnp.zeros((1, *shape))))
        assert "batch_stats" not in v, (name, norm)
        paths = ["/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(v)[0]]
        names = [p for p in paths if leftover in p.split("/")[-2]]
        assert bool(names) == (norm != "none"), (name, norm, names[:3])


def test_he_init_is_torchvision_kaiming_normal_fan_out():
    """conv_init='he': conv kernels from an untruncated normal with variance 2/fan_out, fan_out =
    k·k·C_out (torchvision's kaiming_normal_(mode='fan_out')); 'lecun' is flax's truncated
    normal with variance 1/fan_in, cut at 2 of the untruncated normal's standard deviations
    (that normal's std is the truncated one's / 0.8796)."""
    x = jnp.zeros((1, 32, 32, 3))
    for init, std, cut in (("he", np.sqrt(2 / (3 * 3 * 64)), False),
                           ("lecun", np.sqrt(1 / (3 * 3 * 64)), True)):  # fmt: skip
        m = models.create("resnet20", conv_init=init)
        kernel = np.asarray(jax.jit(m.init)(jax.random.key(0), x)["params"]["stage3_block2"][
            "conv1"]["kernel"])  # fmt: skip
        assert kernel.shape == (3, 3, 64, 64)
        assert kernel.std() == pytest.approx(std, rel=0.03), init
        assert (np.abs(kernel).max() <= 2 * std / 0.87962566 * 1.001) == cut, init  # 36,864
    # the default where the paper states it (the ResNets), flax's elsewhere
    assert {n: models.defaults(n)["conv_init"] for n in ("resnet20", "resnet50", "mobilenet_v2",
            "generic")} == {"resnet20": "he", "resnet50": "he", "mobilenet_v2": "lecun",
                            "generic": "lecun"}  # fmt: skip
    with pytest.raises(ValueError, match="conv_init must be one of"):
        models.create("resnet20", conv_init="xavier").init(jax.random.key(0), x)
