"""Training pieces in-process: losses, side-loss schedules, the steps, optimisers, checkpoints."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import models, train
from cnnlab.heads import strip_side_heads
from cnnlab.train.losses import (
    cross_entropy,
    distillation,
    hint_loss,
    side_loss,
    side_weight,
    squared_hinge,
)

X = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
Y = jnp.array([0, 1, 2, 3, 4, 5])


def log_softmax_np(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_label_smoothing_and_binary():
    logits = jax.random.normal(jax.random.key(1), (4, 5))
    labels = jnp.array([0, 3, 1, 4])
    lp = log_softmax_np(logits)
    plain = -lp[np.arange(4), labels]
    np.testing.assert_allclose(cross_entropy(logits, labels), plain, rtol=1e-5)
    smooth = (1 - 0.1) * plain + 0.1 * (-lp.mean(-1))
    np.testing.assert_allclose(cross_entropy(logits, labels, 0.1), smooth, rtol=1e-5)
    z = jnp.array([[2.0], [-1.0]])
    bce = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))]  # labels 1 and 0
    np.testing.assert_allclose(cross_entropy(z, jnp.array([1, 0])), bce, rtol=1e-5)


def test_side_weight_schedules():
    assert float(side_weight("constant", 0.3, 500, 1000)) == pytest.approx(0.3)
    assert [float(side_weight("linear", 0.3, s, 1000)) for s in (0, 500, 1000, 2000)] == (
        pytest.approx([0.3, 0.15, 0.0, 0.0])
    )
    assert float(side_weight("threshold", 0.3, 0, 10, side_loss=0.5, gamma=0.4)) == pytest.approx(
        0.3
    )
    assert float(side_weight("threshold", 0.3, 0, 10, side_loss=0.3, gamma=0.4)) == 0.0
    assert float(side_weight("drop", 0.3, 99, 10, drop_step=100)) == pytest.approx(0.3)
    assert float(side_weight("drop", 0.3, 100, 10, drop_step=100)) == 0.0
    with pytest.raises(ValueError, match="side schedule must be one of"):
        side_weight("cosine", 0.3, 0, 10)


def test_side_loss_kinds_against_hand_computation():
    """Each side-loss kind on a two-example batch, computed by hand."""
    # DSN's squared hinge, one-vs-rest: t = +1 for the label, -1 elsewhere
    z = jnp.array([[2.0, -0.5, 0.3], [0.0, 0.0, 0.0]])
    # [0 + (1 - 0.5)^2 + (1 + 0.3)^2, 3 x 1^2]
    np.testing.assert_allclose(squared_hinge(z, jnp.array([0, 2])), [1.94, 3.0], rtol=1e-6)
    one = jnp.array([[0.5], [0.5]])  # one logit: t = +1 for label 1, -1 for label 0
    np.testing.assert_allclose(squared_hinge(one, jnp.array([1, 0])), [0.25, 2.25], rtol=1e-6)
    # BYOT at T = 2: teacher logits (0, 2 ln 3) soften to (1/4, 3/4); the student's (0, 0) to
    # (1/2, 1/2); KL = 1/4 ln(1/2) + 3/4 ln(3/2), times T^2 = 4
    teacher, student = jnp.array([[0.0, 2 * np.log(3)]]), jnp.zeros((1, 2))
    kl = 4 * (0.25 * np.log(0.5) + 0.75 * np.log(1.5))
    np.testing.assert_allclose(distillation(student, teacher, 2.0), [kl], rtol=1e-5)
    # the same distributions as one sigmoid logit each: sigmoid(2 ln 3 / 2) = 3/4
    np.testing.assert_allclose(
        distillation(jnp.zeros((1, 1)), jnp.array([[2 * np.log(3)]]), 2.0), [kl], rtol=1e-5
    )
    # (1 - alpha) CE + alpha T^2 KL, CE of (1/2, 1/2) at label 1 = ln 2
    got = side_loss(
        "distill", student, jnp.array([1]), final_logits=teacher, alpha=0.3, temperature=2.0
    )
    np.testing.assert_allclose(got, [0.7 * np.log(2) + 0.3 * kl], rtol=1e-5)
    np.testing.assert_allclose(side_loss("ce", student, jnp.array([1])), [np.log(2)], rtol=1e-6)
    # the hint: squared L2 distance per example, (1-0)^2 + (2-0)^2 and (0-1)^2 + (0-1)^2
    h, t = jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(hint_loss(h, t), [5.0, 2.0], rtol=1e-6)
    # mmrazor's L2Loss(normalize=False), as its code computes it: sum((s - t)^2) over the whole
    # batch / batch size, times loss_weight 1.0 (its `mult` only scales normalised features):
    # (5 + 2) / 2 = 3.5, the batch mean of hint_loss, which the train step weighs by side_hint
    assert float(np.sum((np.asarray(h) - np.asarray(t)) ** 2) / 2) == 3.5
    assert float(jnp.mean(hint_loss(h, t))) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="side loss must be one of"):
        side_loss("kd", student, jnp.array([1]))


def test_distillation_sends_no_gradient_into_its_teachers():
    """d/d(teacher) of the KL and hint terms is 0; d/d(student) is not."""
    teacher, student = jnp.array([[0.0, 2 * np.log(3)]]), jnp.array([[0.5, -0.5]])
    g_student, g_teacher = jax.grad(lambda s, f: distillation(s, f, 2.0).sum(), (0, 1))(
        student, teacher
    )
    assert float(jnp.abs(g_teacher).max()) == 0.0 and float(jnp.abs(g_student).max()) > 0.1
    h, t = jnp.ones((2, 3)), jnp.zeros((2, 3))
    g_hint, g_target = jax.grad(lambda a, b: hint_loss(a, b).sum(), (0, 1))(h, t)
    assert float(jnp.abs(g_target).max()) == 0.0
    np.testing.assert_allclose(g_hint, 2 * (h - t))


def make_state(model, tx=None):
    v = jax.jit(model.init)(jax.random.key(0), X)  # eager init compiles op by op: slow
    return train.TrainState.create(model.apply, v, tx or optax.sgd(0.1))


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_train_step_loss_is_final_plus_weighted_side_losses(schedule):
    model = models.create("cifar_resnet", depth=8, side_taps=("stage1", "stage2"))
    state = make_state(model)
    state = state.replace(step=state.step + 1)  # at step 1 of 4 the linear weight is 0.3 * 3/4
    cfg = train.StepConfig(
        total_steps=4, side_weight=0.3, side_schedule=schedule, layer_grad_norms=True
    )
    new, m = jax.jit(functools.partial(train.train_step, cfg=cfg))(
        state, {"image": X, "label": Y}, jax.random.key(2)
    )
    # independent recomputation in train mode, numpy cross-entropy
    (logits, feats), _ = jax.jit(
        functools.partial(model.apply, train=True, mutable=["batch_stats"])
    )({"params": state.params, "batch_stats": state.batch_stats}, X)
    ce = lambda z: float(-log_softmax_np(z)[np.arange(6), np.asarray(Y)].mean())
    w = 0.3 if schedule == "constant" else 0.3 * (1 - 1 / 4)
    expected = ce(logits) + w * (
        ce(feats["side_logits"]["stage1"]) + ce(feats["side_logits"]["stage2"])
    )
    assert float(m["total_loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(m["side/stage1/loss"]) == pytest.approx(
        ce(feats["side_logits"]["stage1"]), rel=1e-5
    )
    assert int(new.step) == 2
    # per-layer gradient norms in sorted path order, side heads excluded: 7 convs + the head
    from cnnlab.train.diagnostics import kernels

    paths = [p for p, _ in kernels(state.params)]
    assert paths == sorted(paths) and len(paths) == 8 and "side_stage1" not in str(paths)
    assert m["layer_grad_norms"].shape == (8,) and bool((m["layer_grad_norms"] > 0).all())
    _, plain = jax.eval_shape(functools.partial(train.train_step, cfg=train.StepConfig(
        total_steps=4)), state, {"image": X, "label": Y}, jax.random.key(2))  # fmt: skip
    assert "layer_grad_norms" not in plain  # only when a diagnostic asks (traced, not run)
    assert not np.allclose(new.params["head"]["kernel"], state.params["head"]["kernel"])
    assert not np.allclose(
        new.batch_stats["stem_norm"]["mean"], state.batch_stats["stem_norm"]["mean"]
    )


def test_train_step_with_distilling_and_hinge_side_heads():
    """The total loss of each side-loss kind recomputed in numpy from the model's outputs; the
    final head's gradient is the same with or without distillation (the side terms treat it as a
    fixed teacher), and the hint adapters are side variables that strip_side_heads removes."""
    model = models.create("cifar_resnet", depth=8, side_taps=("stage1",), side_hint="pre_logits")
    state = make_state(model)
    assert set(state.params) >= {"side_stage1", "side_stage1_hint"}
    assert "side_stage1_hint" not in strip_side_heads({"params": state.params})["params"]
    (logits, feats), _ = jax.jit(
        functools.partial(model.apply, train=True, mutable=["batch_stats"])
    )({"params": state.params, "batch_stats": state.batch_stats}, X)
    side = np.asarray(feats["side_logits"]["stage1"], np.float64)
    y = np.asarray(Y)
    ce = lambda z: -log_softmax_np(z)[np.arange(6), y]
    soft = lambda z: np.exp(log_softmax_np(np.asarray(z, np.float64) / 3.0))
    kl = 9 * (soft(logits) * (np.log(soft(logits)) - np.log(soft(side)))).sum(-1)
    hint = (np.asarray(feats["side_hints"]["stage1"]) - np.asarray(feats["pre_logits"])) ** 2
    distill = 0.7 * ce(side) + 0.3 * kl + 0.03 * hint.sum(-1)
    signs = 2 * np.eye(10)[y] - 1
    hinge = (np.maximum(0, 1 - signs * side) ** 2).sum(-1)
    batch, grads = {"image": X, "label": Y}, {}
    for kind, term in (("distill", distill), ("hinge", hinge), ("ce", ce(side))):
        cfg = train.StepConfig(side_weight=0.5, side_loss=kind, side_alpha=0.3,
                               side_temperature=3.0, side_hint=0.03)  # fmt: skip
        _, m = jax.jit(functools.partial(train.train_step, cfg=cfg))(
            state, batch, jax.random.key(2)
        )
        expected = ce(logits).mean() + 0.5 * term.mean()
        assert float(m["total_loss"]) == pytest.approx(expected, rel=1e-4), kind
        assert ("side/stage1/hint" in m) == (kind == "distill")

        def loss(params, cfg=cfg):
            variables = {"params": params, "batch_stats": state.batch_stats}
            (lg, ft), _ = model.apply(variables, X, train=True, mutable=["batch_stats"])
            return train.step._losses(lg, ft, Y, cfg, 0)[0]

        grads[kind] = jax.jit(jax.grad(loss))(state.params)
    np.testing.assert_allclose(
        grads["distill"]["head"]["kernel"], grads["ce"]["head"]["kernel"], rtol=1e-5, atol=1e-7
    )
    assert float(jnp.abs(grads["distill"]["side_stage1_hint"]["fc"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["ce"]["side_stage1_hint"]["fc"]["kernel"]).max()) == 0


def test_eval_step_uses_running_stats_and_ignores_padding():
    model = models.create("cifar_resnet", depth=8, side_taps=("stage1",))
    state = make_state(model)
    cfg = train.StepConfig()
    ev = jax.jit(functools.partial(train.eval_step, cfg=cfg))
    mask = jnp.array([1, 1, 1, 1, 0, 0], jnp.float32)
    full = ev(state, {"image": X, "label": Y, "mask": mask})
    garbage = X.at[4:].set(100.0)  # padding rows must not matter
    other = ev(state, {"image": garbage, "label": Y, "mask": mask})
    assert float(full["count"]) == 4
    for k in ("loss", "accuracy", "side/stage1/loss", "side/stage1/accuracy"):
        assert float(full[k]) == pytest.approx(float(other[k]), rel=1e-6)


def test_mixed_precision_keeps_f32_params():
    model = models.create("cifar_resnet", depth=8)
    state = make_state(model)
    batch = {"image": X, "label": Y}
    step = lambda dtype: jax.jit(
        functools.partial(train.train_step, cfg=train.StepConfig(compute_dtype=dtype))
    )(state, batch, jax.random.key(0))
    (_, m32), (s16, m16) = step("float32"), step("bfloat16")
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(s16.params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(s16.batch_stats))

    # the convolutions really run in bf16 (an f32-only path would have no bf16 conv)...
    def convs(dtype):
        cfg = train.StepConfig(compute_dtype=dtype)
        fn = functools.partial(train.train_step, cfg=cfg)
        text = str(jax.make_jaxpr(fn)(state, batch, jax.random.key(0)))
        return [line for line in text.splitlines() if "conv_general_dilated" in line]

    assert convs("bfloat16") and any("bf16[" in line for line in convs("bfloat16"))
    assert convs("float32") and not any("bf16[" in line for line in convs("float32"))
    # ...so the loss moves off f32's by bf16 rounding, but stays close to it
    assert float(m16["loss"]) != float(m32["loss"])
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=0.05)


def optim_config(**kw) -> train.OptimSpec:
    """base.py's optimiser with the ResNet paper's step schedule and no warm-up, then `kw`."""
    from experiments.configs import base

    c = base.get_config().optim
    c.update({"schedule": "step", "warmup_steps": 0, **kw})
    return train.OptimSpec.of(c)


def test_resnet_step_schedule_and_weight_decay_mask():
    tx, sched = train.make_optimizer(optim_config(), 64000)
    assert [float(sched(s)) for s in (0, 31999, 32000, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.001]
    )
    _, cos = train.make_optimizer(optim_config(schedule="cosine", warmup_steps=10), 110)
    assert float(cos(0)) == 0.0 and float(cos(10)) == pytest.approx(0.1)
    assert float(cos(110)) == pytest.approx(0.0, abs=1e-6)
    # decoupled decay only on kernels: with zero gradients, kernels shrink, biases do not
    tx, _ = train.make_optimizer(
        optim_config(optimizer="adamw", schedule="constant", weight_decay=0.5), 10
    )
    params = {"dense": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}}
    upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(upd["dense"]["kernel"][0]) < 0 and float(upd["dense"]["bias"][0]) == 0


def test_checkpointer_keeps_last_n_and_best(tmp_path):
    ckpt = train.Checkpointer(tmp_path / "c", keep=2, best_metric="accuracy")
    state = {"w": jnp.arange(3.0)}
    for step, acc in enumerate([0.9, 0.1, 0.2, 0.3, 0.4, 0.5], start=1):
        ckpt.save(
            step,
            jax.tree.map(lambda x, s=step: x + s, state),
            None,
            {"s": step},
            metrics={"accuracy": acc},
        )
    ckpt.close()
    kept = sorted(int(p.name) for p in (tmp_path / "c").iterdir() if p.name.isdigit())
    assert kept == [1, 5, 6]
    ckpt = train.Checkpointer(tmp_path / "c", keep=2)
    assert ckpt.best_step() == 1 and ckpt.latest_step() == 6
    restored, meta = ckpt.restore(6, state)
    np.testing.assert_array_equal(restored["w"], np.arange(3.0) + 6)
    assert meta == {"s": 6, "metrics": {"accuracy": 0.5}}
    with pytest.raises(train.CheckpointError, match=r"w: checkpoint \(3,\) vs config \(4,\)"):
        ckpt.restore(6, {"w": jnp.zeros(4)})
    ckpt.close()


def test_config_validation_messages():
    from experiments.configs import base

    c = base.get_config()
    train.validate(c)
    for key, value, needle in [
        ("model.name", "vgg", "config.model.name='vgg' is not allowed; use one of ['cifar_resnet'"),
        ("optim.optimizer", "lbfgs", "config.optim.optimizer='lbfgs' is not allowed"),
        ("loss.side_schedule", "cosine", "config.loss.side_schedule='cosine' is not allowed"),
        ("train.compute_dtype", "float16", "config.train.compute_dtype='float16'"),
        ("train.log_every", 0, "config.train.log_every=0 must be >= 1"),
        ("train.best_metric", "top5", "config.train.best_metric='top5' is not a metric a run"),
        ("data.image_size", -8, "config.data.image_size=-8 must be >= 0"),
        ("data.classes", "abc", "config.data.classes='abc' must be a tuple of integer labels"),
        ("loss.label_smoothing", 2.0, "config.loss.label_smoothing=2.0 must be in [0, 1)"),
        ("optim.weight_decay", -0.5, "config.optim.weight_decay=-0.5 must be >= 0 and finite"),
        ("optim.weight_decay", float("nan"), "config.optim.weight_decay=nan must be a finite"),
        ("optim.lr", float("nan"), "config.optim.lr=nan must be a finite number"),
        ("optim.lr", "fast", "config.optim.lr='fast' must be a number"),
        ("train.steps", "many", "config.train.steps='many' must be an integer"),
    ]:
        bad = base.get_config()
        group, name = key.split(".")
        with bad[group].ignore_type():
            bad[group][name] = value
        with pytest.raises(train.ConfigError, match=re.escape(needle)):
            train.validate(bad)
    bad = base.get_config()
    bad.model.kwargs.widht = 3
    with pytest.raises(train.ConfigError, match=r"kwargs has \['widht'\]"):
        train.validate(bad)
    # every section has exactly base.py's keys: a missing one and a typo are named
    bad = base.get_config()
    del bad.optim["warmup"]
    with pytest.raises(train.ConfigError, match=r"config.optim lacks \['warmup'\]; start from"):
        train.validate(bad)
    bad = base.get_config()
    bad.train.eval_evry = 5
    with pytest.raises(train.ConfigError, match=r"config.train has \['eval_evry'\], which no"):
        train.validate(bad)


def test_batch_must_divide_device_count(monkeypatch):
    from experiments.configs import base

    c = base.get_config()
    c.data.batch_size = 30
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(train.ConfigError, match="batch_size=30 is not divisible by the 8 devices"):
        train.validate(c)


def test_warmup_then_decay_to_zero_over_exactly_the_run():
    c = optim_config(schedule="cosine", warmup_steps=15)
    _, cos = train.make_optimizer(c, 150)
    assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.1 / 3)  # linear ramp
    assert float(cos(15)) == pytest.approx(0.1)  # peak at the end of the warm-up
    # cosine over the remaining 135 steps: half-way is half the peak, the end is 0
    assert float(cos(15 + 135 // 2)) == pytest.approx(0.05 * (1 + np.cos(np.pi * 67 / 135)))
    assert float(cos(150)) == pytest.approx(0.0, abs=1e-9)
    _, lin = train.make_optimizer(optim_config(schedule="linear", warmup_steps=10), 110)
    assert [float(lin(s)) for s in (10, 60, 110)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-7)
    # ResNet-110: lr 0.01 for 400 steps, then the paper's step schedule at 0.1
    c = optim_config(warmup_steps=400, warmup="constant", warmup_factor=0.1)
    _, step = train.make_optimizer(c, 64000)
    got = [float(step(s)) for s in (0, 399, 400, 31999, 32000, 48000)]
    assert got == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.001])


def test_peak_lr_scales_linearly_with_the_batch():
    c = optim_config(lr=0.1, lr_batch=128)
    assert c.peak_lr(64) == pytest.approx(0.05)  # Goyal et al.: 0.1 at 128 -> 0.05 at 64
    assert c.peak_lr(256) == pytest.approx(0.2)
    assert optim_config(lr=0.1, lr_batch=0).peak_lr(64) == 0.1  # 0: as given


def test_precise_bn_statistics_are_the_batch_statistics_of_the_images():
    from cnnlab.train.precise_bn import precise_batch_stats

    model = models.create("cifar_resnet", depth=8, num_classes=6)
    images = jax.random.normal(jax.random.key(3), (24, 8, 8, 1))
    variables = jax.jit(model.init)(jax.random.key(0), images)
    stats = jax.jit(functools.partial(precise_batch_stats, model.apply))(variables, images)
    assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
    # the first BN layer's input is the stem conv: an independent reference
    kernel = variables["params"]["stem_conv"]["kernel"]
    y = np.asarray(
        jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")), np.float64
    )  # fmt: skip
    np.testing.assert_allclose(stats["stem_norm"]["mean"], y.mean((0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(stats["stem_norm"]["var"], y.var((0, 1, 2)), rtol=1e-5)
    # every layer: flax's own running-average update from the same pass, momentum undone
    _, upd = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, images
    )
    for path, new in jax.tree_util.tree_leaves_with_path(upd["batch_stats"]):
        old = functools.reduce(lambda t, k: t[k.key], path, variables["batch_stats"])
        got = functools.reduce(lambda t, k: t[k.key], path, stats)
        np.testing.assert_allclose((new - 0.9 * old) / 0.1, got, rtol=2e-4, atol=2e-5)


def test_per_value_keeps_results_of_hashable_arguments_and_calls_afresh_otherwise():
    """cnnlab.train.compiled.per_value: equal hashable arguments share one result; a module
    with an unhashable field (a list) is still served, by a fresh call; errors are not kept."""
    from cnnlab.train import compiled

    calls = []

    @compiled.per_value
    def made(x):
        calls.append(x)
        if x == "bad":
            raise ValueError(x)
        return object()

    assert made((1, 2)) is made((1, 2)) and len(calls) == 1
    assert made([1, 2]) is not made([1, 2]) and len(calls) == 3
    for _ in range(2):
        with pytest.raises(ValueError):
            made("bad")
    assert calls.count("bad") == 2
