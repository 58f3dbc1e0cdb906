"""Run an ablation grid in-process: `run_grid(config, workdir)` -> one CellResult per cell.

Every cell is a real training run (`cnnlab.train.train`) in WORKDIR/cells/<cell>/run/ with its
own orbax checkpoints; its CellResult is written atomically to WORKDIR/cells/<cell>/result.json.
Re-running skips finished cells and resumes interrupted ones from their checkpoints; a cell that
fails (non-finite loss, bad config, bad data) is recorded with its reason and the grid goes on.
"""

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from cnnlab import data, dotted, train
from cnnlab import progress as bars
from cnnlab.ablation import duplicates, two_stage
from cnnlab.ablation.claims import parse_claims
from cnnlab.ablation.diagnostics import activation_sparsity, forward_order, layer_grad_norms
from cnnlab.ablation.findings import verdicts
from cnnlab.ablation.grid import cell_config, cell_name, expand, grid_axes, label
from cnnlab.ablation.grid import shard as shard_cells
from cnnlab.ablation.result import CellResult, read_result
from cnnlab.errors import CnnlabError, ConfigError, WorkdirBusy
from cnnlab.records import read_metrics, write_json_atomic
from cnnlab.summary import summary
from cnnlab.train import compiled, preempt
from cnnlab.train.batched import NO_EARLY_STOPPING
from cnnlab.train.loop import warn
from cnnlab.train.spec import recipe_change

TAIL = 0.1  # final training loss: mean over this last fraction of the steps
# what a grid config has beside a training config's keys (ablate_default.py defines each)
GRID_KEYS = ("name", "grid", "batch_seeds", "grad_norm_steps", "when", "two_stage", "claims")


class Diagnostics:
    """Train hook: per-layer gradient norms at chosen steps (step 0: at initialisation) and the
    final head's training loss over the last `TAIL` of the steps, kept in a file so that a
    resumed run still has the steps it ran before the restart."""

    @classmethod
    def of(cls, cfg, cell_dir: Path) -> "Diagnostics":
        """The diagnostics a cell's config asks for (config.grad_norm_steps)."""
        return cls(cell_dir, cfg.grad_norm_steps, cfg.train.steps)

    exact_state = False  # reads only the state's tree structure: the loop need not wait

    def __init__(self, cell_dir: Path, grad_norm_steps, steps: int):
        self.path = cell_dir / "diagnostics.json"
        self.grad_steps = set(grad_norm_steps)
        self.needs_layer_grad_norms = bool(self.grad_steps)  # fit compiles the step with them
        self.tail_from = steps - max(1, math.ceil(TAIL * steps))
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.grad_norms = saved.get("grad_norms", {})
        self.tail = saved.get("train_loss_tail", {})

    def __call__(self, step, state, metrics):
        changed = False
        if step in self.grad_steps and str(step) not in self.grad_norms:  # gradients of `step`
            self.grad_norms[str(step)] = layer_grad_norms(state, metrics)
            changed = True
        if step >= self.tail_from:
            self.tail[str(step)] = float(metrics["loss"])
            changed = True
        if changed:
            write_json_atomic(
                self.path, {"grad_norms": self.grad_norms, "train_loss_tail": self.tail}
            )

    def train_loss(self) -> float | None:
        return sum(self.tail.values()) / len(self.tail) if self.tail else None


def run_cell(config, overrides: dict, cell_dir: Path) -> CellResult:
    """Train one cell of the grid in `cell_dir` and collect its diagnostics."""
    t0 = time.perf_counter()
    cfg = cell_config(config, overrides)
    cell_dir.mkdir(parents=True, exist_ok=True)
    diag = Diagnostics.of(cfg, cell_dir)
    try:
        res = train.train(cfg, cell_dir / "run", progress=False, hook=diag)
    except WorkdirBusy:  # another process trains this cell: not a failure of the cell
        raise
    except CnnlabError as e:
        return failed(overrides, e)
    return collect(cfg, overrides, cell_dir, res, diag, time.perf_counter() - t0)


