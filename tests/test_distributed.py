"""Data parallelism: the same run on 1 and 8 (forced CPU) devices, and on 2 processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnnlab import distributed, train

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--config=experiments/configs/base.py", "--config.train.steps=4",
    "--config.train.eval_every=2", "--config.train.log_every=2", "--config.data.batch_size=32",
    "--config.model.kwargs.depth=8", "--config.optim.schedule=constant", "--config.optim.lr=0.02",
]  # fmt: skip


def env(tmp_path, devices: int, **extra) -> dict:
    return {
        **os.environ,
        "CNNLAB_CACHE_DIR": str(tmp_path / "cache"),
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices),
        **extra,
    }


def run_train(workdir, environ, *extra):
    cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *ARGS, *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def saved(workdir):
    """Latest step, state and eval metrics, read onto this process's one device."""
    ckpt = train.Checkpointer(Path(workdir) / "checkpoints")
    step = ckpt.latest_step()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
        ckpt.manager.item_metadata(step)["state"],
    )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    out = ckpt.manager.restore(step, args=args)
    ckpt.close()
    return step, out["state"], out["meta"]["metrics"]


def assert_same_run(a, b):
    step_a, state_a, metrics_a = saved(a)
    step_b, state_b, metrics_b = saved(b)
    assert step_a == step_b == 4
    for x, y in zip(jax.tree.leaves(state_a["params"]), jax.tree.leaves(state_b["params"]),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    for x, y in zip(jax.tree.leaves(state_a["batch_stats"]),
                    jax.tree.leaves(state_b["batch_stats"]), strict=True):  # fmt: skip
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)  # global (sync) BN statistics
    assert metrics_a["accuracy"] == pytest.approx(metrics_b["accuracy"], abs=1 / 297 + 1e-9)
    assert metrics_a["loss"] == pytest.approx(metrics_b["loss"], rel=1e-3)


@pytest.mark.slow  # separate processes and devices: the full tier
def test_eight_devices_match_one_device(tmp_path):
    one = run_train(tmp_path / "one", env(tmp_path, 1))
    finish(one)
    eight = run_train(tmp_path / "eight", env(tmp_path, 8))
    finish(eight)
    assert_same_run(tmp_path / "one", tmp_path / "eight")
    # the persistent compilation cache is on by default ($CNNLAB_CACHE_DIR/jax here)
    assert len(list((tmp_path / "cache" / "jax").iterdir())) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_envs(tmp_path, devices: int) -> list[dict]:
    """Environments of processes 0 and 1 of one jax.distributed job on this machine."""
    address = f"127.0.0.1:{free_port()}"
    cluster = {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2"}
    return [env(tmp_path, devices, **cluster, JAX_PROCESS_ID=str(i)) for i in range(2)]


@pytest.mark.slow  # separate processes and devices: the full tier
def test_two_processes_match_one_process(tmp_path):
    """Two processes on this machine (2 CPU devices each) through jax.distributed: per-process
    data slices, global batches, and one multi-process orbax checkpoint."""
    procs = [run_train(tmp_path / "multi", e) for e in two_process_envs(tmp_path, 2)]
    outs = [finish(p) for p in procs]
    assert "final test metrics" in outs[0]
    finish(run_train(tmp_path / "single", env(tmp_path, 4)))
    assert_same_run(tmp_path / "single", tmp_path / "multi")
    config = json.loads((tmp_path / "multi" / "config.json").read_text())
    assert config["data"]["batch_size"] == 32


@pytest.mark.slow  # separate processes and devices: the full tier
def test_ablation_grid_on_two_processes(tmp_path):
    """experiments.ablate starts jax.distributed before its first JAX call (validating the grid
    asks for the device count), and process 0 alone writes the report."""
    grid = "(('model.kwargs.depth',(8,)),('seed',(0,)))"
    cmd = [sys.executable, "-m", "experiments.ablate", f"--workdir={tmp_path / 'g'}",
           "--config.train.steps=2", "--config.train.eval_every=2", "--config.train.log_every=1",
           "--config.grad_norm_steps=(0,)", f"--config.grid={grid}",
           "--config.claims=()"]  # fmt: skip
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for e in two_process_envs(tmp_path, 1)
    ]
    outs = [finish(p) for p in procs]
    assert "## Claims" not in outs[1] and "wrote results.csv" in outs[0]
    result = json.loads((tmp_path / "g" / "cells" / "depth=8,seed=0" / "result.json").read_text())
    assert result["status"] == "done"


@pytest.mark.slow  # separate processes: the full tier
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
    """SIGTERM to process 1 only (a spot host's notice reaches hosts at different times): every
    process learns it at the same step (an all-gathered flag), both save that step in one
    multi-process checkpoint and exit 143; the same commands resume, ending with exactly the
    parameters of an uninterrupted two-process run."""
    import signal
    import time

    longer = ["--config.train.steps=40", "--config.train.eval_every=20",
              "--config.train.log_every=2"]  # fmt: skip
    full = [run_train(tmp_path / "full", e, *longer) for e in two_process_envs(tmp_path, 1)]
    for p in full:
        finish(p)
    envs = two_process_envs(tmp_path, 1)
    procs = [run_train(tmp_path / "cut", e, *longer) for e in envs]
    log = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and '"step": 6' in log.read_text()):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    lasts = [[x for x in e.splitlines() if x.strip()][-1] for e in errs]
    steps = {int(x.split("after step ")[1].split()[0]) for x in lasts}
    assert all(x.startswith("stopped by SIGTERM after step ") for x in lasts), lasts
    (step,) = steps  # the same step on both processes
    assert 6 <= step < 40 and (tmp_path / "cut" / "checkpoints" / str(step)).is_dir(), lasts
    resumed = [run_train(tmp_path / "cut", e, *longer) for e in two_process_envs(tmp_path, 1)]
    for p in resumed:
        finish(p)
    (s1, a, _), (s2, b, _) = saved(tmp_path / "full"), saved(tmp_path / "cut")
    assert s1 == s2 == 40
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["batch_stats"], b["batch_stats"])


def test_initialize_modes(monkeypatch):
    assert distributed.initialize("off") is False
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    for var in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "CNNLAB_DISTRIBUTED"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize("auto") is False  # nothing configured or detected
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES / JAX_PROCESS_ID are not"):
        distributed.initialize("auto")
    with pytest.raises(ValueError, match="--distributed='maybe' is not allowed"):
        distributed.initialize("maybe")
