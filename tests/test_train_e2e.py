"""End to end through `python -m experiments.train`: a run killed with SIGKILL and restarted with
the same command ends with exactly the parameters and metrics of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import entry
import jax
import numpy as np
import pytest
from entry import BASE, TINY, final_state, tiny
from test_reliability import snapshot

from cnnlab import train
from cnnlab.errors import CheckpointError, CnnlabError, NonFiniteLoss
from experiments import cli

ROOT = Path(__file__).resolve().parents[1]
# A small, fast run: a CIFAR ResNet-8 with a side head on the digits, checkpoint every 4 steps.
ARGS = [
    "--config=experiments/configs/base.py", "--config.train.steps=24",
    "--config.train.eval_every=4", "--config.train.log_every=2", "--config.data.batch_size=32",
    "--config.model.kwargs.depth=8", "--config.loss.side_taps=('stage1',)",
]  # fmt: skip


def command(workdir, *extra):
    """The command line and its environment (the session's data dir and caches, conftest)."""
    cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *ARGS, *extra]
    return cmd, dict(os.environ)


def run(workdir, *extra):
    cmd, env = command(workdir, *extra)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def wait_for(path_ready, proc, timeout=300):
    """Poll until `path_ready()` or the child exits (a crash fails at once, not after timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not path_ready():
        assert proc.poll() is None, f"the run exited with {proc.returncode} before the kill"
        time.sleep(0.05)


@pytest.mark.slow  # kills a real run: the full tier
def test_sigkill_and_resume_reaches_identical_result(tmp_path):
    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]

    cmd, env = command(tmp_path / "killed")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckpts = tmp_path / "killed" / "checkpoints"
    # kill once a checkpoint past step 4 is committed
    wait_for(lambda: [p for p in ckpts.glob("*") if p.name.isdigit() and int(p.name) >= 8], proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    assert killed_at < 24, "the run finished before it could be killed; lower the poll threshold"

    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1] == full.stdout.splitlines()[-1]  # final test metrics
    (s1, a), (s2, b) = final_state(tmp_path / "full"), final_state(tmp_path / "killed")
    assert s1 == s2 == 24
    jax.tree.map(np.testing.assert_array_equal, a, b)
    lines = [
        json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {"side/stage1/loss", "side/stage1/accuracy"} <= set(lines[-1])
    assert (tmp_path / "full" / "tensorboard").is_dir()


@pytest.mark.slow  # signals a real run: the full tier
def test_sigterm_stops_with_143_and_one_line_and_resumes_identically(tmp_path):
    """SIGTERM to `python -m experiments.train` once it trains: exit 143, one line on stderr
    naming the saved step, and the same command resumes to the uninterrupted run's result."""
    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    cmd, env = command(tmp_path / "cut")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    log = tmp_path / "cut" / "metrics.jsonl"
    wait_for(lambda: log.exists() and '"step": 6' in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("stopped by SIGTERM after step ") and "Traceback" not in err, err
    step = int(last.split("after step ")[1].split()[0])
    assert 6 <= step < 24 and (tmp_path / "cut" / "checkpoints" / str(step)).is_dir(), last
    resumed = run(tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1] == full.stdout.splitlines()[-1]
    (s1, a), (s2, b) = final_state(tmp_path / "full"), final_state(tmp_path / "cut")
    assert s1 == s2 == 24
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_rerun_of_finished_run_keeps_checkpoints_and_reports(tmp_path, saved_run):
    """The same command again on a finished run: nothing retrains or is rewritten, and it
    prints the same final metrics."""
    source, stdout = saved_run
    shutil.copytree(source, tmp_path / "w")
    before = snapshot(tmp_path / "w" / "checkpoints")
    again = entry.cli("experiments.train", f"--config={BASE}", f"--workdir={tmp_path / 'w'}",
                      *TINY)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[-1] == stdout.splitlines()[-1]
    assert snapshot(tmp_path / "w" / "checkpoints") == before


def test_checkpoint_from_another_model_is_a_clear_error_and_is_not_touched(tmp_path, saved_run):
    """In this process (the command line prints CheckpointErrors as tests/test_reliability.py
    checks)."""
    shutil.copytree(saved_run[0], tmp_path / "w")
    ckpt = tmp_path / "w" / "checkpoints"
    before = {p: p.stat().st_mtime for p in ckpt.rglob("*")}
    c = cli.config_from_args(
        f"--config={BASE}", *tiny("--config.train.steps=8", "--config.model.kwargs.depth=14")
    )
    with pytest.raises(CheckpointError) as caught:
        train.train(c, tmp_path / "w", progress=False)
    err = " ".join(str(caught.value).split())
    assert err.startswith("checkpoint") and "does not match this config" in err, err
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
        ("--config.loss.side_loss=kd", "config.loss.side_loss='kd' is not allowed"),
        ("--config.loss.side_temperature=0.0", "config.loss.side_temperature=0.0 must be > 0"),
        ("--config.loss.side_alpha=1.5", "config.loss.side_alpha=1.5 must be in [0, 1]"),
        (
            "--config.loss.side_taps=('stage1',) --config.loss.side_loss=distill "
            "--config.loss.side_hint_target=stage9",
            "side_hint_target: no feature named 'stage9' in CifarResNet",
        ),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, override, needle):
    """In this process, the config read as the command line reads it (one command-line case of
    each kind is in tests/test_reliability.py); nothing is written."""
    with pytest.raises(CnnlabError) as caught:
        config = cli.config_from_args(*ARGS, *override.split())
        train.train(config, tmp_path / "w", progress=False)
    assert needle in " ".join(str(caught.value).split())
    assert not (tmp_path / "w").exists()