def run_seeds(config, group: list[dict], workdir: Path) -> list[CellResult]:
    """Train the cells of `group` (one configuration, several seeds) together
    (`cnnlab.train.batched`, config.batch_seeds); -> a CellResult per cell, as `run_cell`'s.
    Each cell's wall time is its share of the group's."""
    t0 = time.perf_counter()
    cfgs = [cell_config(config, o) for o in group]
    dirs = [workdir / "cells" / cell_name(o) for o in group]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    diags = [Diagnostics.of(cfg, d) for cfg, d in zip(cfgs, dirs, strict=True)]
    try:
        outs = train.train_seeds(
            cfgs, [d / "run" for d in dirs], group_dir(workdir, group), progress=False, hooks=diags
        )
    except WorkdirBusy:
        raise
    except CnnlabError as e:
        return [failed(o, e) for o in group]
    wall = (time.perf_counter() - t0) / len(group)
    return [
        failed(o, out) if isinstance(out, Exception) else collect(cfg, o, d, out, diag, wall)
        for cfg, o, d, out, diag in zip(cfgs, group, dirs, outs, diags, strict=True)
    ]


def group_dir(workdir: Path, group: list[dict]) -> Path:
    """Where seeds trained together keep their group's checkpoints: WORKDIR/batched/<name>."""
    seeds = "+".join(str(o["seed"]) for o in group)
    return workdir / "batched" / cell_name({**group[0], "seed": seeds})


def failed(overrides: dict, error: Exception) -> CellResult:
    return CellResult(cell_name(overrides), overrides, reason=str(error).split(". ")[0])


def collect(cfg, overrides: dict, cell_dir: Path, res, diag, wall_s: float) -> CellResult:
    """A trained cell's CellResult: metrics, diagnostics, size, curves and where its wall time
    (`wall_s`) went."""
    result = CellResult(cell_name(overrides), overrides)
    x = next(
        iter(data.eval_batches(res.dataset, 64, image_size=train.DataSpec.of(cfg.data).resize))
    )
    images = x["image"]
    s = _summary(res.model, images[:1].shape, str(images.dtype))
    curves = [
        {"split": sp, "step": st, **m} for (sp, st), m in read_metrics(cell_dir / "run").items()
    ]
    result.status = "done"
    result.metrics = res.metrics
    result.train_loss = diag.train_loss()
    result.params, result.macs = s.total_params, s.conv_dense_macs
    result.first_step_s, result.step_s = res.first_step_s, res.step_s
    rows = [r.path for r in s.rows]  # forward order: jax hands back dicts sorted by key
    for step, pairs in diag.grad_norms.items():
        norm = dict(pairs)
        result.grad_norms[step] = [(p, norm[p]) for p in forward_order(norm, rows)]
    result.sparsity = activation_sparsity(res.model, res.state, images, rows)
    result.curves = sorted(curves, key=lambda m: (m["step"], m["split"]))
    # where the cell's wall time went; 'other' = model build, data open, diagnostics, summary
    timing = {k: round(v, 3) for k, v in res.timing.items()}
    timing["wall_s"] = round(wall_s, 3)
    timing["other_s"] = round(timing["wall_s"] - sum(res.timing.values()), 3)
    result.timing = timing
    return result


@compiled.per_value
def _summary(model, shape: tuple, dtype: str):
    """cnnlab.summary of `model` for an input of `shape`, traced once per model and shape."""
    return summary(model, jnp.zeros(shape, dtype))


