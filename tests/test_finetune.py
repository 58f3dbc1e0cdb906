"""Transfer learning: selection, frozen training (bit-identical), frozen BatchNorm, per-group
learning rates, partial backbone restore with clear errors, the two-phase recipe end to end."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from ml_collections import ConfigDict

from cnnlab import data, finetune, models, train
from cnnlab.errors import ConfigError
from cnnlab.finetune.select import paths
from cnnlab.summary import summary
from cnnlab.train.loop import _early_stop
from experiments.configs import base
from experiments.configs import finetune as finetune_config

ROOT = Path(__file__).resolve().parents[1]
X = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
Y = jnp.arange(8) % 5


@pytest.fixture(scope="module")
def resnet8():
    model = models.create("cifar_resnet", depth=8, num_classes=5)
    variables = jax.jit(model.init)(jax.random.key(0), X[:1])  # eagerly: compiled op by op
    return model, variables, finetune.call_order(model, X[:1])


def flat(tree):
    return tu.flatten_dict(jax.device_get(tree), sep="/")


# --- selection --------------------------------------------------------------------------------


def test_units_follow_the_forward_pass(resnet8):
    order = resnet8[2]
    assert order == ["stem_conv", "stem_norm", "stage1_block1", "stage2_block1", "stage3_block1",
                     "head"]  # fmt: skip
    blocks = finetune.units(order, "block")
    assert [name for name, _ in blocks] == ["stem", "stage1_block1", "stage2_block1",
                                            "stage3_block1"]  # fmt: skip
    assert blocks[0][1] == ["stem_conv", "stem_norm"]
    assert len(finetune.units(order, "layer")) == 5  # stem_conv, stem_norm, three blocks
    lenet = models.create("lenet5", num_classes=10)
    lenet_order = finetune.call_order(lenet, jnp.zeros((1, 32, 32, 1)))
    assert [n for n, _ in finetune.units(lenet_order, "block")] == ["conv1", "conv2", "fc1", "fc2"]


def test_select_frozen_backbone_last_n_and_patterns(resnet8):
    _, variables, order = resnet8
    params = variables["params"]
    all_paths = paths(params)
    head = {p for p in all_paths if p.startswith("head/")}
    frozen = finetune.select_frozen(params, order)  # the whole backbone
    assert frozen == set(all_paths) - head
    last1 = finetune.select_frozen(params, order, unfreeze_last=1)
    assert {p.split("/")[0] for p in set(all_paths) - last1} == {"stage3_block1", "head"}
    stage = finetune.select_frozen(params, order, unfreeze_last=2, unit="stage")
    trained = {p.split("/")[0] for p in set(all_paths) - stage}
    assert trained == {"stage2_block1", "stage3_block1", "head"}
    assert finetune.select_frozen(params, order, unfreeze_last=-1) == frozenset()
    # patterns: unfreeze the stem, then freeze every norm (an explicit freeze wins)
    pat = finetune.select_frozen(params, order, unfreeze=("stem_*",), freeze=("*norm*",))
    assert "stem_conv/kernel" not in pat and "stem_norm/scale" in pat
    assert "stage3_block1/norm2/bias" in pat and "stage3_block1/conv1/kernel" in pat
    with pytest.raises(ValueError, match=r"unfreeze_last=5 but the backbone has 4 blocks"):
        finetune.select_frozen(params, order, unfreeze_last=5)
    with pytest.raises(ValueError, match=r"freeze pattern 'stage9\*' matches no parameter"):
        finetune.select_frozen(params, order, freeze=("stage9*",))


def test_summary_counts_trainable_and_frozen(resnet8):
    model, variables, order = resnet8
    frozen = finetune.select_frozen(variables["params"], order)
    plain = summary(model, X[:1], train=False)
    s = summary(model, X[:1], train=False, frozen=frozen)
    assert s.trainable_params == 64 * 5 + 5  # only the new head
    assert s.frozen_params == plain.trainable_params - (64 * 5 + 5)
    assert s.total_params == plain.total_params
    assert s.non_trainable_params == plain.non_trainable_params  # BN statistics
    assert sum(r.frozen for r in s.rows) == s.frozen_params
    assert sum(r.trainable for r in s.rows) == s.trainable_params
    text = str(s)
    assert "Frozen" in text.splitlines()[1] and f"Frozen params:        {s.frozen_params:,}" in text
    assert "Frozen" not in str(plain)
    with pytest.raises(ValueError, match="does not have"):
        summary(model, X[:1], train=False, frozen={"stage9/kernel"})


# --- training with frozen parameters ----------------------------------------------------------


def optim_config(**kw):
    c = ConfigDict(finetune_config.get_config().optim.to_dict())  # what fine-tuning uses
    c.update(kw)
    return c


def test_group_optimizer_applies_each_groups_learning_rate_and_freezes():
    params = {"head": {"kernel": jnp.ones(3)}, "stage1": {"kernel": jnp.ones(3)},
              "stem": {"kernel": jnp.ones(3)}}  # fmt: skip
    labels = {"head": {"kernel": "head"}, "stage1": {"kernel": "backbone"},
              "stem": {"kernel": "frozen"}}  # fmt: skip
    c = optim_config(momentum=0.0, weight_decay=0.0, schedule="constant")
    tx, schedules = finetune.group_optimizer(c, 10, labels, {"head": 0.1, "backbone": 0.001})
    grads = jax.tree.map(lambda p: 2 * p, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["head"]["kernel"], -0.2 * np.ones(3, np.float32))
    np.testing.assert_array_equal(updates["stage1"]["kernel"], -0.002 * np.ones(3, np.float32))
    np.testing.assert_array_equal(updates["stem"]["kernel"], np.zeros(3))
    assert sorted(schedules) == ["backbone", "head"]
    assert float(schedules["backbone"](0)) == pytest.approx(0.001)


def train_steps(model, variables, frozen, norms, n=3):
    labels = finetune.param_labels(variables["params"], frozen)
    tx, _ = finetune.group_optimizer(optim_config(), n, labels, {"head": 0.1, "backbone": 0.01})
    apply = finetune.FrozenApply(model.apply, frozen, norms)
    state = train.TrainState.create(apply, variables, tx)
    step = jax.jit(lambda s, b, r: train.train_step(s, b, r, cfg=train.StepConfig()))
    for i in range(n):
        state, metrics = step(state, {"image": X + i, "label": Y}, jax.random.key(i))
    return state, metrics


@pytest.mark.parametrize("bn", ["frozen", "update"])
def test_frozen_parameters_are_bit_identical_after_training(resnet8, bn):
    model, variables, order = resnet8
    frozen = finetune.select_frozen(variables["params"], order, unfreeze_last=1)
    norms = finetune.frozen_norms(variables, frozen) if bn == "frozen" else frozenset()
    state, metrics = train_steps(model, variables, frozen, norms)
    before, after = flat(variables["params"]), flat(state.params)
    for p in frozen:
        np.testing.assert_array_equal(after[p], before[p], err_msg=p)
    moved = [p for p in before if p not in frozen and not np.array_equal(after[p], before[p])]
    assert {p.split("/")[0] for p in moved} == {"stage3_block1", "head"}
    stats_before, stats_after = flat(variables["batch_stats"]), flat(state.batch_stats)
    frozen_stats = [p for p in stats_before if tuple(p.split("/")[:-1]) in
                    finetune.frozen_norms(variables, frozen)]  # fmt: skip
    assert len(frozen_stats) == 2 * 5  # mean and var of stem_norm + 2 norms x 2 blocks
    same = [np.array_equal(stats_after[p], stats_before[p]) for p in frozen_stats]
    # Keras semantics: frozen BN keeps its running statistics; 'update' keeps updating them
    assert all(same) if bn == "frozen" else not any(same)
    assert not np.array_equal(stats_after["stage3_block1/norm1/mean"],
                              stats_before["stage3_block1/norm1/mean"])  # fmt: skip
    assert float(metrics["grad_norm"]) > 0


def compiled_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_frozen_layers_cost_no_backward_pass(resnet8):
    """XLA's own FLOP count: with the backbone frozen a train step costs one forward pass."""
    model, variables, order = resnet8
    forward = compiled_flops(lambda v, x: model.apply(v, x, train=False), variables, X)

    def step_flops(frozen):
        labels = finetune.param_labels(variables["params"], frozen)
        tx, _ = finetune.group_optimizer(optim_config(), 1, labels, {"head": 0.1, "backbone": 0.1})
        apply = finetune.FrozenApply(model.apply, frozen, finetune.frozen_norms(variables, frozen))
        state = train.TrainState.create(apply, variables, tx)
        step = lambda s, b, r: train.train_step(s, b, r, cfg=train.StepConfig())
        return compiled_flops(step, state, {"image": X, "label": Y}, jax.random.key(0))

    head_only = step_flops(finetune.select_frozen(variables["params"], order))
    last_block = step_flops(finetune.select_frozen(variables["params"], order, unfreeze_last=1))
    everything = step_flops(frozenset())
    assert head_only < 1.05 * forward  # (measured: 1.000x)
    assert head_only < last_block < 0.6 * everything  # (measured: 1.37x and 3.07x forward)
    assert everything > 2.5 * forward


