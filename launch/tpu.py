"""Run cnnlab on Cloud TPU VMs: create, set up, run on every worker, stream logs, fetch, delete.

    python -m launch.tpu create --name=cnn1 --zone=us-central2-b --type=v4-8
    python -m launch.tpu setup  --name=cnn1 --zone=us-central2-b
    python -m launch.tpu run    --name=cnn1 --zone=us-central2-b -- \\
        python -m experiments.ablate --workdir=runs/grid
    python -m launch.tpu logs   --name=cnn1 --zone=us-central2-b
    python -m launch.tpu fetch  --name=cnn1 --zone=us-central2-b --path=runs/grid
    python -m launch.tpu delete --name=cnn1 --zone=us-central2-b
    python -m launch.tpu all    --name=cnn1 --zone=... --type=v4-8 --path=runs/x -- python -m ...
    python -m launch.tpu spread --names=a,b --zone=... --type=v4-8 --workdir=runs/grid -- \\
        --config=experiments/configs/ablate_default.py

`--dry_run` prints the exact commands instead of running them. Every worker of a pod slice runs
the same command (JAX's multi-controller model); CNNLAB_DISTRIBUTED=1 makes the entry points call
`jax.distributed.initialize()`, which finds the other workers itself. Needs only the gcloud CLI
and git on this machine; it does not import cnnlab.
"""

import argparse
import shlex
import subprocess
import sys

REMOTE = "cnnlab"  # the checkout's directory in each worker's home
VERSION = "tpu-ubuntu2204-base"
TARBALL = "/tmp/cnnlab.tar.gz"
# TPU VM images ship an older Python: uv installs 3.12 for ./run, then jax[tpu] (libtpu).
SETUP = (
    f"set -e; mkdir -p ~/{REMOTE} && tar -xzf ~/cnnlab.tar.gz -C ~/{REMOTE} && cd ~/{REMOTE} && "
    "(command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh) && "
    'export PATH="$HOME/.local/bin:$PATH" && uv python install 3.12 && '
    "PYTHON=$(uv python find 3.12) ./run python -m pip install --quiet -e '.[tpu]'"
)


def _base(verb: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb]


def _where(a) -> list[str]:
    return [f"--zone={a.zone}", *([f"--project={a.project}"] if a.project else [])]


def ssh(a, name: str, command: str, worker: str = "all") -> list[str]:
    return [*_base("ssh"), name, f"--worker={worker}", f"--command={command}", *_where(a)]


def remote(command: list[str], log: str = "launch.log") -> str:
    """The line every worker runs: in the checkout, distributed on, output kept in a log."""
    line = " ".join(shlex.quote(c) for c in command)
    return (
        f"cd ~/{REMOTE} && export CNNLAB_DISTRIBUTED=1 && "
        f"./run {line} 2>&1 | tee -a ~/{REMOTE}/{log}; exit ${{PIPESTATUS[0]}}"
    )


def create(a, name: str) -> list[list[str]]:
    spot = ["--spot"] if a.spot else []
    cmd = [*_base("create"), name, f"--accelerator-type={a.type}", f"--version={a.version}"]
    return [[*cmd, *spot, *_where(a)]]


def setup(a, name: str) -> list[list[str]]:
    """Ship this commit (git archive: what is committed, nothing else) and install on all."""
    return [
        ["git", "archive", "--format=tar.gz", f"--output={TARBALL}", "HEAD"],
        [*_base("scp"), TARBALL, f"{name}:~/cnnlab.tar.gz", "--worker=all", *_where(a)],
        ssh(a, name, SETUP),
    ]


def run(a, name: str, command: list[str]) -> list[list[str]]:
    if not command:
        raise SystemExit("error: give the command after --, e.g. -- python -m experiments.train")
    return [ssh(a, name, remote(command))]


def fetch(a, name: str, path: str) -> list[list[str]]:
    """Copy PATH back from worker 0, where process 0 writes reports, metrics and checkpoints."""
    path = path.rstrip("/")
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    src = f"{name}:~/{REMOTE}/{path}"
    return [
        ["mkdir", "-p", parent],
        [*_base("scp"), "--recurse", src, parent, "--worker=0", *_where(a)],
    ]