def grid_spec(config) -> dict:
    """What the report needs from the config: axes (dotted key, value labels) in grid order,
    the claims to judge, and the recipe shared by every cell."""
    o, t = config.optim, config.train
    axes = grid_axes(config.grid)
    recipe = {
        "steps": t.steps,
        "batch_size": config.data.batch_size,
        "dataset": config.data.name,
        "optimizer": o.optimizer,
        "peak_lr": train.OptimSpec.of(o).peak_lr(config.data.batch_size),
        "schedule": o.schedule,
        "warmup_steps": o.warmup_steps,
        "weight_decay": o.weight_decay,
        "precise_bn": t.precise_bn,
        "train_subset": t.train_subset,
        # on in the base config, or in some cells through a grid axis
        "zero_init_residual": bool(config.model.kwargs.get("zero_init_residual", False))
        or any(k.endswith("zero_init_residual") and True in v for k, v in axes),
    }
    ts = _two_stage(config)
    return {
        "axes": [[key, [label(v) for v in values]] for key, values in axes],
        "claims": [_plain(dict(c)) for c in config.claims],
        "level": ts.level,
        "two_stage": {"max_seeds": ts.max_seeds, "budget_s": ts.budget_s},
        "when": [[list(map(list, cond)), list(map(list, extra))] for cond, extra in config.when],
        "recipe": recipe,
    }


def _plain(x):
    """Tuples -> lists, recursively (as JSON stores them)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return [_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _two_stage(config) -> two_stage.TwoStage:
    seeds = dict(grid_axes(config.grid)).get("seed", [config.seed])
    return two_stage.TwoStage.of(config, seeds)


def claims_of(config) -> list:
    """The config's claims, checked against its grid (axes, values, cells) before training."""
    axes = [(k, [label(v) for v in vs]) for k, vs in grid_axes(config.grid) if k != "seed"]
    keys = [k for k, _ in axes]
    configs = {tuple(label(o.get(k)) for k in keys) for o in expand(config.grid)}
    return parse_claims(config.claims, axes, configs)


def check_grid(config, spec: str = "0/1") -> list[dict]:
    """The cells of this shard, each config checked before anything trains (ValueError), and
    the claims and two-stage settings with them."""
    missing = [k for k in GRID_KEYS if k not in config]
    if missing:
        raise ConfigError(
            f"config lacks the grid keys {missing}; start from "
            f"experiments/configs/ablate_default.py, which defines each with its default"
        )
    cells = shard_cells(expand(config.grid), spec)
    batch_seeds = config.batch_seeds
    if not isinstance(batch_seeds, bool):
        raise ConfigError(f"config.batch_seeds={batch_seeds!r} must be True or False")
    for overrides in cells:
        try:
            cfg = cell_config(config, overrides)
            train.validate(cfg)
            if batch_seeds and cfg.train.patience:
                raise ConfigError(NO_EARLY_STOPPING)
        except ConfigError as e:
            raise ConfigError(f"grid cell {cell_name(overrides)}: {e}") from None
    claims_of(config)
    _two_stage(config)
    return cells


def run_grid(config, workdir, *, shard: str = "0/1", progress: bool = True,
             accept_changes: bool = False, only=None) -> list[CellResult]:  # fmt: skip
    """Train every cell of this shard of `config.grid` in `workdir` (resumable); with
    config.two_stage, then the seeds its plan adds (`cnnlab.ablation.two_stage`). A workdir
    belongs to one grid: another grid, or cells whose configs changed, are a ConfigError unless
    `accept_changes` (then finished cells are kept as they are). `only`: cell names, the share
    of one job of a cluster array (launch/slurm.py); every cell is still validated."""
    workdir = Path(workdir).absolute()
    cells = check_grid(config, shard)
    if only is not None:
        cells = [o for o in cells if cell_name(o) in set(only)]
    if not accept_changes:
        check_same_grid(config, workdir, cells)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "grid.json", grid_spec(config))
    quiet = not progress or jax.process_index() > 0
    say = (lambda msg: None) if quiet else bars.write
    # SIGTERM / SIGINT: the cell in training saves, the grid stops; a second Ctrl-C stops at once
    kept = f"every finished cell in {workdir} and the last checkpoint of the cell in training"
    with preempt.stop_on_signals(kept=kept):
        return _run_grid(config, cells, workdir, shard, quiet, say)