def test_non_finite_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
    """lr 1e30 after a linear warm-up from 0: step 1 changes nothing (lr 0) and is saved; the
    next step diverges. The run stops naming that step and keeps step 1, finite."""
    c = cli.config_from_args(*ARGS, "--config.optim.lr=1e30", "--config.optim.warmup_steps=4",
                             "--config.train.eval_every=1")  # fmt: skip
    with pytest.raises(NonFiniteLoss) as caught:
        train.train(c, tmp_path / "w", progress=False)
    message = str(caught.value)
    assert message.startswith("non-finite loss") and "at step 2" in message, message
    kept = [int(p.name) for p in (tmp_path / "w" / "checkpoints").glob("*") if p.name.isdigit()]
    assert kept == [1]
    _, state = final_state(tmp_path / "w")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


@pytest.mark.slow  # a ResNet-110 compile: the full tier
def test_a_second_ctrl_c_during_the_first_compile_stops_at_once(tmp_path):
    """Ctrl-C twice while ResNet-110's first step compiles (about 13 s on a 2-core EPYC): the
    run ends at once with 130 and one line saying nothing is saved yet, before any step ran,
    not after the compile; the same command then trains from the start."""
    cmd, env = command(tmp_path / "w", "--config.model.kwargs.depth=110")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: (tmp_path / "w" / "config.json").exists(), proc)
    time.sleep(1.0)  # in the first step's compile
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (
        "stopped at once by a second Ctrl-C (SIGINT); kept: no checkpoint yet in "
        f"{tmp_path / 'w' / 'checkpoints'}; a save in progress is dropped; run the same command "
        "to resume"
    )
    assert "Traceback" not in err
    log = tmp_path / "w" / "metrics.jsonl"
    assert not log.exists() or '"step"' not in log.read_text()  # no step had finished


def test_a_resume_refuses_a_changed_recipe_unless_accepted(tmp_path, saved_run, capsys):
    """Resuming a run: more steps (or other log/keep settings) go on; another learning rate is
    one line naming the first different key, and nothing in the workdir changes; with
    accept_changes it continues on the new recipe and the old config.json is kept beside it."""
    shutil.copytree(saved_run[0], tmp_path / "w")
    w = tmp_path / "w"
    config = lambda *extra: cli.config_from_args(f"--config={BASE}", *tiny(*extra))
    before = snapshot(w)
    with pytest.raises(CnnlabError) as caught:
        train.train(config("--config.train.steps=6", "--config.optim.lr=0.05"), w, progress=False)
    assert str(caught.value) == (
        f"{w} was trained to step 4 with another recipe: optim.lr is 0.1 there and 0.05 now "
        "(only train.steps, train.log_every, train.keep_checkpoints, data.data_dir may change on "
        "a resume); use another --workdir, set it back, or pass --accept_changes to continue "
        "this run on the new recipe"
    )
    assert snapshot(w) == before
    longer = train.train(config("--config.train.steps=6", "--config.train.log_every=2"), w,
                         progress=False)  # fmt: skip
    assert final_state(w)[0] == 6 and longer.metrics
    changed = config("--config.train.steps=8", "--config.optim.lr=0.05")
    train.train(changed, w, progress=False, accept_changes=True)
    assert (
        "resumes at step 6 on a changed recipe (optim.lr: 0.1 -> 0.05)" in capsys.readouterr().err
    )
    assert json.loads((w / "config.step6.json").read_text())["optim"]["lr"] == 0.1
    assert json.loads((w / "config.json").read_text())["optim"]["lr"] == 0.05
    assert final_state(w)[0] == 8