def test_frozen_batchnorm_in_train_mode_uses_running_statistics(resnet8):
    model, variables, order = resnet8
    stats = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])  # not the init values
    v = {"params": variables["params"], "batch_stats": stats}
    everything = finetune.select_frozen(v["params"], order)
    apply = finetune.FrozenApply(model.apply, everything, finetune.frozen_norms(v, everything))
    train_mode = dict(train=True, mutable=["batch_stats"])
    (logits, _), updates = jax.jit(functools.partial(apply, **train_mode))(v, X)
    eval_logits, _ = jax.jit(model.apply)(v, X)
    np.testing.assert_array_equal(logits, eval_logits)
    for p, a in flat(updates["batch_stats"]).items():
        np.testing.assert_array_equal(a, flat(stats)[p])
    (train_logits, _), _ = jax.jit(functools.partial(model.apply, **train_mode))(v, X)
    assert not np.allclose(train_logits, eval_logits)  # the switch matters


# --- partial restore --------------------------------------------------------------------------


def saved_train(**kw) -> dict:
    """A run's saved train section (config.json), base.py's with `kw`."""
    return {**base.get_config().train.to_dict(), **kw}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, resnet8):
    """A checkpoint of a 10-class ResNet-8 with a side head, saved as experiments.train does."""
    model = models.create("cifar_resnet", depth=8, num_classes=10, side_taps=("stage1",))
    variables = jax.jit(model.init)(jax.random.key(7), X[:1])
    variables = jax.tree.map(lambda a: a + 0.25, variables)  # unlike any fresh init
    state = train.TrainState.create(model.apply, variables, optax.sgd(0.1, momentum=0.9))
    workdir = tmp_path_factory.mktemp("source")
    ckpt = train.Checkpointer(workdir / "checkpoints", keep=3)
    cfg = {"train": saved_train()}  # base.py's: best accuracy
    for step, acc in ((4, 0.5), (8, 0.9), (12, 0.7)):
        ckpt.save(step, state, None, {"config": cfg}, metrics={"accuracy": acc})
    ckpt.close()
    return workdir, variables


