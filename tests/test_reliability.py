"""Bad input through the real entry points (subprocesses): every failure is one line `error: ...`
naming the problem, exit status != 0, no traceback, and an existing workdir's files are
byte-identical afterwards. Damaged checkpoints fall back to the newest step that restores; a full
disk stops the run with the last complete checkpoint intact; metrics.jsonl stays strict JSON."""

import contextlib
import json
import shutil
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest
from entry import BASE, ROOT, TINY, cli, final_state, tiny

from cnnlab.errors import ConfigError


@pytest.fixture
def saved(saved_run):
    """The session's finished tiny run (conftest; checkpoints at steps 2 and 4): read-only."""
    return saved_run[0]


def assert_one_line_error(out, *fragments, alone=True):
    """Exit != 0, no traceback, and the last line of stderr the only `error: ...` line, holding
    every fragment; `alone`: nothing else on stderr (the run never started)."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), out.stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, out.stderr[-3000:]
    assert len(lines) == 1 or not alone, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON (a bare NaN or Infinity fails)."""

    def reject(name):
        raise ValueError(f"not JSON: {name}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


@pytest.fixture
def configs(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n    pass\n")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    return {"broken": broken, "empty": empty}


TRAIN_CASES = {  # extra args -> fragments of the one error line
    "unknown key": (["--config.train.nosuch=1"], ["--config.train.nosuch", "no such key"]),
    "typo'd key": (["--config.trian.steps=3"], ["did you mean --config.train.steps"]),
    "model field type": (["--config.model.kwargs.width=abc"], ["model.kwargs.width='abc'"]),
    "unknown model field": (["--config.model.kwargs.nosuch=1"], ["does not take", "nosuch"]),
    "flag value type": (["--config.train.steps=many"], ["--config.train.steps=many"]),
    "log_every 0": (["--config.train.log_every=0"], ["config.train.log_every=0 must be >= 1"]),
    "nan weight decay": (["--config.optim.weight_decay=nan"], ["weight_decay=nan", "finite"]),
    "nan lr": (["--config.optim.lr=nan"], ["config.optim.lr=nan"]),
    "negative weight decay": (["--config.optim.weight_decay=-0.5"], ["weight_decay=-0.5"]),
    "label smoothing 2": (["--config.loss.label_smoothing=2.0"], ["label_smoothing=2.0"]),
    "best metric": (["--config.train.best_metric=nope"], ["best_metric='nope'"]),
    "classes": (["--config.data.classes=abc"], ["config.data.classes"]),
    "image size": (["--config.data.image_size=-4"], ["config.data.image_size=-4"]),
    "zero-size images": (
        ["--config.data.synthetic.image_shape=(0,8,3)"],
        ["config.data.synthetic.image_shape=(0, 8, 3)"],
    ),
    "dataset typo": (["--config.data.name=cifar1O"], ["'cifar1O'", "did you mean 'cifar10'"]),
    "data dir": (
        ["--config.data.name=mnist", "--config.data.data_dir=/nonexistent/data"],
        ["'mnist' is not prepared", "/nonexistent/data", "cnnlab.data.prepare mnist"],
    ),
    "depth rule": (["--config.model.kwargs.depth=9"], ["6n+2"]),
}


def error_in_process(call, *args) -> str:
    """What the entry point would print for `call(config)` in this process: the config read from
    `--config=... --config.KEY=...` flags exactly as the command line reads it (cli.
    config_from_args), the failure a CnnlabError, and its message joined into the one line
    `cli.fail` prints. The command-line tests below check that printing itself."""
    from cnnlab.errors import CnnlabError
    from experiments import cli

    with pytest.raises(CnnlabError) as caught:
        call(cli.config_from_args(*args))
    return " ".join(str(caught.value).split())


def train_error(workdir, *args) -> str:
    from cnnlab import train

    run = lambda c: train.train(c, workdir, progress=False)
    return error_in_process(run, f"--config={BASE}", *tiny(*args))


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input_is_one_line_and_changes_nothing(saved, case):
    args, fragments = TRAIN_CASES[case]
    before = snapshot(saved)
    line = train_error(saved, *args)
    assert all(fragment in line for fragment in fragments), line
    assert snapshot(saved) == before


# The command line itself, once per kind of failure: a flag absl rejects, a config value
# train.validate rejects, a data path, each one line with exit status 1 and files unchanged.
COMMAND_LINE_CASES = ["flag value type", "nan lr", "data dir"]


@pytest.mark.parametrize("case", COMMAND_LINE_CASES)
def test_train_bad_input_on_the_command_line_is_one_line(saved, case):
    args, fragments = TRAIN_CASES[case]
    before = snapshot(saved)
    out = cli("experiments.train", f"--config={BASE}", f"--workdir={saved}", *tiny(*args))
    assert_one_line_error(out, *fragments)
    assert out.returncode == 1
    assert snapshot(saved) == before


@pytest.mark.parametrize(
    "which, fragments",
    [
        ("missing", ["--config=", "no such file"]),
        ("broken", ["broken.py: syntax error at line 1"]),
        ("empty", ["empty.py defines no get_config()"]),
    ],
)
def test_config_files_that_do_not_load_are_named(tmp_path, configs, which, fragments):
    path = configs.get(which, tmp_path / "missing.py")
    out = cli("experiments.train", f"--config={path}", f"--workdir={tmp_path / 'w'}")
    assert_one_line_error(out, *fragments)
    assert not (tmp_path / "w").exists()


def test_workdir_errors_write_nothing(tmp_path, monkeypatch):
    from cnnlab import distributed
    from experiments import runtime

    (tmp_path / "cwd").mkdir()
    out = cli("experiments.train", f"--config={ROOT / BASE}", "--workdir=", *TINY,
              cwd=tmp_path / "cwd")  # fmt: skip
    assert_one_line_error(out, "--workdir is empty; pass the directory for checkpoints and logs")
    assert list((tmp_path / "cwd").iterdir()) == []  # no checkpoints, config or logs
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        runtime.workdir(str(a_file / "run"))
    assert a_file.read_text() == "keep me"
    # the distributed start-up, configured half-way: an error before anything is written
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES"):
        distributed.initialize("auto")


def test_debug_shows_the_traceback(saved):
    out = cli("experiments.train", f"--config={BASE}", f"--workdir={saved}", *TINY,
              "--config.optim.lr=nan", env={"CNNLAB_DEBUG": "1"})  # fmt: skip
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


ABLATE = "experiments/configs/ablate_default.py"
ABLATE_CASES = {
    "grid not axes": (["--config.grid=5"], ["config.grid must be"]),
    "empty axis": (["--config.grid=(('seed', ()),)"], ["axis 'seed' has no values"]),
    "bad cell value": (
        ["--config.grid=(('model.kwargs.depth', (8, 'abc')),)"],
        ["grid cell depth=abc", "model.kwargs.depth='abc'"],
    ),
    "unknown grid key": (["--config.grid=(('train.nosuch', (1,)),)"], ["'nosuch'"]),
    "unknown key": (["--config.nosuch=1"], ["--config.nosuch", "no such key"]),
}


@pytest.mark.parametrize("case", sorted(ABLATE_CASES))
def test_ablate_bad_grid_is_one_line(case):
    from cnnlab import ablation

    args, fragments = ABLATE_CASES[case]
    line = error_in_process(lambda c: ablation.check_grid(c, "0/1"), f"--config={ABLATE}", *args)
    assert all(fragment in line for fragment in fragments), line


def test_ablate_bad_shard_is_one_line():
    from cnnlab import ablation

    line = error_in_process(lambda c: ablation.check_grid(c, "3/2"), f"--config={ABLATE}")
    assert "--shard must be i/N" in line, line


def test_ablate_bad_grid_on_the_command_line_writes_nothing(tmp_path):
    args, fragments = ABLATE_CASES["bad cell value"]
    out = cli("experiments.ablate", f"--workdir={tmp_path / 'grid'}", *args)
    assert_one_line_error(out, *fragments)
    assert not (tmp_path / "grid").exists()


def test_ablate_report_only_without_cells(tmp_path):
    from cnnlab import ablation

    with pytest.raises(ConfigError, match="no cell results"):
        ablation.write_report(tmp_path / "grid")


def test_a_report_judges_new_claims_only_when_told_and_never_silently_the_old_ones(tmp_path):
    """--report_only with a config whose claims differ from the workdir's grid.json: a one-line
    ConfigError naming the difference (the report would judge grid.json's claims, not the
    config's); with accept_changes the config's grid.json replaces it. Nothing trains."""
    import json

    from cnnlab import ablation
    from experiments.configs import ablate_default

    c = ablate_default.get_config()
    ablation.report_grid(c, tmp_path, accept_changes=True)  # a workdir made by this grid
    ablation.report_grid(c, tmp_path)  # the same grid: fine
    c.claims = (*c.claims[:1],)
    with pytest.raises(ConfigError, match=r"holds results of another grid: grid.json claims"):
        ablation.report_grid(c, tmp_path)
    assert len(json.loads((tmp_path / "grid.json").read_text())["claims"]) == 4  # untouched
    ablation.report_grid(c, tmp_path, accept_changes=True)
    assert len(json.loads((tmp_path / "grid.json").read_text())["claims"]) == 1


def damage(step_dir: Path, kind: str) -> None:
    if kind == "truncated":
        for f in (step_dir / "state").rglob("d/*"):
            f.write_bytes(f.read_bytes()[:100])
    elif kind == "garbled":
        (step_dir / "state" / "_METADATA").write_text("{garbled")
    else:  # an empty step directory
        shutil.rmtree(step_dir)
        step_dir.mkdir()


# the truncated step through the entry point (its late read errors once printed a traceback
# there); the others in this process, stderr captured
@pytest.mark.parametrize("kind, command_line", [("truncated", True), ("garbled", False),
                                                ("empty", False)])  # fmt: skip
def test_resume_falls_back_to_the_newest_step_that_restores(tmp_path, saved, kind,
                                                            command_line, capsys):  # fmt: skip
    from cnnlab import train
    from experiments.cli import config_from_args

    run = tmp_path / "run"
    shutil.copytree(saved, run)
    damage(run / "checkpoints" / "4", kind)
    damaged = snapshot(run / "checkpoints" / "4")
    args = [f"--config={BASE}", *tiny("--config.train.steps=6")]
    if command_line:
        out = cli("experiments.train", f"--workdir={run}", *args)
        assert out.returncode == 0, out.stderr[-3000:]
        stderr = out.stderr
    else:
        train.train(config_from_args(*args), run, progress=False)
        stderr = capsys.readouterr().err
    assert "warning: checkpoint step 4" in stderr and "does not restore" in stderr
    assert "resuming from step 2" in stderr and "Traceback" not in stderr
    assert snapshot(run / "damaged_checkpoints" / "4") == damaged  # moved aside, not deleted
    assert {"2", "4", "6"} <= {p.name for p in (run / "checkpoints").iterdir()}
    records = strict_records(run / "metrics.jsonl")  # steps 3-4 re-run: one record each
    keys = [(r["split"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)) and ("train", 6) in keys and ("test", 4) in keys


def test_a_failed_read_drops_its_own_late_errors_whenever_they_come_and_nothing_else(
    tmp_path, caplog
):
    """When a damaged step fails to read, its in-flight TensorStore reads report late: each
    `RuntimeError: Event loop is closed` through sys.unraisablehook (from another thread, after
    orbax raised) and each abandoned asyncio task logs "Task exception was never retrieved"
    when collected. Driven here with real threads and tasks: `reading` drops exactly those,
    during the read and after a failed one however late they come (here after the read is long
    over, where a wait for stragglers had stopped), and passes everything else; reads that all
    succeed leave the hooks as they found them."""
    import asyncio
    import gc
    import logging
    import sys
    import threading

    from cnnlab.train import checkpoint
    from cnnlab.train.checkpoint import reading

    step = tmp_path / "checkpoints" / "4"
    seen = []  # what reaches the unraisable hook installed before

    class Dying:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    def unraisable_later(error, delay_s):  # as TensorStore's threads do after orbax raised
        def report():
            time.sleep(delay_s)
            Dying(error)  # dropped at once: its __del__ raises, an unraisable exception

        thread = threading.Thread(target=report)
        thread.start()
        return thread

    async def read(path):
        raise ValueError(f"OUT_OF_RANGE: Error reading local file {path}/state/d/0")

    def abandon(path):  # a task whose exception nobody retrieves, collected later
        loop = asyncio.new_event_loop()
        task = loop.create_task(read(path))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        return task

    def abandon_future(path):  # a future given an exception nobody retrieves, dropped later
        loop = asyncio.new_event_loop()
        future = loop.create_future()
        future.set_exception(ValueError(f"OUT_OF_RANGE: Error reading local file {path}/x"))
        loop.close()
        return future

    def never_retrieved():
        gc.collect()
        return [r for r in caplog.records if "never retrieved" in r.getMessage()]

    checkpoint._LATE.uninstall()  # as in a fresh process (an earlier test may have failed a read)
    hook, filters = (lambda u: seen.append(u.exc_value)), logging.getLogger("asyncio").filters
    before = (sys.unraisablehook, list(filters))
    sys.unraisablehook = hook
    try:
        # reads that succeed: nothing dropped, hooks as found
        with reading(tmp_path / "checkpoints" / "2"):
            pass
        assert (sys.unraisablehook, list(filters)) == (hook, before[1])
        unraisable_later(RuntimeError("Event loop is closed"), 0.0).join()
        assert [type(e) for e in seen] == [RuntimeError]
        seen.clear()
        kept = []  # tasks still referenced when the read ends (a TensorStore future holds them)
        with pytest.raises(ValueError, match="the first error"):
            with reading(step):
                kept.extend([abandon(step), abandon_future(step)])
                late = unraisable_later(RuntimeError("Event loop is closed"), 0.5)
                unraisable_later(KeyError("unrelated"), 0.0).join()
                raise ValueError("the first error, which orbax raises")
        late.join()  # reported after the read is over
        kept.clear()  # collected after the read is over
        assert [type(e) for e in seen] == [KeyError]  # the unrelated one passed through
        assert not never_retrieved()
        unraisable_later(RuntimeError("Event loop is closed"), 0.0).join()  # later still
        assert [type(e) for e in seen] == [KeyError]
        abandon(tmp_path / "elsewhere")  # another path's task: not this read's, reported
        assert len(never_retrieved()) == 1
        abandon_future(tmp_path / "elsewhere")  # and another path's future
        assert len(never_retrieved()) == 2
    finally:
        checkpoint._LATE.uninstall()
        sys.unraisablehook = before[0]
    assert list(filters) == before[1]


@pytest.mark.slow  # 20 command-line runs, four at a time: the full tier
def test_a_truncated_step_never_prints_a_traceback_in_20_runs(tmp_path, saved):
    """The case an outside harness once saw print a 68-line traceback (in one of two runs):
    re-running on a step whose array files were truncated. Twenty runs through the entry point,
    four at once so that TensorStore's threads and the collector run late as on a loaded
    machine: each falls back to step 2, and stderr holds the two warnings and the progress bar,
    never a traceback or a late report."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        run = tmp_path / f"run{i}"
        shutil.copytree(saved, run)
        damage(run / "checkpoints" / "4", "truncated")
        return cli("experiments.train", f"--config={BASE}", f"--workdir={run}",
                   *tiny("--config.train.steps=6"))  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(one, range(20)))
    for out in outs:
        assert out.returncode == 0, out.stderr[-3000:]
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert (
            lines[0].startswith("warning: checkpoint step 4 in ") and "does not restore" in lines[0]
        ), out.stderr[-3000:]
        assert lines[1].startswith("warning: resuming from step 2; damaged step 4 moved to "), (
            out.stderr[-3000:]
        )
        rest = lines[2:]  # progress lines (one at the end, more on a machine slow enough)
        assert rest and all(x.startswith("train ") for x in rest), out.stderr[-3000:]


def test_no_step_restores_is_an_error_and_nothing_is_deleted(tmp_path, saved):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    for step in ("2", "4"):
        damage(run / "checkpoints" / step, "garbled")
    before = snapshot(run)
    out = cli("experiments.train", f"--config={BASE}", f"--workdir={run}", *TINY)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no checkpoint in") and "restores" in last, out.stderr
    assert snapshot(run) == before


def test_corrupt_finetune_source_names_the_checkpoint(tmp_path, saved):
    source = tmp_path / "source"
    shutil.copytree(saved, source)
    for step in ("2", "4"):
        damage(source / "checkpoints" / step, "truncated")
    out = cli(
        "experiments.finetune", "--config=experiments/configs/finetune.py",
        f"--workdir={tmp_path / 'ft'}", *TINY, f"--config.finetune.source={source}",
        "--config.data.val_per_class=0", "--config.train.patience=0",
        "--config.train.best_metric=accuracy", "--config.train.best_mode=max",
        "--config.phase1.steps=2", "--config.phase2.steps=0",
    )  # fmt: skip
    assert_one_line_error(out, "fine-tuning source checkpoint", str(source / "checkpoints"))


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow  # mounts a tmpfs (root only): the full tier
def test_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    # a checkpoint of this model takes ~0.25 MB and a save asks for 1.2x that + 0.25 MB free:
    # in 640 kB step 2 fits, step 4 does not
    with tmpfs(tmp_path / "disk", "size=640k") as disk:
        out = cli("experiments.train", f"--config={BASE}", f"--workdir={disk / 'run'}", *TINY)
        assert_one_line_error(
            out, "no space left", "step 4", "checkpoint (step 2) is kept", alone=False
        )
        assert (disk / "run" / "checkpoints" / "2" / "_CHECKPOINT_METADATA").exists()
        assert (disk / "run" / "checkpoints" / "2" / "state" / "commit_success.txt").exists()


@pytest.mark.slow  # mounts a tmpfs (root only): the full tier
def test_read_only_filesystem_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        out = cli("experiments.train", f"--config={BASE}", f"--workdir={ro / 'run'}", *TINY)
        assert_one_line_error(out, "read-only", str(ro / "run"))


def test_divergence_stops_before_saving_and_logs_strict_json(tmp_path):
    run = tmp_path / "run"
    out = cli("experiments.train", f"--config={BASE}", f"--workdir={run}", *TINY,
              "--config.optim.lr=1e30", "--config.optim.warmup_steps=0")  # fmt: skip
    assert_one_line_error(out, "non-finite loss", "no checkpoint had been saved yet", alone=False)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    strict_records(run / "metrics.jsonl")


def test_a_checkpoint_is_only_good_when_it_evaluates_finite(tmp_path, monkeypatch):
    """The second evaluation comes back NaN (as with BN statistics at 3e19): the run stops
    without saving it, the first checkpoint stays the last one, and the NaN is logged as null."""
    from cnnlab import train
    from cnnlab.train import evaluation
    from experiments.configs import base

    c = base.get_config()
    c.data.name, c.data.synthetic.image_shape, c.data.synthetic.num_examples = (
        "synthetic", (8, 8, 3), 64,
    )  # fmt: skip
    c.model.kwargs.depth, c.data.batch_size, c.train.train_subset = 8, 16, 0
    c.train.steps, c.train.eval_every, c.train.log_every = 4, 2, 1
    real, calls = evaluation.evaluate, []

    def evaluate(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return {**out, "loss": float("nan")} if len(calls) == 2 else out

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    with pytest.raises(
        train.NonFiniteLoss, match=r"loss \(nan\) in evaluation at step 4.*\(step 2\) is kept"
    ):
        train.train(c, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    tests = [r for r in strict_records(tmp_path / "metrics.jsonl") if r["split"] == "test"]
    assert [r["loss"] is None for r in tests] == [False, True]


def test_non_finite_finds_batch_norm_statistics_and_parameters():
    from cnnlab.train import non_finite

    def state(kernel, var):
        return types.SimpleNamespace(params={"conv": {"kernel": np.array(kernel)}},
                                     batch_stats={"bn": {"var": np.array(var)}})  # fmt: skip

    assert non_finite({"loss": 0.5}, state([1.0], [1.0, np.inf])) == "batch_stats bn/var"
    assert non_finite({"loss": 0.5}, state([1.0], [1.0, 3e19])) is None  # finite: eval decides
    assert non_finite({"loss": 0.5}, state([np.nan], [1.0])) == "params conv/kernel"
    ok = state([1.0], [1.0])
    assert non_finite({"accuracy": float("nan")}, ok) == "accuracy (nan) in evaluation"


def test_sigterm_saves_the_step_and_a_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """In this process: SIGTERM during the first step, and again during the save: the run saves
    step 1 (between evaluations: no metrics, so never the 'best' step), raises Preempted (exit
    code 143) with one line naming the step and how to resume; the same call then resumes and
    ends with exactly the parameters of an uninterrupted run. Outside the loop SIGTERM's
    handler is as before."""
    import os
    import signal

    import jax

    from cnnlab import train
    from cnnlab.train.checkpoint import Checkpointer
    from cnnlab.train.preempt import Preempted
    from experiments import cli as cli_module

    config = lambda: cli_module.config_from_args(f"--config={BASE}", *TINY)
    before = signal.getsignal(signal.SIGTERM)
    train.train(config(), tmp_path / "full", progress=False)

    def hook(step, state, metrics):
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    real_save = Checkpointer.save

    def save_signalled(self, step, *args, **kwargs):  # a second signal while saving
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save_signalled)
    with pytest.raises(Preempted) as caught:
        train.train(config(), tmp_path / "cut", progress=False, hook=hook)
    monkeypatch.undo()
    message = str(caught.value)
    assert message.startswith("stopped by SIGTERM after step 1 of 4: checkpoint 1 saved in ")
    assert message.endswith("run the same command to resume") and "\n" not in message
    assert caught.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is before
    meta = json.loads((tmp_path / "cut" / "checkpoints" / "1" / "meta" / "metadata").read_text())
    assert meta["metrics"] is None
    train.train(config(), tmp_path / "cut", progress=False)
    (s1, a), (s2, b) = final_state(tmp_path / "full"), final_state(tmp_path / "cut")
    assert s1 == s2 == 4
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["1", "2", "4"]


HOLD = (  # a second process that takes a run directory's lock and holds it until killed
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, b'pid 4242 on host elsewhere')\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@contextlib.contextmanager
def held(lock_path: Path):
    import sys

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_one_writer_per_workdir_and_stale_locks_are_taken_over(tmp_path, capsys):
    """A run directory another process holds: train and a grid cell stop with one line naming
    the holder before writing anything (the grid records no failed cell); a lock file left by a
    process that is gone is taken over with a warning, and cleared when the run ends."""
    from cnnlab import ablation, train
    from cnnlab.errors import WorkdirBusy
    from experiments import cli as cli_module

    config = cli_module.config_from_args(f"--config={BASE}", *TINY)
    work = tmp_path / "w"
    with held(work / ".lock"):
        with pytest.raises(WorkdirBusy) as caught:
            train.train(config, work, progress=False)
        assert str(caught.value) == (
            f"{work} is in use by pid 4242 on host elsewhere (lock {work / '.lock'}); wait for "
            f"that run to finish or stop it, or use another --workdir"
        )
        assert sorted(p.name for p in work.iterdir()) == [".lock"]  # nothing else written
    (work / ".lock").write_text("pid 999999 on host gone")  # its holder was killed
    train.train(config, work, progress=False)
    assert "named pid 999999 on host gone, which no longer holds it" in capsys.readouterr().err
    assert (work / ".lock").read_text() == ""  # released: the next run takes it silently
    grid = cli_module.config_from_args(
        "--config=experiments/configs/ablate_default.py", *TINY[:5], "--config.claims=()",
        "--config.grid=(('model.kwargs.depth',(8,)),)", "--config.train.steps=2",
        "--config.grad_norm_steps=(0,)", "--config.train.train_subset=0",
    )  # fmt: skip
    cell = tmp_path / "g" / "cells" / "depth=8"
    with held(cell / "run" / ".lock"):
        with pytest.raises(WorkdirBusy, match="is in use by pid 4242 on host elsewhere"):
            ablation.run_grid(grid, tmp_path / "g", progress=False)
    assert not (cell / "result.json").exists()


def test_a_busy_workdir_is_one_line_through_the_entry_point(tmp_path, saved):
    """`python -m experiments.train` on a finished run that another process holds: exit 1, one
    line naming the holder, and the run's files byte-identical afterwards."""
    shutil.copytree(saved, tmp_path / "w")
    before = snapshot(tmp_path / "w" / "checkpoints")
    with held(tmp_path / "w" / ".lock"):
        out = cli("experiments.train", f"--config={BASE}", f"--workdir={tmp_path / 'w'}", *TINY)
    assert_one_line_error(out, "is in use by pid 4242 on host elsewhere", "use another --workdir",
                          alone=False)  # fmt: skip
    assert out.returncode == 1 and snapshot(tmp_path / "w" / "checkpoints") == before


SIGINT_HOLDER = """
import sys, time
from cnnlab.train import preempt
with preempt.stop_on_signals(kept=lambda: preempt.last_checkpoint(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    print("slept; requested", preempt.requested(), flush=True)
"""


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT"), ("SIGINT",)])
def test_a_second_ctrl_c_stops_at_once_saying_what_is_kept(tmp_path, signals):
    """Two SIGINTs stop the process at once (exit 130) with one line naming the newest complete
    checkpoint, while the main thread is busy (here a 60 s sleep; a compile in the full tier's
    end-to-end test). One SIGINT, or a SIGTERM then a SIGINT, only note the request: the
    holder saves at the next step boundary as before."""
    import signal
    import sys

    ckpt = tmp_path / "checkpoints"
    for name in ("4", "8", "12.orbax-checkpoint-tmp-1"):  # the last is a save cut short
        (ckpt / name).mkdir(parents=True)
    stop_now = len([s for s in signals if s == "SIGINT"]) == 2
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_HOLDER, str(ckpt), "60" if stop_now else "1.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "holding"
    for s in signals:
        proc.send_signal(getattr(signal, s))
        time.sleep(0.3)
    out, err = proc.communicate(timeout=30)  # far under the 60 s sleep
    if stop_now:
        assert proc.returncode == 130, err
        assert err.strip() == (
            f"stopped at once by a second Ctrl-C (SIGINT); kept: checkpoint 8 in {ckpt}; a save "
            "in progress is dropped; run the same command to resume"
        )
    else:
        assert proc.returncode == 0 and err == "", err
        assert out.strip() == f"slept; requested {getattr(signal, signals[0]).value}"
