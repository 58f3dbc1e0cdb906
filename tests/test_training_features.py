"""Stochastic depth, the weight average (EMA) and what weight decay applies to."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import data, models, train
from cnnlab.blocks import BasicBlock, InvertedResidual
from cnnlab.blocks.drop_path import rates
from experiments.configs import base


def test_drop_path_is_the_identity_at_eval_and_drops_whole_branches_in_training():
    x = jax.random.normal(jax.random.key(0), (64, 6, 6, 8))
    block = BasicBlock(8, drop_path=0.5)
    v = block.init(jax.random.key(1), x)
    v["batch_stats"] = jax.tree.map(lambda a: a + 0.1, v["batch_stats"])  # not the identity BN
    assert jnp.array_equal(block.apply(v, x), BasicBlock(8).apply(v, x))  # eval: unchanged

    def branch_and_out(blk):
        """The block's residual branch (its conv2/norm2 output) and its output, in train mode."""
        seen = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.module.name == "norm2":
                seen["branch"] = out[0] if isinstance(out, tuple) else out
            return out

        with nn.intercept_methods(record):
            out, _ = blk.apply(v, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(2)})  # fmt: skip
        return seen["branch"], out

    branch, out = branch_and_out(block)
    kept = jnp.allclose(out, nn.relu(branch / 0.5 + x), atol=1e-5, rtol=1e-5, equal_nan=False)
    per_example = [
        bool(jnp.allclose(out[i], nn.relu(x[i]), atol=1e-6))  # branch dropped: relu(shortcut)
        or bool(jnp.allclose(out[i], nn.relu(branch[i] / 0.5 + x[i]), atol=1e-5))
        for i in range(64)
    ]
    dropped = sum(bool(jnp.allclose(out[i], nn.relu(x[i]), atol=1e-6)) for i in range(64))
    assert all(per_example) and not kept and 16 <= dropped <= 48  # ~Binomial(64, 0.5)


def test_drop_path_rates_grow_linearly_with_depth():
    """Huang et al.: block l of L drops with probability l/L · p_L."""
    assert rates(4, 0.2) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and hasattr(context.module, "drop_path"):
            seen.append(context.module.drop_path)
        return next_fun(*args, **kwargs)

    for name, x, n in (("resnet20", (1, 32, 32, 3), 9), ("mobilenet_v2", (1, 32, 32, 3), 17)):
        seen.clear()
        net = models.create(name, drop_path_rate=0.3, num_classes=10)
        with nn.intercept_methods(record):
            jax.eval_shape(lambda net=net, x=x: net.init(jax.random.key(0), jnp.zeros(x)))
        assert seen == pytest.approx([0.3 * i / n for i in range(1, n + 1)]), name
    with pytest.raises(ValueError, match="has no shortcut, so drop_path"):
        net = models.create("generic", block="mobilenet_v1", drop_path_rate=0.1)
        jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))


def test_inverted_residual_drop_path_only_where_it_adds():
    x = jax.random.normal(jax.random.key(0), (32, 4, 4, 8))
    for strides, features in ((1, 8), (2, 8), (1, 16)):
        blk = InvertedResidual(features, strides, expansion=2, drop_path=0.9)
        v = blk.init(jax.random.key(1), x)
        y, _ = blk.apply(v, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(3)})  # fmt: skip
        y0, _ = InvertedResidual(features, strides, expansion=2).apply(
            v, x, train=True, mutable=["batch_stats"]
        )
        assert jnp.array_equal(y, y0) == (strides != 1 or features != 8)  # no add: untouched


def tiny_config(**train_kw):
    c = base.get_config()
    c.data.name = "synthetic"
    c.data.synthetic.image_shape, c.data.synthetic.num_examples = (8, 8, 3), 64
    c.model.kwargs.depth, c.data.batch_size = 8, 16
    c.train.steps, c.train.eval_every, c.train.log_every, c.train.train_subset = 6, 3, 1, 32
    c.train.update(train_kw)
    return c


