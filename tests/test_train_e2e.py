"""End to end through `python -m experiments.train`: a run killed with SIGKILL and restarted with
the same command ends with exactly the parameters and metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = Path(__file__).resolve().parents[1]
# A small, fast run: a CIFAR ResNet-8 with a side head on the digits, checkpoint every 4 steps.
ARGS = [
    "--config=experiments/configs/base.py", "--config.train.steps=24",
    "--config.train.eval_every=4", "--config.train.log_every=2", "--config.data.batch_size=32",
    "--config.model.kwargs.depth=8", "--config.loss.side_taps=('stage1',)",
]  # fmt: skip


def command(workdir, data_dir, *extra):
    env = {**os.environ, "CNNLAB_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *ARGS, *extra]
    return cmd, env


def run(workdir, data_dir, *extra):
    cmd, env = command(workdir, data_dir, *extra)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def final_params(workdir):
    mngr = ocp.CheckpointManager(Path(workdir) / "checkpoints")
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return step, state


def test_sigkill_and_resume_reaches_identical_result(tmp_path):
    data_dir = tmp_path / "data"
    full = run(tmp_path / "full", data_dir)
    assert full.returncode == 0, full.stderr[-3000:]

    cmd, env = command(tmp_path / "killed", data_dir)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a checkpoint past step 4 is committed
        done = [p for p in ckpts.glob("*") if p.name.isdigit() and int(p.name) >= 8]
        if done:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    assert killed_at < 24, "the run finished before it could be killed; lower the poll threshold"

    resumed = run(tmp_path / "killed", data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1] == full.stdout.splitlines()[-1]  # final test metrics
    (s1, a), (s2, b) = final_params(tmp_path / "full"), final_params(tmp_path / "killed")
    assert s1 == s2 == 24
    jax.tree.map(np.testing.assert_array_equal, a, b)
    lines = [
        json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {"side/stage1/loss", "side/stage1/accuracy"} <= set(lines[-1])
    assert (tmp_path / "full" / "tensorboard").is_dir()


def test_rerun_of_finished_run_keeps_checkpoints_and_reports(tmp_path):
    data_dir = tmp_path / "data"
    relative = os.path.relpath(tmp_path / "w", ROOT)  # as the README writes it: runs/base
    first = run(relative, data_dir, "--config.train.steps=4")
    assert first.returncode == 0, first.stderr[-2000:]
    before = sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir())
    again = run(tmp_path / "w", data_dir, "--config.train.steps=4")
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir()) == before


def test_checkpoint_from_another_model_is_a_clear_error_and_is_not_touched(tmp_path):
    data_dir = tmp_path / "data"
    assert run(tmp_path / "w", data_dir, "--config.train.steps=4").returncode == 0
    ckpt = tmp_path / "w" / "checkpoints"
    before = {p: p.stat().st_mtime for p in ckpt.rglob("*")}
    out = run(tmp_path / "w", data_dir, "--config.train.steps=8", "--config.model.kwargs.depth=14")
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("error: checkpoint") and "does not match this config" in err
    assert "Traceback" not in out.stderr
    assert {p: p.stat().st_mtime for p in ckpt.rglob("*")} == before


@pytest.mark.parametrize(
    "override,needle",
    [
        ("--config.model.name=resnet21", "config.model.name='resnet21' is not allowed"),
        ("--config.model.kwargs.depth=21", "depth=21 is not 6n+2"),
        ("--config.data.batch_size=0", "config.data.batch_size=0 must be >= 1"),
        ("--config.loss.side_taps=('stage7',)", "side_taps: no feature named ['stage7']"),
        ("--config.optim.schedule=exp", "config.optim.schedule='exp' is not allowed"),
        ("--config.optim.warmup_steps=-1", "config.optim.warmup_steps=-1 must be >= 0 (0 = off)"),
        ("--config.data.name=cifar10", "dataset 'cifar10' is not prepared"),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, override, needle):
    out = run(tmp_path / "w", tmp_path / "data", override)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert needle in out.stderr.strip().splitlines()[-1]


def test_non_finite_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
    out = run(tmp_path / "w", tmp_path / "data", "--config.optim.lr=1e30",
              "--config.optim.schedule=constant", "--config.train.eval_every=1")  # fmt: skip
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("error: non-finite loss") and "at step" in err
    step = int(err.split("at step ")[1].split(";")[0])
    kept = [int(p.name) for p in (tmp_path / "w" / "checkpoints").glob("*") if p.name.isdigit()]
    assert all(s < step for s in kept)
    if kept:  # every kept checkpoint holds finite parameters
        _, state = final_params(tmp_path / "w")
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_empty_workdir_is_an_error_and_writes_nothing(tmp_path):
    env = {**os.environ, "CNNLAB_DATA_DIR": str(tmp_path / "data"), "JAX_PLATFORMS": "cpu"}
    config = "--config=" + str(ROOT / "experiments/configs/base.py")
    cmd = [sys.executable, "-m", "experiments.train", config, "--workdir="]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --workdir is empty; pass the directory for checkpoints and logs"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoints, config or logs
