"""Run an ablation grid in-process: `run_grid(config, workdir)` -> one CellResult per cell.

Every cell is a real training run (`cnnlab.train.train`) in WORKDIR/cells/<cell>/run/ with its
own orbax checkpoints; its CellResult is written atomically to WORKDIR/cells/<cell>/result.json.
Re-running skips finished cells and resumes interrupted ones from their checkpoints; a cell that
fails (non-finite loss, bad config, bad data) is recorded with its reason and the grid goes on.
"""

import json
import math
import time
from pathlib import Path

import jax

from cnnlab import data, train
from cnnlab import progress as bars
from cnnlab.ablation.diagnostics import activation_sparsity, layer_grad_norms
from cnnlab.ablation.grid import cell_config, cell_name, expand, label, shard
from cnnlab.ablation.result import CellResult
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.records import read_metrics, write_json_atomic
from cnnlab.summary import summary

TAIL = 0.1  # final training loss: mean over this last fraction of the steps


class Diagnostics:
    """Train hook: per-layer gradient norms at chosen steps (step 0: at initialisation) and the
    final head's training loss over the last `TAIL` of the steps, kept in a file so that a
    resumed run still has the steps it ran before the restart."""

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
    result = CellResult(cell_name(overrides), overrides)
    diag = Diagnostics(cell_dir, cfg.get("grad_norm_steps", (0,)), cfg.train.steps)
    try:
        res = train.train(cfg, cell_dir / "run", progress=False, hook=diag)
    except CnnlabError as e:
        result.reason = str(e).split(". ")[0]
        return result
    x = next(iter(data.eval_batches(res.dataset, 64, image_size=cfg.data.image_size or None)))
    images = x["image"]
    s = summary(res.model, images[:1])
    curves = [
        {"split": sp, "step": st, **m} for (sp, st), m in read_metrics(cell_dir / "run").items()
    ]
    result.status = "done"
    result.metrics = res.metrics
    result.train_loss = diag.train_loss()
    result.params, result.macs = s.total_params, s.conv_dense_macs
    result.first_step_s, result.step_s = res.first_step_s, res.step_s
    result.grad_norms = diag.grad_norms
    result.sparsity = activation_sparsity(res.model, res.state, images)
    result.curves = sorted(curves, key=lambda m: (m["step"], m["split"]))
    # where the cell's wall time went; 'other' = model build, data open, diagnostics, summary
    timing = {k: round(v, 3) for k, v in res.timing.items()}
    timing["wall_s"] = round(time.perf_counter() - t0, 3)
    timing["other_s"] = round(timing["wall_s"] - sum(res.timing.values()), 3)
    result.timing = timing
    return result


def grid_spec(config) -> dict:
    """What the report needs from the config: axes (dotted key, value labels) in grid order,
    the claims to judge, and the recipe shared by every cell."""
    o, t = config.optim, config.train
    recipe = {
        "steps": t.steps,
        "batch_size": config.data.batch_size,
        "dataset": config.data.name,
        "optimizer": o.optimizer,
        "peak_lr": train.peak_lr(o, config.data.batch_size),
        "schedule": o.schedule,
        "warmup_steps": o.get("warmup_steps", 0),
        "weight_decay": o.weight_decay,
        "precise_bn": bool(t.get("precise_bn")),
        "train_subset": t.get("train_subset", 0),
        # on in the base config, or in some cells through a grid axis
        "zero_init_residual": bool(config.model.kwargs.get("zero_init_residual", False))
        or any(k.endswith("zero_init_residual") and True in v for k, v in config.grid),
    }
    return {
        "axes": [[key, [label(v) for v in values]] for key, values in config.grid],
        "claims": [list(c) for c in config.get("claims", ())],
        "when": [
            [list(map(list, cond)), list(map(list, extra))]
            for cond, extra in config.get("when", ())
        ],
        "recipe": recipe,
    }


def check_grid(config, spec: str = "0/1") -> list[dict]:
    """The cells of this shard, each config checked before anything trains (ValueError)."""
    cells = shard(expand(config.grid), spec)
    for overrides in cells:
        try:
            train.validate(cell_config(config, overrides))
        except ConfigError as e:
            raise ConfigError(f"grid cell {cell_name(overrides)}: {e}") from None
    return cells


def run_grid(config, workdir, *, shard: str = "0/1", progress: bool = True) -> list[CellResult]:
    """Train every cell of this shard of `config.grid` in `workdir` (resumable)."""
    workdir = Path(workdir).absolute()
    cells = check_grid(config, shard)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "grid.json", grid_spec(config))
    quiet = not progress or jax.process_index() > 0
    bar = bars.bar(cells, desc="grid", unit="cell", disable=quiet)
    say = (lambda msg: None) if quiet else bars.write
    results = []
    for overrides in bar:
        name = cell_name(overrides)
        bar.set_postfix_str(name)
        done = workdir / "cells" / name / "result.json"
        if done.exists() and (r := CellResult.load(done)).done:
            say(f"skip (finished): {name}")
            results.append(r)
            continue
        t0 = time.perf_counter()
        r = run_cell(config, overrides, done.parent)
        r.save(done)
        r = CellResult.load(done)  # as a later run or the report will see it (JSON types)
        results.append(r)
        acc = r.metrics.get("accuracy")
        tail = f", test accuracy {acc:.4f}" if acc is not None else f" ({r.reason})"
        say(f"{r.status}: {name} in {time.perf_counter() - t0:.0f}s{tail}")
    return results