class WaitsEveryStep:
    """A hook that wants each step's own state: the loop then reads every step, as it did
    before it dispatched ahead. It records what it sees."""

    def __init__(self):
        self.losses = []

    def __call__(self, step, state, metrics):
        self.losses.append((step, float(metrics["total_loss"])))


@pytest.mark.parametrize("lr", ["0.1", "1e20"])  # 1e20: non-finite at step 3, between reads
def test_dispatching_ahead_gives_the_numbers_of_a_loop_that_waits(tmp_path, lr, capsys):
    """The loop reads the device at log and eval steps only; the same run with a hook that
    makes it wait every step has the same metrics.jsonl, the same checkpoints bit for bit, and,
    when the loss turns non-finite between reads, the same error at the same step."""
    extra = ("--config.train.steps=12", "--config.train.eval_every=6",
             "--config.train.log_every=4", f"--config.optim.lr={lr}")  # fmt: skip
    config = cli.config_from_args(f"--config={BASE}", *tiny(*extra))
    outcomes = []
    for name, hook in (("ahead", None), ("waits", WaitsEveryStep())):
        try:
            train.train(config, tmp_path / name, progress=False, hook=hook)
            outcomes.append(None)
        except NonFiniteLoss as e:
            outcomes.append(str(e).replace(name, "W"))
    assert outcomes[0] == outcomes[1]
    if lr == "1e20":
        assert outcomes[0].startswith("non-finite loss (nan) in training at step 3;")
    logs = [(tmp_path / n / "metrics.jsonl").read_text() for n in ("ahead", "waits")]
    assert logs[0] == logs[1] and (logs[0] or lr == "1e20")  # nothing logged before step 3
    kept = [sorted(p.name for p in (tmp_path / n / "checkpoints").iterdir()) for n in
            ("ahead", "waits")]  # fmt: skip
    assert kept[0] == kept[1]
    if kept[0]:
        (s1, a), (s2, b) = final_state(tmp_path / "ahead"), final_state(tmp_path / "waits")
        assert s1 == s2
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_runs_of_one_model_and_recipe_trace_and_compile_once(tmp_path):
    """A second seed of a model and recipe (a grid's next cell) traces and compiles nothing
    (cnnlab.train.compiled), and a run whose executables come from an earlier run has the
    numbers of that earlier run: seed 0, seed 1, seed 0 again."""
    from jax._src import dispatch

    extra = ("--config.train.steps=6", "--config.train.eval_every=3",
             "--config.train.train_subset=32", "--config.train.precise_bn=True")  # fmt: skip
    configs = [cli.config_from_args(f"--config={BASE}", *tiny(*extra, f"--config.seed={s}"))
               for s in (0, 1, 0)]  # fmt: skip
    events: list[str] = []
    count = lambda event, duration, **kw: events.append(event)
    watched = (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT)
    counts = []
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for i, config in enumerate(configs):
            events.clear()
            train.train(config, tmp_path / str(i), progress=False)
            counts.append(sum(e in watched for e in events))
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert counts[0] > 0 and counts[1:] == [0, 0], counts
    logs = [(tmp_path / str(i) / "metrics.jsonl").read_text() for i in range(3)]
    assert logs[0] == logs[2] != logs[1]
    (s0, a), (s2, b) = final_state(tmp_path / "0"), final_state(tmp_path / "2")
    assert s0 == s2 == 6
    jax.tree.map(np.testing.assert_array_equal, a, b)
