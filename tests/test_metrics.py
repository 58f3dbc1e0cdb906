"""The numbers a report quotes, each against an independent computation: evaluation loss and
accuracy (padding, masking and averaging over batches) against numpy over the whole split at
once; per-layer gradient norms against gradients worked out by hand on a two-layer linear net;
activation sparsity against zeros counted by hand."""

import dataclasses
import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnnlab
from cnnlab import ablation, data, models, train
from cnnlab.train.diagnostics import kernels, layer_grad_norms
from experiments.configs import base


def log_softmax_np(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_evaluation_loss_and_accuracy_match_numpy_over_the_whole_split():
    """evaluate() in batches of 7 over 45 test images (the last batch 3 real rows, 4 padding)
    equals numpy's mean cross-entropy and accuracy of one forward pass over all 45; `limit`
    takes the first examples only."""
    ds = data.load("synthetic", synthetic=dict(image_shape=(8, 8, 3), num_examples=64, num_test=45))
    model = models.create("cifar_resnet", depth=8)
    images = next(data.eval_batches(ds, 1000, split="test"))  # every test image, one batch
    n = int(images["mask"].sum())
    assert n == len(ds.test) == 45  # not a multiple of 7
    variables = model.init(jax.random.key(0), images["image"][:1])
    state = train.TrainState.create(model.apply, variables, optax.sgd(0.1))
    logits, _ = model.apply(variables, images["image"][:n])
    labels = np.asarray(images["label"][:n])
    lp = log_softmax_np(logits)
    loss = -lp[np.arange(n), labels]
    hits = np.argmax(np.asarray(logits), -1) == labels
    assert 0 < hits.sum() < n  # an untrained net: neither all right nor all wrong

    eval_fn = jax.jit(functools.partial(train.eval_step, cfg=train.StepConfig(total_steps=1)))
    spec = train.DataSpec.of(base.get_config().data.copy_and_resolve_references())
    spec = dataclasses.replace(spec, batch_size=7, image_size=0)  # as stored
    out = train.evaluate(eval_fn, state, ds, spec, split="test")
    assert out["loss"] == pytest.approx(loss.mean(), rel=1e-5)
    assert out["accuracy"] == pytest.approx(hits.mean(), abs=1e-9)  # a count / 45, exactly
    first = train.evaluate(eval_fn, state, ds, spec, split="test", limit=10)
    assert first["loss"] == pytest.approx(loss[:10].mean(), rel=1e-5)
    assert first["accuracy"] == pytest.approx(hits[:10].mean(), abs=1e-9)


def test_a_kept_split_evaluates_bitwise_as_a_streamed_one_and_is_read_once(monkeypatch):
    """A split small enough is preprocessed once and kept on the devices: later evaluations
    read no data, and give the same numbers bit for bit as a split streamed batch by batch
    (KEEP_BYTES 0), with sums read READ_EVERY batches at a time (here 2 of 7 batches)."""
    from cnnlab.train import evaluation

    ds = data.load("synthetic", synthetic=dict(image_shape=(8, 8, 3), num_examples=64, num_test=45))
    model = models.create("cifar_resnet", depth=8)
    variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
    state = train.TrainState.create(model.apply, variables, optax.sgd(0.1))
    eval_fn = jax.jit(functools.partial(train.eval_step, cfg=train.StepConfig(total_steps=1)))
    spec = train.DataSpec.of(base.get_config().data.copy_and_resolve_references())
    spec = dataclasses.replace(spec, batch_size=7, image_size=0)
    monkeypatch.setattr(evaluation, "READ_EVERY", 2)
    reads = []
    real = data.eval_batches
    monkeypatch.setattr(data, "eval_batches", lambda *a, **k: reads.append(1) or real(*a, **k))
    kept = [train.evaluate(eval_fn, state, ds, spec) for _ in range(3)]
    assert len(reads) == 1 and kept[0] == kept[1] == kept[2]
    monkeypatch.setattr(evaluation, "KEEP_BYTES", 0)
    streamed = [train.evaluate(eval_fn, state, ds, spec, limit=44) for _ in range(2)]
    assert len(reads) == 3  # a streamed split is read every time
    monkeypatch.setattr(evaluation, "_KEPT", type(evaluation._KEPT)())
    monkeypatch.setattr(evaluation, "READ_EVERY", 100)
    streamed_all = train.evaluate(eval_fn, state, ds, spec)
    assert streamed_all == kept[0]  # the same sums in the same order, read at other times
    assert streamed[0] == streamed[1] and streamed[0] != kept[0]  # 44 examples, not 45


def test_eval_step_sums_only_the_real_rows():
    """One batch of 5 rows, the last 2 padding (mask 0) and given absurd labels: the sums are
    over the 3 real rows, by hand."""

    class Fixed(nn.Module):  # logits = the image's first 3 pixels
        @nn.compact
        def __call__(self, x, train=False):
            return x.reshape(x.shape[0], -1)[:, :3], {}

    logits = np.array([[2.0, 0, 0], [0, 1, 3], [1, 1, 0], [9, 9, 9], [5, 5, 5]], np.float32)
    batch = {
        "image": jnp.asarray(logits.reshape(5, 1, 3, 1)),
        "label": jnp.array([0, 1, 1, 2, 0]),
        "mask": jnp.array([1, 1, 1, 0, 0]),
    }
    state = train.TrainState.create(Fixed().apply, {"params": {}}, optax.sgd(0.1))
    sums = train.eval_step(state, batch, cfg=train.StepConfig(total_steps=1))
    lp = log_softmax_np(logits[:3])
    assert float(sums["count"]) == 3
    assert float(sums["loss"]) == pytest.approx(-(lp[0, 0] + lp[1, 1] + lp[2, 1]), rel=1e-6)
    # row 0 argmax 0 (right), row 1 argmax 2 (wrong), row 2 a tie 0/1 -> argmax 0 (wrong)
    assert float(sums["accuracy"]) == 1


class TwoLinear(nn.Module):
    """y = (x W1) W2, no biases; created 'z_first' then 'a_second', so the forward order is the
    reverse of the sorted order jax gives every dict it builds."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(3, use_bias=False, name="z_first")(x)
        return nn.Dense(2, use_bias=False, name="a_second")(h)


def test_layer_gradient_norms_match_gradients_worked_by_hand():
    """L = sum(y) for y = (x W1) W2: dL/dW2 = hᵀ·1 with h = x W1, dL/dW1 = xᵀ·(1 W2ᵀ). The
    norms pair with the right kernels whatever order the dicts hold them in, and come out in
    forward order once the summary's rows say what that is."""
    x = np.array([[1.0, 2.0], [-1.0, 0.5]], np.float32)
    w1 = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]], np.float32)
    w2 = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]], np.float32)
    params = {"z_first": {"kernel": jnp.asarray(w1)}, "a_second": {"kernel": jnp.asarray(w2)}}
    grads = jax.grad(lambda p: TwoLinear().apply({"params": p}, x).sum())(params)
    ones = np.ones((2, 2))
    g1, g2 = x.T @ (ones @ w2.T), (x @ w1).T @ ones
    assert list(grads) == ["a_second", "z_first"]  # jax sorted them
    assert [p for p, _ in kernels(params)] == [p for p, _ in kernels(grads)]
    norms = np.asarray(layer_grad_norms(grads))
    np.testing.assert_allclose(norms, [np.linalg.norm(g2), np.linalg.norm(g1)], rtol=1e-6)
    state = types.SimpleNamespace(params=params)  # creation order: z_first first
    pairs = dict(ablation.layer_grad_norms(state, {"layer_grad_norms": norms}))
    assert pairs["z_first"] == pytest.approx(np.linalg.norm(g1), rel=1e-6)
    rows = [r.path for r in cnnlab.summary(TwoLinear(), jnp.asarray(x)).rows]
    assert ablation.forward_order(pairs, rows) == ["z_first", "a_second"]