def delete(a, name: str) -> list[list[str]]:
    return [[*_base("delete"), name, "--quiet", *_where(a)]]


def plan(a, command: list[str]) -> list[tuple[bool, list[list[str]]]]:
    """Stages (parallel?, commands). A stage's commands run one after another, or all at once
    when parallel. The last stage of 'all' and 'spread' (delete) runs even after a failure."""
    if a.cmd == "spread":  # shard i of N of the grid on VM i; merge the cells here afterwards
        names, wd = a.names.split(","), a.workdir
        n = len(names)
        grid = lambda i: ["python", "-m", "experiments.ablate", f"--workdir={wd}",
                          f"--shard={i}/{n}", *command]  # fmt: skip
        report = ["./run", "python", "-m", "experiments.ablate", f"--workdir={wd}",
                  "--report_only", *command]  # fmt: skip
        return [
            (True, [c for v in names for c in create(a, v)]),
            (False, [c for v in names for c in setup(a, v)]),
            (True, [c for i, v in enumerate(names) for c in run(a, v, grid(i))]),
            (False, [c for v in names for c in fetch(a, v, f"{wd}/cells")]),
            (False, [report]),
            (True, [c for v in names for c in delete(a, v)]),
        ]
    name = a.name
    stages = {
        "create": lambda: [create(a, name)],
        "setup": lambda: [setup(a, name)],
        "run": lambda: [run(a, name, command)],
        "logs": lambda: [[ssh(a, name, f"tail -n 200 -f ~/{REMOTE}/launch.log", worker="0")]],
        "fetch": lambda: [fetch(a, name, a.path)],
        "delete": lambda: [delete(a, name)],
        "all": lambda: [
            create(a, name),
            setup(a, name),
            run(a, name, command),
            fetch(a, name, a.path),
            delete(a, name),
        ],
    }
    return [(False, cmds) for cmds in stages[a.cmd]()]


def execute(parallel: bool, cmds: list[list[str]]) -> int:
    for cmd in cmds:
        print("+ " + shlex.join(cmd), flush=True)
    if parallel:
        procs = [subprocess.Popen(cmd) for cmd in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = []
        for cmd in cmds:
            codes.append(subprocess.run(cmd).returncode)
            if codes[-1]:
                break
    bad = [(c, cmd) for c, cmd in zip(codes, cmds, strict=False) if c]
    for code, cmd in bad:
        print(f"error: exit {code} from: {shlex.join(cmd)}", file=sys.stderr)
    return bad[0][0] if bad else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n")[0])
    p.add_argument("cmd", choices=["create", "setup", "run", "logs", "fetch", "delete", "all",
                                   "spread"])  # fmt: skip
    p.add_argument("--name", help="TPU VM name")
    p.add_argument("--names", help="spread: comma-separated VM names, one grid shard each")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default=None, help="default: gcloud's configured project")
    p.add_argument("--type", default="v4-8", help="accelerator type, e.g. v4-8, v5litepod-16")
    p.add_argument("--version", default=VERSION, help="TPU VM software version")
    p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    p.add_argument("--path", default="runs", help="fetch/all: the workdir to copy back")
    p.add_argument("--workdir", default="runs/grid", help="spread: the grid's workdir")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    return p


def main(argv: list[str]) -> int:
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (
        argv, [])  # fmt: skip
    a = parser().parse_args(own)
    if a.cmd == "spread" and not a.names:
        raise SystemExit("error: spread needs --names=vm1,vm2,... (one grid shard per VM)")
    if a.cmd != "spread" and not a.name:
        raise SystemExit(f"error: {a.cmd} needs --name=VM")
    stages = plan(a, command)
    if a.dry_run:
        for _, cmds in stages:
            for cmd in cmds:
                print(shlex.join(cmd))
        return 0
    cleanup = stages.pop() if a.cmd in ("all", "spread") else None
    try:
        for parallel, cmds in stages:
            if status := execute(parallel, cmds):
                return status
        return 0
    finally:
        if cleanup:  # never leave VMs running (and billing) after all/spread
            execute(*cleanup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
