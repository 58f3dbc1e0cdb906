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
from cnnlab.finetune.select import (
    UNITS,
    call_order,
    frozen_norms,
    is_new,
    param_labels,
    select_frozen,
    unit_name,
)
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
        evals = p.steps // max(int(c.train.eval_every), 1)
        if p.steps and c.train.patience and evals < c.train.patience + 1:
            raise ConfigError(
                f"config.train.patience={c.train.patience} can never stop config.{name} early: "
                f"its {p.steps} steps hold {evals} evals of config.train.eval_every="
                f"{c.train.eval_every}; lower eval_every to at most "
                f"{max(p.steps // (c.train.patience + 1), 1)} (or set patience=0)"
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


def source_config(source) -> dict | None:
    """The config.json of a cnnlab run named by config.finetune.source (its --workdir or its
    checkpoints/ directory); None when there is none (a bare checkpoints directory)."""
    from cnnlab.finetune.restore import checkpoint_dir

    for d in (Path(source).expanduser(), checkpoint_dir(source).parent):
        if (d / "config.json").is_file():
            try:
                return json.loads((d / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{d / 'config.json'} does not read as JSON ({e}); "
                                  f"re-run the source training") from None  # fmt: skip
    return None


def adopt_source(c, overrides: dict | None = None):
    """A copy of config `c` whose model is the source's: config.model.name and kwargs from a
    pretrained config.finetune.source ('torchvision/resnet50:PATH', cnnlab.pretrained), with
    data.image_size its resolution where 0, or from a cnnlab run's config.json. `overrides`
    ({'model.kwargs.depth': 8, ...}: what the user set on the command line) must agree with
    the source: a model key set to another value is a ConfigError naming both."""
    import ml_collections

    from cnnlab import pretrained

    try:
        found = pretrained.split_source(c.finetune.source)
    except pretrained.WeightsError as e:
        raise ConfigError(f"config.finetune.source: {e}") from None
    if found:
        src, _ = found
        name, kwargs, where = src.model, dict(src.kwargs), src.arch
    elif c.finetune.source and (saved := source_config(c.finetune.source)):
        model = saved.get("model") or {}
        if "name" not in model:
            return c
        name, kwargs = model["name"], dict(model.get("kwargs") or {})
        where = f"the source run's config.json ({c.finetune.source})"
    else:
        return c
    source_model = {"model.name": name, **{f"model.kwargs.{k}": v for k, v in kwargs.items()}}
    for key, value in (overrides or {}).items():
        if key in source_model and _same(source_model[key], value):
            continue
        if key in source_model or key.startswith("model.kwargs."):
            has = source_model.get(key, "unset")
            raise ConfigError(
                f"--config.{key}={value!r} but the fine-tuning source's model has {has!r} "
                f"({where}); leave the model keys out: a fine-tune uses the source's model"
            )
    c = c.copy_and_resolve_references()
    c.model.name = name
    c.model.kwargs = ml_collections.ConfigDict(kwargs)
    if found and not c.data.image_size:
        c.data.image_size = found[0].resolution
    return c


def _same(a, b) -> bool:
    """Config values equal as JSON writes them (tuples and lists alike)."""
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def fit_to_data(c):
    """A copy of `c` whose validation split and batch fit the training data, and the one line
    that says what was capped ('' when nothing was).

    data.val_per_class, when the smallest class cannot give it and keep an image to train on,
    becomes a fifth of that class's training examples (0 under 5: then no split and no early
    stopping; the test accuracy is the last step's); data.batch_size is at most the training
    examples left, a multiple of the device count."""
    from cnnlab.data.subset import labels_of
    from cnnlab.train.loop import open_dataset

    d = c.data
    ds = open_dataset(RunSpec.of(c))
    c, said = c.copy_and_resolve_references(), []
    if d.val_per_class or d.train_per_class or d.classes:
        labels = labels_of(ds.train)
        counts = [int(np.sum(labels == k)) for k in (d.classes or range(ds.num_classes))]
        fewest = min(counts)
        if d.val_per_class and d.val_per_class + max(d.train_per_class, 1) > fewest:
            c.data.val_per_class = max(0, fewest - d.train_per_class) // 5
            said.append(
                f"validation {c.data.val_per_class} per class (config.data.val_per_class="
                f"{d.val_per_class} capped at a fifth of the smallest class's {fewest} training "
                f"images{' left by train_per_class' if d.train_per_class else ''})"
            )
            if not c.data.val_per_class:
                c.train.patience, c.train.best_metric, c.train.best_mode = 0, "accuracy", "max"
                said[-1] += "; no early stopping: test accuracy is the last step's"
        left = [n - c.data.val_per_class for n in counts]
        train = sum(min(n, d.train_per_class) if d.train_per_class else n for n in left)
    else:
        train = len(ds.train)
    devices = jax.device_count()
    if c.data.batch_size > train:
        c.data.batch_size = max(devices, train // devices * devices)
        said.append(
            f"batch {c.data.batch_size} (config.data.batch_size={d.batch_size} capped at the "
            f"{train} training images)"
        )
    return c, f"{d.name}: " + "; ".join(said) if said else ""


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


def with_partners(order: list[str], new) -> tuple[str, ...]:
    """`new` patterns plus each module in a unit with a module they match: a re-initialised
    'stem_conv' brings its 'stem_norm', whose source statistics would not fit a fresh conv."""
    hit = {unit_name(m, "block") for m in order if is_new(m, new)}
    extra = [m for m in order if not is_new(m, new) and unit_name(m, "block") in hit]
    return (*new, *extra)


def backbone(c):
    """(spec, ds, model, variables, info, order) of fine-tuning config `c` (adopted: see
    adopt_source): its data normalised as the source's, its model, the source's backbone
    loaded (load_backbone's info, plus 'new_modules': the re-initialised patterns with their
    unit partners) and the top-level modules in call order."""
    spec = RunSpec.of(c)  # validates the training keys
    ds = source_data(c, load_data(spec))
    model = build_model(spec, ds)
    shape = input_shape(spec, ds)
    check_model(model, shape)
    order = call_order(model, np.zeros((1, *shape), np.float32))
    new = with_partners(order, tuple(c.finetune.new))
    variables = init_variables(spec, model, ds)
    variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    info = {"new": [], "adapted": {}}
    if c.finetune.source:
        variables, info = load_backbone(
            c.finetune.source, variables, step=c.finetune.source_step, new=new
        )
    return spec, ds, model, variables, {**info, "new_modules": list(new)}, order


def finetune(c, workdir, *, progress: bool = True, accept_changes: bool = False
             ) -> tuple[list[PhaseResult], TrainResult]:  # fmt: skip
    """Load the backbone from config.finetune.source and run the phases in WORKDIR/<phase>.

    Re-running resumes (a finished phase is not repeated); a phase resumes only on the recipe
    that made it, unless `accept_changes`. -> (per-phase results, last fit).
    """
    c, said = fit_to_data(adopt_source(c))
    if said and jax.process_index() == 0:
        print(said)
    validate_finetune(c)
    workdir = Path(workdir).absolute()
    spec, ds, model, variables, info, order = backbone(c)
    c = c.copy_and_resolve_references()
    c.finetune.new = tuple(info["new_modules"])
    x = np.zeros((1, *input_shape(spec, ds)), np.float32)
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
