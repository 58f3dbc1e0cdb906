"""config.batch_seeds: the seeds of a configuration trained together (one vmapped step over
stacked states) give each cell what its separate run gives, and a group killed with SIGKILL
resumes from its checkpoint.

Tolerance: a vmapped step is the same arithmetic with a leading seed axis, but XLA may order
float reductions differently (by CPU model too), and 24 SGD steps amplify the rounding. Measured
(largest deviation from the separate runs over the grid's two finished cells): on one 2-core CPU
parameters 9.4e-6 absolute, metrics 1.7e-6 relative, per-layer gradient norms 3e-7; on a 2-core
AMD EPYC, where one seed's float path diverged, parameters 1.7e-3, losses 1.2e-3, per-layer
gradient norms 4e-3, one accuracy by one example. Allowed (see the constants below): bounds above
the worst measured that still tell two seeds apart."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from entry import final_state

from cnnlab import ablation
from cnnlab.data import digits
from cnnlab.errors import ConfigError
from experiments.configs import ablate_default

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
GRID = (("model.kwargs.depth", (8,)), ("optim.lr", (0.05, 1e30)), ("seed", (0, 1)))
SETTINGS = {  # a small grid: ResNet-8, 24 steps, an eval and a checkpoint every 4
    "train.steps": STEPS, "train.eval_every": 4, "train.log_every": 2, "train.train_subset": 64,
    "data.batch_size": 32, "optim.warmup_steps": 2, "grad_norm_steps": (0, 8),
    # lr scaled to the batch (0.05 at 128 -> 0.0125), no zero-init: chaos stays small in 24 steps
    "optim.lr_batch": 128, "model.kwargs.zero_init_residual": False,
}  # fmt: skip


# An accuracy of two computations that agree to float rounding may still differ by one example
# where an argmax flips (seen on an AMD EPYC: 0.40404 vs 0.40741 of 297 test images): the
# tolerance is one example of the set that accuracy is taken over.
def one_example(key: str, split: str = "test") -> dict:
    """abs tolerance of one example: the digits' 297 test images, the 64-image train subset
    (train.train_subset), or a training batch of 32 (the 'train' split of the curves)."""
    if key.startswith("train_subset/"):
        n = SETTINGS["train.train_subset"]
    elif split == "train":
        n = SETTINGS["data.batch_size"]
    else:
        n = 1797 - digits.N_TRAIN
    return dict(abs=1 / n + 1e-9)


# Losses and parameters: measured worst batched-vs-separate differences after 24 steps were
# 1.7e-6 relative (metrics) and 9.4e-6 (parameters) on one 2-core CPU, and 1.2e-3 relative
# (a subset loss) and 1.7e-3 (parameters) on an AMD EPYC, where one seed's float paths
# diverged at some step and training amplified it. Separate seeds differ by >= 8e-3 relative
# in every loss here and by ~0.1 in parameters, so these bounds still tell seeds apart.
# Gradient norms: 4e-3 relative at step 8 on the AMD EPYC; seeds differ by far more.
LOSS_REL, PARAM_ABS, GRAD_REL = 3e-3, 1e-2, 2e-2


def config(batch_seeds: bool, grid=GRID):
    c = ablation.apply(ablate_default.get_config(), SETTINGS)
    c.grid, c.when, c.batch_seeds, c.claims = grid, (), batch_seeds, ()
    return c


def final_params(run_dir: Path):
    step, state = final_state(run_dir)
    return step, state["params"]


def assert_same_cell(a: ablation.CellResult, b: ablation.CellResult):
    assert (a.name, a.status, a.params, a.macs) == (b.name, b.status, b.params, b.macs)
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        tol = one_example(k) if k.endswith("accuracy") else dict(rel=LOSS_REL, abs=1e-6)
        assert b.metrics[k] == pytest.approx(a.metrics[k], **tol), k
    assert b.train_loss == pytest.approx(a.train_loss, rel=LOSS_REL)
    assert a.grad_norms.keys() == b.grad_norms.keys()
    for step in a.grad_norms:
        names = [p for p, _ in a.grad_norms[step]]
        assert names == [p for p, _ in b.grad_norms[step]]
        np.testing.assert_allclose([v for _, v in b.grad_norms[step]],
                                   [v for _, v in a.grad_norms[step]], rtol=GRAD_REL)  # fmt: skip
    assert b.sparsity == pytest.approx(a.sparsity, abs=1e-3)
    assert [(m["split"], m["step"]) for m in b.curves] == [
        (m["split"], m["step"]) for m in a.curves
    ]
    for x, y in zip(a.curves, b.curves, strict=True):
        for k in x.keys() - {"split"}:
            tol = dict(rel=GRAD_REL if k == "grad_norm" else LOSS_REL, abs=1e-6)
            if k.endswith("accuracy"):
                tol = one_example(k, x["split"])
            assert y[k] == pytest.approx(x[k], nan_ok=True, **tol), (x["step"], k)


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """The same grid run with separate cells and with batched seeds (in-process, one data dir)."""
    root = tmp_path_factory.mktemp("batched")
    # lr 1e30 is left out here: its separate runs fail (tests/test_ablation.py), nothing
    # to compare but that, which the batched grid shows for itself
    good = tuple((k, (0.05,) if k == "optim.lr" else v) for k, v in GRID)
    separate = ablation.run_grid(config(False, good), root / "separate", progress=False)
    batched = ablation.run_grid(config(True), root / "batched", progress=False)
    return root, separate, batched


@pytest.mark.slow  # two grids trained (shared with the kill test below): full tier
def test_batched_seeds_give_each_cell_its_separate_result(grids):
    root, separate, batched = grids
    by_name = {r.name: r for r in batched}
    for r in batched:  # lr 1e30: non-finite, as in its separate run; the other group went on
        assert r.done == (r.overrides["optim.lr"] == 0.05)
        assert r.done or "non-finite" in r.reason
    for a in separate:
        b = by_name[a.name]
        assert a.done
        assert_same_cell(a, b)
        sa, pa = final_params(root / "separate" / "cells" / a.name / "run")
        sb, pb = final_params(root / "batched" / "cells" / b.name / "run")
        assert sa == sb == STEPS  # each seed's final state, where a separate run keeps it
        # the same files and checkpoint steps (the last N and the best) as the separate run
        run_a = root / "separate" / "cells" / a.name / "run"
        assert run_files(run_a) == run_files(root / "batched" / "cells" / b.name / "run")
        diffs = jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), pa, pb))
        assert max(diffs) < PARAM_ABS
    assert sum(r.done for r in batched) == 2
    # seeds 0 and 1 of each configuration trained as one group, checkpointed together
    groups = sorted(p.name for p in (root / "batched" / "batched").iterdir())
    assert groups == ["depth=8,lr=0.05,seed=0+1", "depth=8,lr=1e+30,seed=0+1"]
    again = ablation.run_grid(config(True), root / "batched", progress=False)
    assert [r for r in again if r.done] == [r for r in batched if r.done]  # skipped, unchanged


def batched_grid_args(workdir: Path) -> list[str]:
    """`python -m experiments.ablate` arguments: the good configuration's two seeds, batched."""
    grid = "(('model.kwargs.depth',(8,)),('optim.lr',(0.05,)),('seed',(0,1)))"
    return [f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in SETTINGS.items()),
            f"--config.grid={grid}", "--config.when=()", "--config.batch_seeds=True",
            "--config.claims=()"]  # fmt: skip


