"""Fine-tuning versus training from scratch on the same labelled data and step budget.

WORKDIR/pretrain    the source run, trained here when config.finetune.source is empty
WORKDIR/seed<S>/finetune/phase1, phase2    the two-phase recipe per seed
WORKDIR/seed<S>/scratch                    the same model from random init, same data and steps
WORKDIR/report.md, results.json, curves.png
"""

from pathlib import Path

from cnnlab.finetune.recipe import PHASES, finetune
from cnnlab.finetune.report import write_report
from cnnlab.train.config import ConfigError
from cnnlab.train.loop import train


def budget(c) -> int:
    return sum(int(c[name].steps) for name in PHASES)


def scratch_config(c, seed: int):
    """Same data, model and step budget as the fine-tune; every parameter trained from init."""
    s = c.copy_and_resolve_references()
    s.seed = seed
    s.train.steps = budget(c)
    s.optim.lr = c.study.scratch_lr
    return s


def run_study(c, workdir, *, progress: bool = True) -> Path:
    """Pre-train if needed, fine-tune (and train from scratch) per seed, write the report."""
    workdir = Path(workdir).absolute()
    c = c.copy_and_resolve_references()
    if not c.finetune.source:
        if "pretrain" not in c:
            raise ConfigError(
                "config.finetune.source is empty: set it to the --workdir of a pre-training run"
            )
        train(c.pretrain, workdir / "pretrain", progress=progress)
        c.finetune.source = str(workdir / "pretrain")
    runs = {}
    for seed in c.study.seeds:
        cs = c.copy_and_resolve_references()
        cs.seed = int(seed)
        phases, _ = finetune(cs, workdir / f"seed{seed}" / "finetune", progress=progress)
        runs[int(seed)] = {"finetune": phases}
        if c.study.scratch:
            result = train(
                scratch_config(c, int(seed)), workdir / f"seed{seed}" / "scratch", progress=progress
            )
            runs[int(seed)]["scratch"] = result
    return write_report(c, workdir, runs)