def test_forward_order_of_blocks_and_kernels():
    """From a real model's summary: the stem, then blocks in numeric order (block 10 after 9, not
    after 1), the head last; kernels within a block in the order they run."""
    model = models.create("cifar_resnet", depth=68)  # 11 blocks per stage
    rows = [r.path for r in cnnlab.summary(model, jnp.zeros((1, 8, 8, 3))).rows]
    taps = sorted(["stem", *(f"stage1_block{i}" for i in range(1, 12)), "stage2_block1"])
    assert ablation.forward_order(taps, rows) == [
        "stem", *(f"stage1_block{i}" for i in range(1, 12)), "stage2_block1"
    ]  # fmt: skip
    paths = sorted(["head", "stem_conv", "stage1_block10/conv2", "stage1_block10/conv1"])
    assert ablation.forward_order(paths, rows) == [
        "stem_conv", "stage1_block10/conv1", "stage1_block10/conv2", "head"
    ]  # fmt: skip


def test_activation_sparsity_counts_zeros_by_hand():
    """Taps are the stem and every block (not stages), in forward order although jit hands the
    features back sorted; the fraction of exact zeros of each, eval mode."""

    class Taps(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            stem = nn.relu(x - 1.0)  # zero where x <= 1
            block = nn.relu(x - 3.0)  # zero where x <= 3
            return x.sum((1, 2, 3)), {"stem": stem, "stage1_block1": block, "stage1": block}

    images = jnp.arange(8.0).reshape(2, 2, 2, 1)  # 0..7
    state = types.SimpleNamespace(params={}, batch_stats={})
    rows = ["stem_conv", "stage1_block1/conv1", "head"]
    out = ablation.activation_sparsity(Taps(), state, images, rows)
    assert out == {"stem": 2 / 8, "stage1_block1": 4 / 8}  # 0, 1 | 0, 1, 2, 3; no 'stage1'
    assert list(out) == ["stem", "stage1_block1"]