def test_load_backbone_restores_backbone_and_keeps_the_new_head(source_run, resnet8):
    workdir, src = source_run
    fresh = resnet8[1]  # 5 classes, no side head
    loaded, info = finetune.load_backbone(workdir, fresh)
    assert info["step"] == 8  # the source's best kept step by its best_metric
    assert sorted(info["new"]) == ["head/bias", "head/kernel"]
    got, want, init = flat(loaded["params"]), flat(src["params"]), flat(fresh["params"])
    for p in got:
        expected = init[p] if p.startswith("head/") else want[p]
        np.testing.assert_array_equal(got[p], expected, err_msg=p)
    for p, a in flat(loaded["batch_stats"]).items():
        np.testing.assert_array_equal(a, flat(src["batch_stats"])[p])
    assert info["loaded"] == len(got) - 2 + len(flat(loaded["batch_stats"]))
    assert finetune.load_backbone(workdir / "checkpoints", fresh, step=12)[1]["step"] == 12


def test_load_backbone_picks_the_best_step_by_the_source_runs_own_rule(source_run, resnet8,
                                                                      tmp_path):  # fmt: skip
    """A source trained with early stopping kept its best validation loss (RunSpec's rule),
    whatever its best_metric says: fine-tuning starts from that step."""
    _, variables = source_run
    model = models.create("cifar_resnet", depth=8, num_classes=10, side_taps=("stage1",))
    state = train.TrainState.create(model.apply, variables, optax.sgd(0.1))
    ckpt = train.Checkpointer(tmp_path / "checkpoints", keep=3, best_metric="val_loss",
                              best_mode="min")  # fmt: skip
    cfg = {"train": saved_train(patience=2, best_metric="accuracy", best_mode="max")}
    for step, acc, val_loss in ((4, 0.5, 0.9), (8, 0.6, 0.4), (12, 0.9, 0.7)):
        ckpt.save(
            step, state, None, {"config": cfg}, metrics={"accuracy": acc, "val_loss": val_loss}
        )
    ckpt.close()
    fresh = resnet8[1]  # 5 classes, no side head
    assert finetune.load_backbone(tmp_path, fresh)[1]["step"] == 8  # not 12, the best accuracy
    # a step whose meta has no saved train section: no rule to pick by, so name the step
    bare = train.Checkpointer(tmp_path / "bare", keep=1)
    bare.save(4, state, None, {}, metrics={"accuracy": 0.5})
    bare.close()
    with pytest.raises(train.CheckpointError, match=r"no complete saved config\.train"):
        finetune.load_backbone(tmp_path / "bare", fresh)
    assert finetune.load_backbone(tmp_path / "bare", fresh, step=4)[1]["step"] == 4


