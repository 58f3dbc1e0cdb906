"""launch/: the exact gcloud commands (dry run), sharded grids over VMs, cleanup on failure."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import tpu

ROOT = Path(__file__).resolve().parents[1]
SETUP = (
    "'--command=set -e; mkdir -p ~/cnnlab && tar -xzf ~/cnnlab.tar.gz -C ~/cnnlab && cd ~/cnnlab"
    " && (command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh) && export"
    ' PATH="$HOME/.local/bin:$PATH" && uv python install 3.12 && PYTHON=$(uv python find 3.12)'
    " ./run python -m pip install --quiet -e '\"'\"'.[tpu]'\"'\"''"
)


def dry_run(*args) -> list[str]:
    own, sep, rest = list(args), [], []
    if "--" in own:
        i = own.index("--")
        own, sep, rest = own[:i], ["--"], own[i + 1 :]
    cmd = [sys.executable, "-m", "launch.tpu", *own, "--dry_run", *sep, *rest]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_all_prints_the_exact_gcloud_commands():
    lines = dry_run(
        "all", "--name=cnn1", "--zone=us-central2-b", "--type=v4-32", "--project=lab",
        "--path=runs/x", "--", "python", "-m", "experiments.train",
        "--config=experiments/configs/base.py", "--workdir=runs/x",
    )  # fmt: skip
    where = "--zone=us-central2-b --project=lab"
    assert lines == [
        f"gcloud compute tpus tpu-vm create cnn1 --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base {where}",
        "git archive --format=tar.gz --output=/tmp/cnnlab.tar.gz HEAD",
        f"gcloud compute tpus tpu-vm scp /tmp/cnnlab.tar.gz 'cnn1:~/cnnlab.tar.gz' --worker=all "
        f"{where}",
        f"gcloud compute tpus tpu-vm ssh cnn1 --worker=all {SETUP} {where}",
        "gcloud compute tpus tpu-vm ssh cnn1 --worker=all '--command=cd ~/cnnlab && export "
        "CNNLAB_DISTRIBUTED=1 && ./run python -m experiments.train "
        "--config=experiments/configs/base.py --workdir=runs/x 2>&1 | tee -a "
        f"~/cnnlab/launch.log; exit ${{PIPESTATUS[0]}}' {where}",
        "mkdir -p runs",
        f"gcloud compute tpus tpu-vm scp --recurse 'cnn1:~/cnnlab/runs/x' runs --worker=0 {where}",
        f"gcloud compute tpus tpu-vm delete cnn1 --quiet {where}",
    ]


def test_spread_runs_one_grid_shard_per_vm_and_merges_the_report():
    lines = dry_run("spread", "--names=a,b,c", "--zone=z", "--workdir=runs/g", "--",
                    "--config=experiments/configs/ablate_default.py")  # fmt: skip
    runs = [line for line in lines if "experiments.ablate" in line and "ssh" in line]
    assert len(runs) == 3
    for i, (vm, line) in enumerate(zip("abc", runs, strict=True)):
        assert line.startswith(f"gcloud compute tpus tpu-vm ssh {vm} --worker=all")
        assert f"--workdir=runs/g --shard={i}/3 --config=experiments/configs/ablate_default.py" in (
            line
        )
    fetches = [line for line in lines if "scp --recurse" in line]
    assert fetches == [f"gcloud compute tpus tpu-vm scp --recurse '{v}:~/cnnlab/runs/g/cells' "
                       "runs/g --worker=0 --zone=z" for v in "abc"]  # fmt: skip
    merge = lines.index("./run python -m experiments.ablate --workdir=runs/g --report_only "
                        "--config=experiments/configs/ablate_default.py")  # fmt: skip
    assert merge > lines.index(fetches[-1])
    assert lines[-3:] == [f"gcloud compute tpus tpu-vm delete {v} --quiet --zone=z" for v in "abc"]


def test_a_failing_run_still_deletes_the_vm(monkeypatch, capsys):
    ran = []

    class Done:
        def __init__(self, code):
            self.returncode = code

    def fake_run(cmd):
        ran.append(cmd)
        return Done(7 if "ssh" in cmd and "--command=cd ~/cnnlab" in " ".join(cmd) else 0)

    monkeypatch.setattr(tpu.subprocess, "run", fake_run)
    status = tpu.main(["all", "--name=v", "--zone=z", "--", "python", "-m", "experiments.train"])
    assert status == 7
    assert ran[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "v"]
    assert not any("scp" in c and "--recurse" in c for c in ran)  # nothing fetched after failure
    assert "error: exit 7 from: gcloud compute tpus tpu-vm ssh v" in capsys.readouterr().err


def test_usage_errors():
    with pytest.raises(SystemExit, match="needs --name=VM"):
        tpu.main(["create", "--zone=z"])
    with pytest.raises(SystemExit, match="spread needs --names"):
        tpu.main(["spread", "--zone=z"])
    with pytest.raises(SystemExit, match="give the command after --"):
        tpu.main(["run", "--name=v", "--zone=z", "--dry_run"])


GRID = """
from experiments.configs import ablate_default