def report_grid(config, workdir, *, accept_changes: bool = False) -> None:
    """Before a report of `workdir`'s cells is (re)built from `config` (`--report_only`): the
    report judges the claims of the workdir's grid.json, so a config whose grid.json differs
    (new claims, another recipe) is a ConfigError, or, with `accept_changes`, this config's
    grid.json replaces it (nothing trains: the new claims are judged on the cells there)."""
    workdir = Path(workdir).absolute()
    if not accept_changes:
        check_same_grid(config, workdir, [])
    if (workdir / "grid.json").exists() or accept_changes:
        workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(workdir / "grid.json", grid_spec(config))


def check_same_grid(config, workdir: Path, cells: list[dict]) -> None:
    """A re-run into an existing workdir must be the grid that made it: its grid.json (axes,
    claims, recipe) and every started cell's config.json as this config resolves them."""
    changed = None
    saved = workdir / "grid.json"
    if saved.exists():
        found = dotted.first_difference(json.loads(saved.read_text()), _json(grid_spec(config)))
        changed = found and (f"grid.json {found[0]}", found[1], found[2])
    for o in [] if changed else cells:
        found = _cell_change(config, o, workdir, dotted.first_difference)
        if found:
            changed = (f"cell {cell_name(o)}: config {found[0]}", found[1], found[2])
            break
    if changed:
        what, old, new = changed
        raise ConfigError(
            f"{workdir} holds results of another grid: {what} is {old!r} there and {new!r} in "
            f"this config; use another --workdir for this grid, or pass --accept_changes to run "
            f"it into this one (finished cells are kept as they are)"
        )


def _cell_change(config, o: dict, workdir: Path, compare):
    """`compare(saved, now)` of a started cell's config.json and the config this grid gives
    it (None for a cell not started)."""
    path = workdir / "cells" / cell_name(o) / "run" / "config.json"
    if not path.exists():
        return None
    now = _json(json.loads(cell_config(config, o).to_json_best_effort()))
    return compare(json.loads(path.read_text()), now)


def _json(obj):
    return json.loads(json.dumps(obj, default=float))


def _run_grid(config, cells, workdir: Path, shard: str, quiet: bool, say) -> list[CellResult]:
    results = _train_cells(config, cells, workdir, quiet, say, "grid")
    ts = _two_stage(config)
    if not ts.on:
        return results
    plan = two_stage.load_plan(workdir) or _plan(config, workdir, ts, say)
    if plan is None:
        return results
    added = shard_cells(two_stage.plan_cells(plan), shard)
    say(f"two-stage seeds: {len(plan['cells'])} cells added by the plan ({len(added)} here)")
    return results + _train_cells(config, added, workdir, quiet, say, "stage 2")


def _plan(config, workdir: Path, ts, say) -> dict | None:
    """The second stage's plan from every pilot cell (all shards'), saved once; None while
    some pilot cells have not finished."""
    pilot = expand(config.grid)
    found = {}
    for o in pilot:
        path = workdir / "cells" / cell_name(o) / "result.json"
        if (r := read_result(path, warn)) is not None:
            found[cell_name(o)] = r
    if len(found) < len(pilot):
        say(
            f"two-stage seeds: {len(found)} of {len(pilot)} pilot cells finished (other shards "
            f"still running); run this command again once they have, to add the planned seeds"
        )
        return None
    from cnnlab.ablation.aggregate import axes_of

    results = list(found.values())
    axes = axes_of(results, grid_spec(config))
    claims = claims_of(config)
    plan = two_stage.make_plan(ts, claims, verdicts(claims, results, axes, ts.level), results)
    two_stage.save_plan(workdir, plan)
    return two_stage.load_plan(workdir)