def assert_rerun_resumes_to(batched, args: list[str], workdir: Path) -> None:
    """The killed grid's command again (the session's data dir and caches, conftest): it ends
    with every finished cell of the uninterrupted batched grid, one record per step."""
    cmd = [sys.executable, "-m", "experiments.ablate", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = {r.name: r for r in ablation.load_results(workdir)}
    expected = [r for r in batched if r.done]
    assert sorted(resumed) == [r.name for r in expected]
    for r in expected:
        assert_same_cell(r, resumed[r.name])
        steps = [(m["split"], m["step"]) for m in resumed[r.name].curves]
        assert len(steps) == len(set(steps))  # one record per step after the resume
        lines = (workdir / "cells" / r.name / "run" / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == len({(json.loads(x)["split"], json.loads(x)["step"]) for x in lines})


@pytest.mark.slow  # kills a real grid: the full tier
def test_a_killed_batched_grid_resumes_to_the_same_results(grids, tmp_path):
    _, _, batched = grids
    workdir = tmp_path / "w"
    args = batched_grid_args(workdir)
    cmd = [sys.executable, "-m", "experiments.ablate", *args]
    env = dict(os.environ)  # the session's data dir and caches (conftest)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckpts = workdir / "batched" / "depth=8,lr=0.05,seed=0+1" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not [p for p in ckpts.glob("*") if p.name in ("8", "12")]:
        assert proc.poll() is None, f"the grid exited with {proc.returncode} before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    assert killed_at < STEPS, "the group finished before it could be killed"
    assert not list(workdir.glob("cells/*/result.json"))
    assert_rerun_resumes_to(batched, args, workdir)


def test_batch_seeds_refuses_early_stopping_and_non_booleans():
    c = config(True)
    c.train.patience, c.data.val_per_class = 2, 5
    with pytest.raises(ConfigError, match="batch_seeds=True cannot train with early stopping"):
        ablation.check_grid(c)
    c = config(True)
    with c.ignore_type():
        c.batch_seeds = 1
    with pytest.raises(ConfigError, match=r"config\.batch_seeds=1 must be True or False"):
        ablation.check_grid(c)


def run_files(run_dir: Path) -> list[str]:
    """A run directory's kinds of files, relative: TensorBoard event files and orbax's data
    files by kind (their names hold a time stamp and host, or a random hash, and orbax splits
    the data into as many files as its writers produced)."""
    names = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    names = {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents", n) for n in names}
    return sorted({re.sub(r"/d/[0-9a-f]{32}$", "/d/*", n) for n in names})


def test_a_seed_that_turns_non_finite_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    """Seeds 0 and 1 batched, seed 1's third evaluation (step 6) NaN: seed 1 stops there naming
    its own last good checkpoint, which survives while the group trains on to step 8; seed 0's
    run directory holds the same files and checkpoint steps as its separate run."""
    from entry import BASE, tiny

    from cnnlab import train
    from cnnlab.train import evaluation
    from experiments.cli import config_from_args

    def cfg(seed):
        return config_from_args(f"--config={BASE}", *tiny(
            "--config.train.steps=8", "--config.train.keep_checkpoints=2", f"--config.seed={seed}",
        ))  # fmt: skip

    real, calls = evaluation.Evaluator.at, {0: 0, 1: 0}

    def at(self, state, last):
        test, val = real(self, state, last)
        calls[self.spec.seed] += 1
        if self.spec.seed == 1 and calls[1] == 3:
            test = {**test, "loss": float("nan")}
        return test, val

    monkeypatch.setattr(evaluation.Evaluator, "at", at)
    dirs = [tmp_path / "batched" / f"seed{s}" for s in (0, 1)]
    out = train.train_seeds([cfg(0), cfg(1)], dirs, tmp_path / "group", progress=False)
    assert isinstance(out[0], train.TrainResult) and out[0].lanes == 2
    assert isinstance(out[1], train.NonFiniteLoss)
    assert "loss (nan) in evaluation at step 6" in str(out[1])
    assert f"(step 4) is kept in {dirs[1] / 'checkpoints'}" in str(out[1])
    steps = lambda d: sorted(int(p.name) for p in (d / "checkpoints").iterdir() if p.name.isdigit())
    assert steps(tmp_path / "group") == [6, 8]  # the group trained on past seed 1's stop
    kept = steps(dirs[1])
    assert kept[-1] == 4 and len(kept) == 2  # the last good (step 4) survived to the end
    separate = train.train(cfg(0), tmp_path / "separate", progress=False)
    assert steps(dirs[0]) == steps(tmp_path / "separate")  # last 2 and the best: the same steps
    assert run_files(dirs[0]) == run_files(tmp_path / "separate")
    assert out[0].metrics.keys() == separate.metrics.keys()
    # a re-run of the finished group trains nothing and returns the same results
    again = train.train_seeds([cfg(0), cfg(1)], dirs, tmp_path / "group", progress=False)
    assert again[0].metrics == out[0].metrics and str(again[1]) == str(out[1])


def test_sigterm_saves_every_seed_and_the_group_and_resumes_identically(tmp_path):
    """Seeds trained together, SIGTERM during the first step: each seed's run and the group save
    step 1; the same call resumes and ends with exactly the uninterrupted group's parameters."""
    from entry import BASE, TINY

    from cnnlab import train
    from cnnlab.train.preempt import Preempted
    from experiments import cli

    configs = [cli.config_from_args(f"--config={BASE}", *TINY, f"--config.seed={s}")
               for s in (0, 1)]  # fmt: skip

    def run(name, hooks=None):
        out = tmp_path / name
        return train.train_seeds(configs, [out / "s0", out / "s1"], out / "group",
                                 progress=False, hooks=hooks)  # fmt: skip

    run("full")

    def hook(step, state, metrics):
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match=r"after step 1 of 4: checkpoint 1 saved in .* and its 1"):
        run("cut", hooks=[hook, None])
    for d in ("s0", "s1", "group"):
        assert (tmp_path / "cut" / d / "checkpoints" / "1").is_dir(), d
    run("cut")
    for d in ("s0", "s1"):
        (s1, a), (s2, b) = final_params(tmp_path / "full" / d), final_params(tmp_path / "cut" / d)
        assert s1 == s2 == 4
        jax.tree.map(np.testing.assert_array_equal, a, b)


KILL_IN_SAVE = """
import os, runpy, signal, sys
from cnnlab.train import batched
real = batched.Group.save
def save(self, step, state):
    real(self, step, state)  # orbax's save of the group is in flight (asynchronous) ...
    if step == 8:  # ... when the process dies; what the checkpoint folder holds at that moment:
        seen = sorted(p.name for p in self.ckpt.directory.iterdir())
        open(os.environ["CNNLAB_TEST_SEEN"], "w").write("\\n".join(seen))
        os.kill(os.getpid(), signal.SIGKILL)
batched.Group.save = save
sys.argv = ["experiments.ablate", *sys.argv[1:]]
runpy.run_module("experiments.ablate", run_name="__main__")
"""


@pytest.mark.slow  # kills a real grid: the full tier
def test_a_batched_group_killed_during_its_save_resumes(grids, tmp_path):
    """SIGKILL right after the group's save of step 8 has started: the re-run resumes from the
    newest complete step and every cell ends as the uninterrupted batched grid's."""
    _, _, batched = grids
    workdir = tmp_path / "w"
    args = batched_grid_args(workdir)
    seen = tmp_path / "seen.txt"
    killed = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, *args], cwd=ROOT,
                            env={**os.environ, "CNNLAB_TEST_SEEN": str(seen)},
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    at_kill = seen.read_text().split()
    # the kill came during the save: step 8 was not finalised (orbax writes a temporary
    # folder and renames it to '8' when the save completes)
    assert "8" not in at_kill and "4" in at_kill, at_kill
    assert not list(workdir.glob("cells/*/result.json"))
    assert_rerun_resumes_to(batched, args, workdir)