def get_config():
    c = ablate_default.get_config()
    c.train.steps, c.train.eval_every, c.train.log_every = STEPS, 4, 2
    c.train.train_subset, c.data.batch_size = 0, 32
    c.grad_norm_steps = (0,)
    c.claims = ()
    c.grid = (("model.kwargs.depth", (8,)), ("model.kwargs.skip", (False, True)), ("seed", (0, 1)))
    return c
"""


def grid_file(tmp_path, steps: int) -> Path:
    path = tmp_path / f"grid{steps}.py"
    path.write_text(GRID.replace("STEPS", str(steps)))
    return path


def slurm(*args):
    return subprocess.run([sys.executable, "-m", "launch.slurm", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_slurm_dry_run_prints_the_sbatch_array_and_bad_input_is_one_line(tmp_path):
    """--dry_run fills submitit's sbatch template (partition, GPUs, time, the array of jobs,
    the signal submitit requeues on) without Slurm; bad input is one line before submitting."""
    grid = grid_file(tmp_path, 8)
    out = slurm("submit", f"--config={grid}", f"--workdir={tmp_path / 'w'}", "--partition=gpu",
                "--gpus_per_job=2", "--cells_per_job=2", "--time=30", "--dry_run")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --time=30",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --signal=USR2@90"):  # fmt: skip
        assert line in out.stdout.splitlines(), line
    assert not (tmp_path / "w").exists()  # nothing submitted, nothing written
    no_slurm = slurm("submit", f"--config={grid}", f"--workdir={tmp_path / 'w'}")
    assert no_slurm.returncode == 1 and no_slurm.stderr.strip().splitlines() == [
        "error: --cluster=slurm but no sbatch on PATH: run this on the cluster's login node, "
        "or use --cluster=local / --dry_run"
    ]
    typo = slurm("submit", f"--config={grid}", f"--workdir={tmp_path / 'w'}", "--partiton=gpu")
    assert typo.returncode == 2 and "unrecognized arguments: --partiton=gpu" in typo.stderr
    bad = tmp_path / "bad.py"
    bad.write_text(GRID.replace("STEPS", "8").replace("(False, True)", "('maybe',)"))
    wrong = slurm("submit", f"--config={bad}", f"--workdir={tmp_path / 'w'}", "--dry_run")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: ") and "skip" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "w").exists()
    staged = tmp_path / "staged.py"  # two-stage seeds are refused until jobs can split them
    staged.write_text(grid.read_text().replace("    return c", "    c.two_stage.max_seeds = 8\n"
                                                               "    return c"))  # fmt: skip
    two = slurm("submit", f"--config={staged}", f"--workdir={tmp_path / 'w'}", "--dry_run")
    lines = two.stderr.strip().splitlines()
    assert two.returncode == 1 and len(lines) == 1, two.stderr[-2000:]
    assert lines[0].startswith("error: config.two_stage.max_seeds=8: seeds added after the pilot")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # real jobs through submitit's local executor: the full tier
def test_slurm_local_jobs_match_an_in_process_grid_and_a_preempted_job_resumes(tmp_path):
    """A 4-cell grid as 2 local jobs: the same cells and metrics as run_grid in this process
    (float tolerance); then a job signalled as Slurm does before a time limit (SIGUSR2) mid-cell
    is requeued by submitit and resumes its cells from their checkpoints."""
    import submitit

    from cnnlab import ablation
    from cnnlab.data import digits
    from experiments.cli import load_config
    from launch.slurm import GridShare, shares

    out = slurm("submit", f"--config={grid_file(tmp_path, 8)}", f"--workdir={tmp_path / 'jobs'}",
                "--cluster=local", "--cells_per_job=2", "--gpus_per_job=0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("submitted 2 jobs: ") and "report: " in out.stdout
    ablation.run_grid(load_config(str(grid_file(tmp_path, 8))), tmp_path / "here", progress=False)
    jobs = {r.name: r for r in ablation.load_results(tmp_path / "jobs")}
    here = {r.name: r for r in ablation.load_results(tmp_path / "here")}
    assert sorted(jobs) == sorted(here) and len(jobs) == 4
    test_examples = 1797 - digits.N_TRAIN  # an argmax may flip: one example of the test split
    for name, r in here.items():
        for k, v in r.metrics.items():
            tol = dict(abs=1 / test_examples + 1e-9) if k.endswith("accuracy") else dict(rel=1e-3)
            assert jobs[name].metrics[k] == pytest.approx(v, **tol), (name, k)
    assert (tmp_path / "jobs" / "report.md").exists()
    status = slurm("status", f"--workdir={tmp_path / 'jobs'}")
    assert status.returncode == 0 and "4 of 4 cells have a result" in status.stdout
    cancel = slurm("cancel", f"--workdir={tmp_path / 'jobs'}")
    assert cancel.returncode == 1 and cancel.stderr.startswith("error: local jobs end with")
    # preemption, driven by events the test sees so that it holds on any CPU: the controller's
    # own signal is set 30 minutes away, and the test sends SIGUSR2 (what Slurm sends ahead of a
    # time limit or preemption) to the job's task twice, each time once the attempt has saved a
    # checkpoint past what the previous one left; submitit requeues the job each time. (A signal
    # every 15 s from the controller failed on slower CPUs: submitit's local controller starts
    # a job at most 6 times, Controller.run(max_retry=6), and 6 short attempts did not finish.)
    from cnnlab import provenance

    config = load_config(str(grid_file(tmp_path, 160)))
    (names,) = shares(config, 4)
    long = tmp_path / "long"
    ex = submitit.LocalExecutor(folder=long / "slurm", max_num_timeout=5)
    ex.update_parameters(timeout_min=30)
    job = ex.submit(GridShare(config, str(long)), names)
    saved: dict[str, int] = {}
    for signum in (signal.SIGUSR2, signal.SIGTERM):  # a time-limit warning, then a preemption
        pid = wait_for(lambda old=saved: saved_since(long, old) and task_pid(job), job)
        os.kill(pid, signum)
        wait_for(lambda p=pid: task_pid(job) not in (None, p), job)  # the requeued attempt
        saved = unfinished(long)
    assert job.result() == ["done"] * 4  # requeued by submitit until finished
    log = Path(job.paths.stdout).read_text()  # submitit's log lines, once each
    assert log.count("Caught signal SIGUSR2") == 2 and log.count("Requeued job") == 2, log[-3000:]
    starts = {}
    for name in names:
        run = long / "cells" / name / "run"
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert max(steps) == 160 and len(steps) == len(set(steps)) + 40  # one record per step/split
        starts[name] = [s["start_step"] for s in provenance.read(run)]
    assert len([s for v in starts.values() for s in v if s > 0]) == 2, starts  # each requeue
    # each signal saved the step the cell was on (not only its last evaluation's), and the
    # requeued attempt resumed exactly there
    errors = Path(job.paths.stderr).read_text()
    stops = re.findall(r"stopped by (SIGUSR2|SIGTERM) after step (\d+) of 160: checkpoint \d+ "
                       r"saved in \S+/cells/([^/]+)/run/checkpoints", errors)  # fmt: skip
    between = errors.count("between cells")
    assert len(stops) + between == 2 and stops, errors[-3000:]
    for _, step, cell in stops:
        assert int(step) in starts[cell], (step, cell, starts)


def unfinished(workdir: Path) -> dict[str, int]:
    """Cell name -> its latest checkpointed step, for the grid's cells with no result yet."""
    out = {}
    for d in workdir.glob("cells/*/run/checkpoints"):
        if not (d.parents[1] / "result.json").exists():
            out[d.parents[1].name] = max((int(p.name) for p in d.iterdir() if p.name.isdigit()),
                                         default=0)  # fmt: skip
    return out


def saved_since(workdir: Path, before: dict[str, int]) -> bool:
    """Whether an unfinished cell has saved a checkpoint past what it had in `before`: a
    preemption now leaves the requeued job new progress to resume."""
    return any(step > before.get(name, 0) for name, step in unfinished(workdir).items())


def task_pid(job) -> int | None:
    """The process running a local submitit job's task now (the controller's child)."""
    ctrl = int(job.job_id)
    children = Path(f"/proc/{ctrl}/task/{ctrl}/children")
    pids = children.read_text().split() if children.exists() else []
    return int(pids[0]) if pids else None


def wait_for(condition, job, timeout_s: float = 600):
    """Poll `condition` until it returns something true; fail if the job ends first."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if got := condition():
            return got
        assert not job.done(), Path(job.paths.stderr).read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout_s} s")
