"""Run an ablation grid on a Slurm cluster through submitit, into one resumable workdir.

    python -m launch.slurm submit --config=experiments/configs/ablate_default.py \\
        --workdir=runs/grid --partition=gpu --gpus_per_job=1 --cells_per_job=4 --time=60
    python -m launch.slurm status --workdir=runs/grid
    python -m launch.slurm cancel --workdir=runs/grid
    python -m launch.slurm submit ... --dry_run        # print the sbatch script, submit nothing
    python -m launch.slurm submit ... --cluster=local  # the same jobs as local processes

The grid's cells are split into a job array: each job trains its share of cells
(`cnnlab.ablation.run_grid(..., only=...)`) into the same workdir, seeds trained together
(`batch_seeds`) staying in one job; then the report is merged (a dependent job on Slurm, this
process with `--cluster=local`). A job that Slurm warns of its time limit (submitit
asks for SIGUSR2 90 s ahead) or preempts (SIGTERM) saves the step its cell is on, is requeued
through submitit's checkpoint hook, and the requeued job resumes its cells from their orbax
checkpoints; a finished cell is never trained again.
`--gpus_per_job` > 1 runs one process per GPU and JAX's distributed runtime starts from Slurm's
environment (`cnnlab.distributed`), so one cell spans them. Needs the `slurm` extra
(`pip install -e '.[slurm]'`: submitit).
"""

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path


class LaunchError(Exception):
    """Bad input, found before anything is submitted: one line."""


def shares(config, cells_per_job: int) -> list[list[str]]:
    """Cell names per job: the grid's training groups (seeds trained together stay together),
    packed in order into jobs of at most `cells_per_job` cells (0: one group per job)."""
    from cnnlab import ablation

    jobs: list[list[str]] = []
    for group in ablation.training_groups(config, ablation.check_grid(config)):
        names = [ablation.cell_name(o) for o in group]
        if jobs and cells_per_job and len(jobs[-1]) + len(names) <= cells_per_job:
            jobs[-1] += names
        else:
            jobs.append(names)
    return jobs


try:
    import submitit

    _Checkpointable = submitit.helpers.Checkpointable
except ImportError:  # the error names the extra when a verb needs it
    submitit, _Checkpointable = None, object


class GridShare(_Checkpointable):
    """One job of the array: train the named cells. SIGUSR2 (Slurm's warning before the time
    limit) or SIGTERM (a preemption) while a cell trains: the cell saves the step it is on
    (every process of the job at the same step), the grid stops, and the job signals itself
    SIGUSR2 with submitit's handler back in place, so submitit calls `checkpoint`, which
    requeues the same call (the cells resume from that step)."""

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir

    def __call__(self, names: list[str]) -> list[str]:
        from cnnlab import ablation, distributed
        from cnnlab.train import preempt

        distributed.start(cache_dir=str(Path(self.workdir) / "jax_cache"))
        caught = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
        try:
            with preempt.stop_on_signals(signals=caught):
                results = ablation.run_grid(self.config, self.workdir, only=names,
                                            progress=False)  # fmt: skip
        except preempt.Preempted as e:
            print(" ".join(str(e).split()), file=sys.stderr, flush=True)
            if e.signum == signal.SIGINT:
                raise
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler: checkpoint, requeue, exit
            raise  # a process submitit does not requeue from (rank > 0) ends here
        return [r.status for r in results]


def merge_report(workdir: str) -> str:
    from cnnlab import ablation

    ablation.write_report(workdir)
    return str(Path(workdir) / "report.md")


def _params(a, jobs: int) -> dict:
    out = {"timeout_min": a.time, "name": "cnnlab-grid", "slurm_array_parallelism": jobs}
    if a.partition:
        out["slurm_partition"] = a.partition
    if a.account:
        out["slurm_account"] = a.account
    if a.gpus_per_job:
        out.update(gpus_per_node=a.gpus_per_job, tasks_per_node=a.gpus_per_job)
    return out


def sbatch_text(a, jobs: int) -> str:
    """The sbatch script submitit writes for the array (`--dry_run`): its own template, filled
    with this submission's parameters; nothing is submitted and no Slurm is needed."""
    from submitit.slurm.slurm import _make_sbatch_string

    g = a.gpus_per_job
    return _make_sbatch_string(
        command="python -u -m submitit.core._submit %j", folder=Path(a.workdir) / "slurm",
        job_name="cnnlab-grid", partition=a.partition, account=a.account, time=a.time,
        gpus_per_node=g or None, ntasks_per_node=g or None, map_count=jobs,
        array_parallelism=jobs,
    )  # fmt: skip


