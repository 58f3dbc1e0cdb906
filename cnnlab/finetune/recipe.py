"""The two-phase fine-tuning recipe (Keras transfer-learning guide; Yosinski et al. 2014,
"How transferable are features in deep neural networks?", arXiv:1411.1792).

Phase 1 trains a new head on a frozen pre-trained backbone; phase 2 unfreezes the backbone's last
N units and continues with learning rates 10-100x lower, per group (head, backbone). Each phase is
an ordinary `fit` in WORKDIR/<phase>: checkpoints, resume, early stopping on validation loss.
"""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from cnnlab.finetune.freeze import FrozenApply, group_optimizer
from cnnlab.finetune.restore import load_backbone
from cnnlab.finetune.select import UNITS, call_order, frozen_norms, param_labels, select_frozen
from cnnlab.records import write_text_atomic
from cnnlab.summary import summary
from cnnlab.train import (
    ConfigError,
    RunSpec,
    TrainResult,
    build_model,
    check_model,
    fit,
    init_variables,
    input_shape,
    load_data,
)
from cnnlab.train.step import TrainState

PHASES = ("phase1", "phase2")
BN_MODES = ("frozen", "update")


@dataclasses.dataclass
class PhaseResult:
    name: str
    metrics: dict  # test (and val_*) metrics of the phase's final (best-val-loss) state
    trainable: int  # parameters trained in this phase
    frozen: int
    early_stopping: dict


def validate_finetune(c) -> None:
    """One-line errors for the fine-tuning keys (the rest is checked by train.validate)."""
    missing = [k for k in ("finetune", *PHASES, "study") if k not in c]
    if missing:
        raise ConfigError(
            f"config has no {missing}: a fine-tuning config builds on "
            f"experiments/configs/finetune.py (its get_config() adds these keys)"
        )
    if c.finetune.bn not in BN_MODES:
        raise ConfigError(
            f"config.finetune.bn={c.finetune.bn!r} is not allowed; use one of {list(BN_MODES)}"
        )
    for name in PHASES:
        p = c[name]
        if p.unit not in UNITS:
            raise ConfigError(f"config.{name}.unit={p.unit!r} is not allowed; use one of {UNITS}")
        if p.backbone_lr == 0 and p.unfreeze_last != 0:
            raise ConfigError(
                f"config.{name}.backbone_lr=0 but unfreeze_last={p.unfreeze_last} unfreezes "
                f"backbone units; give them a learning rate (10-100x below config.{name}.lr)"
            )
        if p.steps < 0 or p.lr <= 0 or p.backbone_lr < 0:
            raise ConfigError(
                f"config.{name}: steps={p.steps} must be >= 0, lr={p.lr} > 0, "
                f"backbone_lr={p.backbone_lr} >= 0"
            )
    seeds = c.study.seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"config.study.seeds={seeds!r} must be a non-empty tuple of integers")
    if c.study.scratch and not c.study.scratch_lr > 0:
        raise ConfigError(f"config.study.scratch_lr={c.study.scratch_lr} must be > 0")
    if not any(c[name].steps for name in PHASES):
        raise ConfigError("config.phase1.steps and config.phase2.steps are both 0: nothing to do")


def phase_state(c, spec: RunSpec, name: str, model, variables, order):
    """Train state for one phase (`spec`: its run spec): frozen set, per-group optimiser,
    frozen-BN apply."""
    p, new = c[name], tuple(c.finetune.new)
    try:
        frozen = select_frozen(
            variables["params"],
            order,
            unfreeze_last=p.unfreeze_last,
            unit=p.unit,
            unfreeze=tuple(p.unfreeze),
            freeze=tuple(p.freeze),
            new=new,
        )
    except ValueError as e:
        raise ConfigError(f"config.{name}: {e}") from None
    labels = param_labels(variables["params"], frozen, new)
    if set(jax.tree.leaves(labels)) == {"frozen"}:
        raise ConfigError(f"config.{name} freezes every parameter: nothing would train")
    if p.backbone_lr == 0 and "backbone" in jax.tree.leaves(labels):  # via unfreeze patterns
        raise ConfigError(
            f"config.{name}.backbone_lr=0 but config.{name}.unfreeze={tuple(p.unfreeze)} "
            f"unfreezes backbone parameters; give them a learning rate"
        )
    tx, schedules = group_optimizer(
        spec.optim, p.steps, labels, {"head": p.lr, "backbone": p.backbone_lr}
    )
    norms = frozen_norms(variables, frozen) if c.finetune.bn == "frozen" else frozenset()
    state = TrainState.create(FrozenApply(model.apply, frozen, norms), variables, tx)
    return state, frozen, schedules