def _train_cells(config, cells, workdir: Path, quiet: bool, say, desc: str) -> list[CellResult]:
    """Train `cells` (skipping finished ones), one at a time or seeds together."""
    same = duplicates.find(config, cells)
    for line in duplicates.explain(cells, same):
        warn(f"warning: {line}")
    bar = bars.bar(total=len(cells), desc=desc, unit="cell", disable=quiet)
    results = {}
    for batch in training_groups(config, cells):
        names = [cell_name(o) for o in batch]
        bar.set_postfix_str(names[0] if len(batch) == 1 else f"{names[0]} (+{len(batch) - 1})")
        todo = []
        for overrides, name in zip(batch, names, strict=True):
            done = workdir / "cells" / name / "result.json"
            r = read_result(done, warn, move_aside=True)
            if r is None and same.get(name) in results:  # trains as that cell did: reuse it
                r = dataclasses.replace(results[same[name]], name=name, overrides=overrides,
                                        timing={}, same_as=same[name])  # fmt: skip
                done.parent.mkdir(parents=True, exist_ok=True)
                r.save(done)
            if r is not None and (r.done or r.same_as):
                say(f"skip ({'same as ' + r.same_as if r.same_as else 'finished'}): {name}")
                results[name] = r
                bar.update(1)
            else:
                todo.append(overrides)
        if not todo:
            continue
        _restart_changed(config, todo, workdir)
        finished = sum(1 for r in results.values() if r.done)
        if (signum := preempt.agreed()) is not None:
            raise preempt.Preempted(
                f"grid stopped by {preempt.name(signum)} between cells ({finished} of "
                f"{len(cells)} finished, kept); run the same command to resume",
                signum,
            )
        t0 = time.perf_counter()
        try:
            if len(todo) > 1:
                fresh = run_seeds(config, todo, workdir)
            else:
                fresh = [run_cell(config, todo[0], workdir / "cells" / cell_name(todo[0]))]
        except preempt.Preempted as e:
            raise preempt.Preempted(
                f"grid stopped in cell {', '.join(cell_name(o) for o in todo)} ({finished} of "
                f"{len(cells)} cells finished, kept): {e}",
                e.signum,
            ) from None
        for r in fresh:
            done = workdir / "cells" / r.name / "result.json"
            r.save(done)
            r = results[r.name] = CellResult.load(done)  # as a later run or the report sees it
            acc = r.metrics.get("accuracy")
            tail = f", test accuracy {acc:.4f}" if acc is not None else f" ({r.reason})"
            say(f"{r.status}: {r.name} in {time.perf_counter() - t0:.0f}s{tail}")
            bar.update(1)
    bar.close()
    return [results[cell_name(o)] for o in cells]


def _restart_changed(config, todo: list[dict], workdir: Path) -> None:
    """Started cells whose recipe changed (a grid run with accept_changes: without it,
    check_same_grid refused already) restart rather than resume on a mixed recipe: the cell's
    folder, and its seeds' group checkpoints, move to WORKDIR/replaced/ (kept, not read)."""
    moved = [
        (workdir / "cells" / cell_name(o), change)
        for o in todo
        if (change := _cell_change(config, o, workdir, recipe_change))
    ]
    if not moved or jax.process_index() > 0:
        return
    aside = workdir / "replaced" / time.strftime("%Y%m%d-%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    for cell, (key, old, new) in moved:
        os.replace(cell, aside / cell.name)
        warn(f"warning: cell {cell.name} had started on another recipe ({key}: {old!r} -> "
             f"{new!r}); it restarts, its old folder kept in {aside}")  # fmt: skip
    if len(todo) > 1 and (group := group_dir(workdir, todo)).exists():
        os.replace(group, aside / f"batched-{group.name}")


def training_groups(config, cells: list[dict]) -> list[list[dict]]:
    """The cells in the order they train: one each, or with config.batch_seeds the cells that
    differ only in `seed` together (at the place of the first of them)."""
    if not config.batch_seeds:
        return [[o] for o in cells]
    groups: dict[str, list[dict]] = {}
    for o in cells:
        rest = {k: v for k, v in o.items() if k != "seed"}
        if "seed" not in o or _when_reads_seed(config):
            groups[cell_name(o)] = [o]
        else:
            groups.setdefault(cell_name(rest), []).append(o)
    return list(groups.values())


def _when_reads_seed(config) -> bool:
    """A `config.when` condition on the seed would give seeds different recipes."""
    return any(k == "seed" for condition, _ in config.when for k, _ in condition)