def test_load_backbone_errors_name_what_is_wrong(source_run, tmp_path):
    workdir, _ = source_run
    wider = models.create("cifar_resnet", depth=8, num_classes=5, width=32)
    v = jax.jit(wider.init)(jax.random.key(0), X[:1])
    first = r"params/stage1_block1/conv1/kernel: checkpoint \(3, 3, 16, 16\) vs model \(3, 3, 32"
    with pytest.raises(train.CheckpointError, match=r"\(35 shape mismatches, 0 missing.*" + first):
        finetune.load_backbone(workdir, v)
    deeper = models.create("cifar_resnet", depth=14, num_classes=5)
    v = jax.jit(deeper.init)(jax.random.key(0), X[:1])
    with pytest.raises(train.CheckpointError, match=r"stage1_block2/conv1/kernel missing in ch"):
        finetune.load_backbone(workdir, v)
    with pytest.raises(train.CheckpointError, match="does not exist"):
        finetune.load_backbone(tmp_path / "nowhere", v)
    (tmp_path / "empty").mkdir()
    with pytest.raises(train.CheckpointError, match="no checkpoints in"):
        finetune.load_backbone(tmp_path / "empty", v)
    with pytest.raises(train.CheckpointError, match=r"source_step=5 is not in .*\[4, 8, 12\]"):
        finetune.load_backbone(workdir, v, step=5)


# --- data subsets and early stopping ----------------------------------------------------------


