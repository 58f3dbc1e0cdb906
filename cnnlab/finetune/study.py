"""Fine-tuning versus training from scratch on the same labelled data and step budget.

WORKDIR/pretrain    the source run, trained here when config.finetune.source is empty
WORKDIR/seed<S>/finetune/phase1, phase2    the two-phase recipe per seed
WORKDIR/seed<S>/scratch                    the same model from random init, same data and steps
WORKDIR/report.md, results.json, curves.png
"""

from pathlib import Path

import jax
import numpy as np

from cnnlab import data
from cnnlab.finetune.recipe import (
    PHASES,
    adopt_source,
    backbone,
    finetune,
    fit_to_data,
    validate_finetune,
)
from cnnlab.finetune.report import write_report
from cnnlab.train import (
    ConfigError,
    train,
    validate,
)


def budget(c) -> int:
    return sum(int(c[name].steps) for name in PHASES)


def scratch_config(c, seed: int):
    """Same data, model and step budget as the fine-tune; every parameter trained from init."""
    s = c.copy_and_resolve_references()
    s.seed = seed
    s.train.steps = budget(c)
    s.optim.lr = c.study.scratch_lr
    return s


def linear_probe(c) -> float:
    """Test accuracy of a scikit-learn logistic regression on the frozen backbone's pooled
    features of the same training images: an independent reference for phase 1."""
    from sklearn.linear_model import LogisticRegression

    c, _ = fit_to_data(adopt_source(c))
    spec, ds, model, variables, _, _ = backbone(c)
    features = jax.jit(lambda v, im: model.apply(v, im, train=False)[1]["pre_logits"])

    def split(name):
        xs, ys = [], []
        size = spec.data.resize
        for b in data.eval_batches(ds, spec.data.batch_size, image_size=size, split=name):
            keep = b["mask"] > 0
            xs.append(np.asarray(features(variables, b["image"]))[keep])
            ys.append(b["label"][keep])
        return np.concatenate(xs), np.concatenate(ys)

    probe = LogisticRegression(max_iter=5000).fit(*split("train"))
    return float(probe.score(*split("test")))


def run_study(c, workdir, *, progress: bool = True, accept_changes: bool = False,
              overrides: dict | None = None) -> Path:  # fmt: skip
    """Pre-train if needed, fine-tune (and train from scratch) per seed, write the report.
    `accept_changes`: runs resume on a changed recipe (else that is a ConfigError).
    `overrides`: the model keys the user set ({'model.kwargs.depth': 8}), checked against the
    source's model, which the fine-tune adopts (adopt_source)."""
    workdir = Path(workdir).absolute()
    c = c.copy_and_resolve_references()
    validate_finetune(c)
    c = adopt_source(c, overrides)  # the source sets the model
    validate(c)
    if c.study.scratch:
        validate(scratch_config(c, int(c.seed)))
    if not c.finetune.source:
        if "pretrain" not in c:
            raise ConfigError(
                "config.finetune.source is empty: set it to the --workdir of a pre-training run"
            )
        validate(c.pretrain)
        train(c.pretrain, workdir / "pretrain", progress=progress, accept_changes=accept_changes)
        c.finetune.source = str(workdir / "pretrain")
        c = adopt_source(c, overrides)
    c, said = fit_to_data(c)
    if said and jax.process_index() == 0:
        print(said)
    validate(c)
    runs = {}
    for seed in c.study.seeds:
        cs = c.copy_and_resolve_references()
        cs.seed = int(seed)
        phases, _ = finetune(cs, workdir / f"seed{seed}" / "finetune", progress=progress,
                             accept_changes=accept_changes)  # fmt: skip
        runs[int(seed)] = {"finetune": phases, "probe": linear_probe(cs)}
        if c.study.scratch:
            result = train(scratch_config(c, int(seed)), workdir / f"seed{seed}" / "scratch",
                           progress=progress, accept_changes=accept_changes)  # fmt: skip
            runs[int(seed)]["scratch"] = result
    if jax.process_index() > 0:  # process 0 writes the report
        return workdir / "report.md"
    return write_report(c, workdir, runs, notes=(said,) if said else ())