def test_ema_follows_the_recurrence_and_is_evaluated_with_recomputed_statistics(tmp_path):
    """d_t = min(decay, (1 + t) / (10 + t)); ema_t+1 = d_t·ema_t + (1 - d_t)·params_t+1, checked
    against the parameters of every step after the first, as the run trains them; `ema/...`
    metrics use BN statistics recomputed for the average over the train_subset images, not the
    raw weights' running statistics."""
    c = tiny_config(ema_decay=0.9)
    spec = train.RunSpec.of(c)
    ds = train.load_data(spec)
    cfg = spec.step
    seen = []  # (step t, params_t+1, ema_t+1), on the host

    def hook(t, state, metrics):
        seen.append((t, *(jax.tree.map(np.array, x) for x in (state.params, state.ema_params))))

    result = train.train(c, tmp_path / "run", progress=False, hook=hook)
    assert [t for t, _, _ in seen] == list(range(6))
    for (_, _, ema), (t, params, got) in itertools.pairwise(seen):
        d = min(0.9, (1 + t) / (10 + t))
        want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(*(jax.tree.leaves(x)[0] for x in seen[-1][1:]))  # it is an average
    m = result.metrics
    assert {"ema/accuracy", "ema/loss", "accuracy", "loss"} <= set(m)
    images = next(data.eval_batches(ds, 32, split="train", limit=32))["image"]
    s = result.state
    stats = jax.jit(functools.partial(train.precise_batch_stats, s.apply_fn))(
        {"params": s.ema_params, "batch_stats": s.batch_stats}, images
    )
    eval_fn = jax.jit(functools.partial(train.eval_step, cfg=cfg))
    recomputed = train.evaluate(
        eval_fn, s.replace(params=s.ema_params, batch_stats=stats), ds, spec.data
    )
    copied = train.evaluate(eval_fn, s.replace(params=s.ema_params), ds, spec.data)
    assert m["ema/loss"] == pytest.approx(recomputed["loss"], rel=1e-5)
    assert m["ema/loss"] != pytest.approx(copied["loss"], rel=1e-3)
    with pytest.raises(train.ConfigError, match=r"ema_decay > 0 needs config\.train\.train_subset"):
        train.validate(tiny_config(ema_decay=0.99, train_subset=0))
    with pytest.raises(train.ConfigError, match=r"train.ema_decay=1.0 must be in \[0, 1\)"):
        train.validate(tiny_config(ema_decay=1.0))


def test_weight_decay_applies_to_kernels_unless_all_is_asked():
    params = {"conv": {"kernel": jnp.ones(3), "bias": jnp.ones(3)},
              "norm": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}  # fmt: skip
    zeros = jax.tree.map(jnp.zeros_like, params)
    for on, decayed in (("kernels", {"conv/kernel"}), ("all", {"conv/kernel", "conv/bias",
                        "norm/scale", "norm/bias"})):  # fmt: skip
        c = base.get_config().optim
        c.update(dict(lr=0.1, momentum=0.0, weight_decay=0.5, schedule="constant",
                      warmup_steps=0, weight_decay_on=on))  # fmt: skip
        tx, _ = train.make_optimizer(train.OptimSpec.of(c), 10)
        upd, _ = tx.update(zeros, tx.init(params), params)
        flat = {"/".join(k): float(v[0]) for k, v in _flat(optax.apply_updates(params, upd))}
        assert {k for k, v in flat.items() if v < 1.0} == decayed, on
        assert all(v == pytest.approx(1 - 0.1 * 0.5) for k, v in flat.items() if k in decayed)
    with pytest.raises(train.ConfigError, match="weight_decay_on='bn' is not allowed"):
        cfg = base.get_config()
        cfg.optim.weight_decay_on = "bn"
        train.validate(cfg)


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def test_a_model_without_batch_statistics_trains_and_skips_what_needs_them(tmp_path):
    """GroupNorm keeps no running statistics: the run trains, the weight average is evaluated
    as it is (nothing to recompute) and PreciseBN adds no metrics; bad norm settings are
    one-line config errors before training."""
    c = tiny_config(ema_decay=0.9, precise_bn=True)
    c.model.kwargs.norm = "group"
    result = train.train(c, tmp_path / "run", progress=False)
    m = result.metrics
    assert not jax.tree.leaves(result.state.batch_stats)
    assert {"accuracy", "ema/accuracy", "train_subset/accuracy"} <= set(m)
    assert not [k for k in m if k.startswith("precise_bn/")]
    assert all(np.isfinite(v) for v in m.values())
    for kwargs, says in (
        ({"norm": "instance"}, r"config.model \(CifarResNet\): norm must be one of"),
        ({"norm": "none", "zero_init_residual": True}, "norm='none' has no scale"),
    ):
        bad = tiny_config()
        bad.model.kwargs.update(kwargs)
        with pytest.raises(train.ConfigError, match=says):
            train.train(bad, tmp_path / "bad", progress=False)
        assert not (tmp_path / "bad" / "checkpoints").exists()