def test_subset_relabels_holds_out_val_and_is_seeded():
    ds = data.load("synthetic", synthetic={"num_examples": 200, "image_shape": (4, 4, 1),
                                           "num_classes": 10, "num_test": 100})  # fmt: skip
    sub = data.subset(ds, classes=(7, 3), train_per_class=4, val_per_class=5, seed=1)
    assert sub.num_classes == 2 and len(sub.train) == 8 and len(sub.val) == 10
    assert len(sub.test) == 20  # every test example of classes 7 and 3
    assert set(sub.train.indices).isdisjoint(sub.val.indices)
    raw = [ds.train[int(i)]["label"] for i in sub.train.indices]
    assert [sub.train[i]["label"] for i in range(8)] == [{7: 0, 3: 1}[k] for k in raw]
    again = data.subset(ds, classes=(7, 3), train_per_class=4, val_per_class=5, seed=1)
    np.testing.assert_array_equal(again.train.indices, sub.train.indices)
    other = data.subset(ds, classes=(7, 3), train_per_class=4, val_per_class=5, seed=2)
    assert not np.array_equal(other.train.indices, sub.train.indices)
    with pytest.raises(data.DataError, match="class 7 of 'synthetic' has 20 training examples"):
        data.subset(ds, classes=(7,), train_per_class=20, val_per_class=5)
    with pytest.raises(data.DataError, match=r"classes=\[3, 12\] must be distinct labels"):
        data.subset(ds, classes=(3, 12))


def test_early_stopping_counts_evals_without_improvement():
    h = {}
    for step, loss in enumerate([1.0, 0.8, 0.85, 0.79, 0.9, 0.95], start=1):
        _early_stop(h, loss, step, patience=2, min_delta=0.02)
    # 0.79 is not a 0.02 improvement on 0.8: three evals without one after step 2
    assert h == {"best": 0.8, "best_step": 2, "bad_evals": 4, "stopped": True}
    h = {}
    _early_stop(h, 1.0, 1, 0, 0.0)
    _early_stop(h, 2.0, 2, 0, 0.0)
    assert not h["stopped"]  # patience 0: never stops


def test_early_stopping_restores_best_and_survives_a_restart(tmp_path):
    c = base.get_config()
    c.data.train_per_class, c.data.val_per_class, c.data.batch_size = 8, 4, 16
    c.model.kwargs.depth = 8
    c.optim.schedule = "constant"
    c.train.steps, c.train.eval_every, c.train.log_every = 40, 2, 2
    c.train.patience, c.train.min_delta = 1, 10.0  # no eval can improve by 10: stop at the 2nd

    class Interrupt(Exception):
        pass

    def crash(step, state, metrics):
        if step == 2:  # after the step-2 checkpoint: a restart must keep the counter
            raise Interrupt

    with pytest.raises(Interrupt):
        train.train(c, tmp_path / "w", progress=False, hook=crash)
    result = train.train(c, tmp_path / "w", progress=False)
    assert result.early_stopping == {"best": pytest.approx(result.metrics["val_loss"]),
                                     "best_step": 2, "bad_evals": 1, "stopped": True}  # fmt: skip
    assert int(result.state.step) == 2  # the best weights, restored
    assert saved_params_step(tmp_path / "w") == 4  # it stopped at the second eval
    again = train.train(c, tmp_path / "w", progress=False)
    assert again.metrics == result.metrics and int(again.state.step) == 2


def saved_params_step(run):
    mngr = ocp.CheckpointManager(Path(run) / "checkpoints")
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


# --- the recipe end to end --------------------------------------------------------------------


def tiny(**over):
    """ResNet-8, digits 5-9 with 5 labels per class; 8 + 8 steps."""
    c = finetune_config.get_config()
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.train_per_class, c.data.val_per_class, c.data.batch_size = 5, 4, 16
    c.model.kwargs.depth = 8
    c.train.eval_every, c.train.log_every, c.train.patience = 4, 4, 1
    c.phase1.steps, c.phase2.steps, c.phase2.unfreeze_last = 8, 8, 1
    c.pretrain = base.get_config()
    c.pretrain.data = c.data.copy_and_resolve_references()
    c.pretrain.data.classes, c.pretrain.data.train_per_class = (0, 1, 2, 3, 4), 0
    c.pretrain.data.val_per_class = 0
    c.pretrain.model.kwargs.depth = 8
    c.pretrain.train.steps, c.pretrain.train.eval_every = 8, 4
    c.study.scratch = True
    for k, v in over.items():
        group, name = k.split(".")
        c[group][name] = v
    return c