def adopt_source(c):
    """A copy of config `c` whose model is what a pretrained config.finetune.source
    ('torchvision/resnet50:PATH', cnnlab.pretrained) needs: config.model.name and kwargs from
    the source, data.image_size its resolution where 0. Other sources: `c` as it is."""
    import ml_collections

    from cnnlab import pretrained

    try:
        found = pretrained.split_source(c.finetune.source)
    except pretrained.WeightsError as e:
        raise ConfigError(f"config.finetune.source: {e}") from None
    if not found:
        return c
    src, _ = found
    c = c.copy_and_resolve_references()
    c.model.name = src.model
    c.model.kwargs = ml_collections.ConfigDict(dict(src.kwargs))
    if not c.data.image_size:
        c.data.image_size = src.resolution
    return c


def source_data(c, ds):
    """The dataset normalised as a pretrained source's images were (ImageNet mean/std for
    torchvision, [-1, 1] or the caffe mean pixel for Keras); other sources: `ds` as it is."""
    from cnnlab import pretrained

    found = pretrained.split_source(c.finetune.source)
    if not found:
        return ds
    if ds.image_shape[-1] != 3:
        raise ConfigError(
            f"config.finetune.source={c.finetune.source!r} takes RGB images, but "
            f"{ds.name} has {ds.image_shape[-1]} channel(s); fine-tune on an RGB dataset"
        )
    mean, std = pretrained.normalisation(found[0].arch)
    return dataclasses.replace(ds, spec=dataclasses.replace(ds.spec, mean=mean, std=std))


def finetune(c, workdir, *, progress: bool = True, accept_changes: bool = False
             ) -> tuple[list[PhaseResult], TrainResult]:  # fmt: skip
    """Load the backbone from config.finetune.source and run the phases in WORKDIR/<phase>.

    Re-running resumes (a finished phase is not repeated); a phase resumes only on the recipe
    that made it, unless `accept_changes`. -> (per-phase results, last fit).
    """
    c = adopt_source(c)
    spec = RunSpec.of(c)  # validates the training keys
    validate_finetune(c)
    workdir = Path(workdir).absolute()
    ds = source_data(c, load_data(spec))
    model = build_model(spec, ds)
    shape = input_shape(spec, ds)
    check_model(model, shape)
    x = np.zeros((1, *shape), np.float32)
    variables = init_variables(spec, model, ds)
    variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    info = {}
    if c.finetune.source:
        variables, info = load_backbone(
            c.finetune.source, variables, step=c.finetune.source_step, new=tuple(c.finetune.new)
        )
    order = call_order(model, x)
    results, last = [], None
    for name in PHASES:
        p = c[name]
        if not p.steps:
            continue
        phase = spec.with_steps(p.steps)
        state, frozen, schedules = phase_state(c, phase, name, model, variables, order)
        table = summary(model, x, train=False, frozen=frozen)
        (workdir / name).mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            write_text_atomic(workdir / name / "summary.txt", str(table) + "\n")
        last = fit(
            phase,
            workdir / name,
            ds,
            model,
            state,
            schedules.get("head") or next(iter(schedules.values())),
            progress=progress,
            desc=f"{name} ({table.trainable_params:,} trainable)",
            accept_changes=accept_changes,
        )
        variables = {"params": last.state.params, "batch_stats": last.state.batch_stats}
        results.append(
            PhaseResult(
                name, last.metrics, table.trainable_params, table.frozen_params, last.early_stopping
            )
        )
    record = {"source": info, "phases": [dataclasses.asdict(r) for r in results]}
    if jax.process_index() == 0:
        write_text_atomic(
            workdir / "finetune.json", json.dumps(record, indent=2, default=str) + "\n"
        )
    return results, last
