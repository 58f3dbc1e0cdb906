"""launch/: the exact gcloud commands (dry run), sharded grids over VMs, cleanup on failure."""

import subprocess
import sys
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