@pytest.mark.slow  # the whole recipe (pre-train, two phases, scratch, report): full tier
def test_two_phase_recipe_and_report(tmp_path):
    c = tiny()
    report = finetune.run_study(c, tmp_path / "w", progress=False)
    src = saved_params(tmp_path / "w/pretrain")
    ph1 = saved_params(tmp_path / "w/seed0/finetune/phase1")
    ph2 = saved_params(tmp_path / "w/seed0/finetune/phase2")
    backbone = [p for p in ph1 if not p.startswith("head/")]
    for p in backbone:  # phase 1: the whole backbone frozen, bit-identical to pre-training
        np.testing.assert_array_equal(ph1[p], src[p], err_msg=p)
    for p in backbone:  # phase 2: only the last block moved
        moved = not np.array_equal(ph2[p], src[p])
        assert moved == p.startswith("stage3_block1/"), p
    results = json.loads((tmp_path / "w/results.json").read_text())
    assert set(results["summary"]) == {"probe", "phase1", "finetune", "scratch"}
    assert 0 < results["summary"]["probe"]["accuracy"][0] <= 1
    row = results["seeds"]["0"]
    last_block = sum(ph2[p].size for p in ph2 if p.startswith(("stage3_block1/", "head/")))
    assert row["trainable"] == {"phase1": 64 * 5 + 5, "phase2": last_block}
    assert row["frozen"]["phase2"] == sum(ph2[p].size for p in ph2) - last_block
    text = report.read_text()
    assert "- Provenance: commit " in text  # every phase run's sessions, one machine
    assert "## Finding" in text and (tmp_path / "w/curves.png").stat().st_size > 0
    assert "phase1 (" not in text and "| from scratch" in text
    summary_txt = (tmp_path / "w/seed0/finetune/phase1/summary.txt").read_text()
    assert "Trainable params:     325" in summary_txt
    # re-running resumes: nothing retrains, the report is rebuilt with the same numbers
    mtime = (tmp_path / "w/pretrain/checkpoints").stat().st_mtime
    finetune.run_study(c, tmp_path / "w", progress=False)
    assert json.loads((tmp_path / "w/results.json").read_text())["summary"] == results["summary"]
    assert (tmp_path / "w/pretrain/checkpoints").stat().st_mtime == mtime
    # a phase resumes only on its own recipe: another phase-1 lr is one line, nothing touched
    with pytest.raises(ConfigError, match=r"finetune/phase1 was trained to step 8 with another "
                       r"recipe: phase1\.lr is 0\.05 there and 0\.02 now"):  # fmt: skip
        finetune.run_study(tiny(**{"phase1.lr": 0.02}), tmp_path / "w", progress=False)
    assert json.loads((tmp_path / "w/seed0/finetune/phase1/config.json").read_text())["phase1"][
        "lr"] == 0.05  # fmt: skip


def saved_params(run):
    """The latest checkpoint's params of a run, read without a target."""
    mngr = ocp.CheckpointManager(Path(run) / "checkpoints")
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return flat(state["params"])


def test_recipe_config_errors(tmp_path):
    with pytest.raises(train.ConfigError, match=r"config has no \['finetune', 'phase1'"):
        finetune.run_study(base.get_config(), tmp_path / "z")
    with pytest.raises(train.ConfigError, match=r"config.phase2: unfreeze_last=9 but"):
        finetune.finetune(tiny(**{"phase2.unfreeze_last": 9}), tmp_path / "a")
    with pytest.raises(train.ConfigError, match=r"config\.finetune\.bn='off' is not allowed"):
        finetune.finetune(tiny(**{"finetune.bn": "off"}), tmp_path / "b")
    with pytest.raises(train.ConfigError, match=r"phase2\.backbone_lr=0 but unfreeze_last=1"):
        finetune.finetune(tiny(**{"phase2.backbone_lr": 0.0}), tmp_path / "c")
    with pytest.raises(train.ConfigError, match=r"patience > 0 .* needs a validation split"):
        finetune.finetune(tiny(**{"data.val_per_class": 0}), tmp_path / "d")