def submit(a) -> int:
    from experiments.cli import load_config

    config = load_config(a.config)  # one-line ConfigErrors
    if int(config.get("two_stage", {}).get("max_seeds", 0) or 0) > 0:
        raise LaunchError(
            f"config.two_stage.max_seeds={config.two_stage.max_seeds}: seeds added after the "
            "pilot are not split over array jobs yet (each job would train all of them); submit "
            "with --config.two_stage.max_seeds=0, then add the seeds the report asks for to "
            "config.grid's seed axis and submit again into the same --workdir (finished cells "
            "are kept)"
        )
    jobs = shares(config, a.cells_per_job)  # validates every cell before anything is submitted
    if a.dry_run:
        print(sbatch_text(a, len(jobs)))
        print(f"# {len(jobs)} jobs: " + "; ".join(", ".join(j) for j in jobs))
        return 0
    workdir = Path(a.workdir).absolute()
    ex = submitit.AutoExecutor(folder=workdir / "slurm", cluster=a.cluster)
    ex.update_parameters(**_params(a, len(jobs)))
    array = ex.map_array(GridShare(config, str(workdir)), jobs)
    ids = [j.job_id for j in array]
    record = {"cluster": a.cluster, "jobs": ids, "cells": jobs}
    logs = workdir / "slurm"
    print(f"submitted {len(ids)} jobs: {', '.join(ids)}; logs: {logs}/<job id>_0_log.out|err")
    if a.cluster == "local":  # this process waits, then merges
        for j in array:
            j.result()
        print(f"report: {merge_report(str(workdir))}")
    else:
        first = ids[0].split("_")[0]
        ex.update_parameters(slurm_additional_parameters={"dependency": f"afterany:{first}"},
                             gpus_per_node=0, tasks_per_node=1)  # fmt: skip
        report = ex.submit(merge_report, str(workdir))
        record["report_job"] = report.job_id
        print(f"report job {report.job_id} runs after them; follow: squeue -j {first}")
    (workdir / "slurm_jobs.json").write_text(json.dumps(record, indent=1))
    return 0


def _jobs(a) -> dict:
    path = Path(a.workdir) / "slurm_jobs.json"
    if not path.exists():
        raise LaunchError(f"{path} does not exist: no jobs were submitted from this workdir")
    return json.loads(path.read_text())


def status(a) -> int:
    rec = _jobs(a)
    done = len(list(Path(a.workdir).glob("cells/*/result.json")))
    total = sum(len(c) for c in rec["cells"])
    print(f"{done} of {total} cells have a result in {a.workdir}")
    if rec["cluster"] == "slurm":
        ids = ",".join([*rec["jobs"], *([rec["report_job"]] if "report_job" in rec else [])])
        return __import__("subprocess").call(["squeue", "-j", ids])
    return 0


def cancel(a) -> int:
    rec = _jobs(a)
    if rec["cluster"] != "slurm":
        raise LaunchError("local jobs end with the process that submitted them; stop it instead")
    ids = [*rec["jobs"], *([rec["report_job"]] if "report_job" in rec else [])]
    return __import__("subprocess").call(["scancel", *ids])


def parse(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m launch.slurm", description=__doc__.split("\n")[0])
    p.add_argument("verb", choices=("submit", "status", "cancel"))
    p.add_argument("--config", help="the grid's config file (submit)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--cluster", choices=("slurm", "local"), default="slurm")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--gpus_per_job", type=int, default=1)
    p.add_argument("--cells_per_job", type=int, default=0, help="0: one training group per job")
    p.add_argument("--time", type=int, default=60, help="minutes per job")
    p.add_argument("--dry_run", action="store_true", help="print the sbatch script only")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse(argv)  # argparse: an unknown or misspelt flag is one line and exit 2
    try:
        if a.verb == "submit":
            if submitit is None:
                raise LaunchError("launch.slurm needs submitit: pip install -e '.[slurm]'")
            if not a.config:
                raise LaunchError("submit needs --config=GRID_CONFIG (e.g. "
                                  "experiments/configs/ablate_default.py)")  # fmt: skip
            if a.cluster == "slurm" and not a.dry_run and shutil.which("sbatch") is None:
                raise LaunchError(
                    "--cluster=slurm but no sbatch on PATH: run this on the cluster's login "
                    "node, or use --cluster=local / --dry_run"
                )
            if a.gpus_per_job < 0 or a.cells_per_job < 0 or a.time < 1:
                raise LaunchError("--gpus_per_job and --cells_per_job must be >= 0, --time >= 1")
            return submit(a)
        return status(a) if a.verb == "status" else cancel(a)
    except Exception as e:
        from cnnlab.errors import CnnlabError

        if isinstance(e, (LaunchError, CnnlabError)):
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