def test_cli_mismatched_source_is_a_one_line_error_and_keeps_files(tmp_path, source_run):
    workdir, _ = source_run
    before = sorted((p, p.stat().st_mtime) for p in workdir.rglob("*"))
    env = dict(os.environ)  # the session's data dir and caches (conftest)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.finetune",
            f"--workdir={tmp_path / 'w'}",
            "--config=experiments/configs/finetune.py",
            f"--config.finetune.source={workdir}",
            "--config.model.kwargs.depth=14",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the backbone in") and "missing in checkpoint" in last
    assert sorted((p, p.stat().st_mtime) for p in workdir.rglob("*")) == before


def test_docs_frozen_summary_is_what_summary_prints():
    """The transfer-learning page's summary: ResNet-20, 5 classes, 8x8x1, backbone frozen."""
    model = models.create("cifar_resnet", depth=20, num_classes=5)
    x = jnp.zeros((1, 8, 8, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    frozen = finetune.select_frozen(variables["params"], finetune.call_order(model, x))
    s = summary(model, x, train=False, frozen=frozen)
    totals = "\n".join(line for line in str(s).splitlines() if "params:" in line)
    page = (ROOT / "docs" / "transfer.md").read_text()
    assert totals in page
    assert f"{s.trainable_params:,}" == "325" and s.frozen_params == 268_784


def test_report_without_phase2_has_no_phases_1_plus_2_row(tmp_path):
    """phase2.steps=0: the report shows phase 1 as the fine-tune and compares it to scratch."""
    from types import SimpleNamespace

    from cnnlab.finetune.recipe import PhaseResult
    from cnnlab.finetune.report import write_report

    c = tiny(**{"phase2.steps": 0})
    phase1 = PhaseResult("phase1", {"accuracy": 0.8, "loss": 0.5}, 325, 77_000, {})
    scratch = SimpleNamespace(metrics={"accuracy": 0.6, "loss": 1.0}, early_stopping={})
    runs = {0: {"finetune": [phase1], "scratch": scratch, "probe": 0.7}}
    text = write_report(c, tmp_path, runs).read_text()
    assert "phases 1 + 2" not in text
    assert "| fine-tune, phase 1 (new head, frozen backbone) | 0.800 |" in text
    assert "+20.0 points on average, better on 1 of 1 seeds" in text
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert set(summary) == {"probe", "phase1", "scratch"}


def test_report_files_are_strict_json_and_one_seed_shows_no_spread(tmp_path):
    """results.json holds null, not NaN (the probe has no loss; a non-finite number anywhere);
    a table over one seed shows no '± 0.000'; equal arms read 'the same ... as'."""
    import json

    from cnnlab.finetune import report
    from cnnlab.records import write_json_atomic

    write_json_atomic(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None]}
    arms = {
        "probe": {"accuracy": 0.5},
        "phase1": {"accuracy": 0.7, "loss": 0.9},
        "finetune": {"accuracy": 0.8, "loss": 0.6},
        "scratch": {"accuracy": 0.8, "loss": 0.5},
    }
    one = {0: {**arms, "trainable": {}, "frozen": {}}}
    summary = report._summary(one)
    assert summary["probe"]["loss"] is None and summary["finetune"]["n"] == 1
    c = __import__("experiments.configs.finetune", fromlist=["x"]).get_config()
    table = "\n".join(report._tables(c, summary, one))
    assert "±" not in table and "| 0.800 | 0.600 | 1 |" in table
    assert "the same test accuracy as training" in "\n".join(report._finding(summary, one))
