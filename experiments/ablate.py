"""Ablation runner: `python -m experiments.ablate [--config=FILE] [--workdir=DIR] [--shard=i/N]`.

Runs every cell of the config's grid as a real training run with its own orbax checkpoints under
WORKDIR/cells/<cell>/, records diagnostics, then writes results.csv, results.md, PNG plots and
report.md to WORKDIR (default runs/<config name>). Re-running skips finished cells and resumes
interrupted ones; a failing cell is recorded with its reason and the grid goes on. Shards of one
grid (--shard=i/N, e.g. on several hosts) write their cells; --report_only merges all cells found.
"""

import json
import sys
import time
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

import cnnlab
from cnnlab import ablation, data, train
from experiments import runtime

DEFAULT_CONFIG = str(Path(__file__).parent / "configs" / "ablate_default.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Grid config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config name>).")
_SHARD = flags.DEFINE_string("shard", "0/1", "Run only cells i, i+N, ... of the grid (i/N).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only (re)build the report from cells.")

FAILURES = (train.ConfigError, data.DataError, train.NonFiniteLoss, train.CheckpointError)


class Diagnostics:
    """Train hook: per-layer gradient norms of chosen steps (step 0: at initialisation)."""

    def __init__(self, path: Path, steps):
        self.path, self.steps = path, set(steps)
        self.norms = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, step, state, metrics):
        if step in self.steps and str(step) not in self.norms:  # gradients of step `step`
            self.norms[str(step)] = ablation.layer_grad_norms(state, metrics)
            ablation.write_json_atomic(self.path, self.norms)


def run_cell(c, overrides: dict, cell_dir: Path) -> dict:
    t0 = time.perf_counter()
    cfg = ablation.apply(c, overrides)
    cell_dir.mkdir(parents=True, exist_ok=True)
    result = {"name": ablation.cell_name(overrides), "overrides": overrides, "status": "failed"}
    diag = Diagnostics(cell_dir / "grad_norms.json", c.grad_norm_steps)
    try:
        res = train.train(cfg, cell_dir / "run", progress=False, hook=diag)
    except FAILURES as e:
        result["reason"] = str(e).split(". ")[0]
        return result
    x = next(iter(data.eval_batches(res.dataset, 64)))["image"]
    s = cnnlab.summary(res.model, x[:1])
    curves = [json.loads(line) for line in (cell_dir / "run" / "metrics.jsonl").open()]
    result.update(
        status="done",
        metrics=res.metrics,
        params=s.total_params,
        macs=s.conv_dense_macs,
        first_step_s=res.first_step_s,
        step_s=res.step_s,
        grad_norms=diag.norms,
        sparsity=ablation.activation_sparsity(res.model, res.state, x),
        curves=curves,
    )
    # where the cell's wall time went; 'other' = model build, data open, diagnostics, summary
    timing = {k: round(v, 3) for k, v in res.timing.items()}
    timing["wall_s"] = round(time.perf_counter() - t0, 3)
    timing["other_s"] = round(timing["wall_s"] - sum(res.timing.values()), 3)
    result["timing"] = timing
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    c = _CONFIG.value
    workdir = Path(_WORKDIR.value or Path("runs") / c.name).absolute()
    if workdir.exists() and not workdir.is_dir():
        sys.exit(f"error: --workdir={workdir} exists and is not a directory; pass another path")
    workdir.mkdir(parents=True, exist_ok=True)
    # identical cells across seeds reuse compiled code, also across processes and re-runs
    runtime.start(default_cache=str(workdir / "jax_cache"))
    print(f"workdir: {workdir}")
    try:
        cells = ablation.shard(ablation.expand(c.grid), _SHARD.value)
        if not _REPORT_ONLY.value:
            for overrides in cells:  # fail fast on grid keys the config does not have
                train.validate(ablation.apply(c, overrides))
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not _REPORT_ONLY.value:
        bar = tqdm(
            cells, desc="grid", unit="cell", dynamic_ncols=True, disable=jax.process_index() > 0
        )
        for overrides in bar:
            name = ablation.cell_name(overrides)
            bar.set_postfix_str(name)
            cell_dir = workdir / "cells" / name
            done = cell_dir / "result.json"
            if done.exists() and json.loads(done.read_text())["status"] == "done":
                tqdm.write(f"skip (finished): {name}")
                continue
            t0 = time.perf_counter()
            result = run_cell(c, overrides, cell_dir)
            ablation.write_json_atomic(done, result)
            acc = result.get("metrics", {}).get("accuracy")
            tqdm.write(
                f"{result['status']}: {name} in {time.perf_counter() - t0:.0f}s"
                + (
                    f", test accuracy {acc:.4f}"
                    if acc is not None
                    else f" ({result.get('reason')})"
                )
            )
    if jax.process_index() > 0:  # process 0 writes the report (every process ran every cell)
        return
    try:
        out = ablation.write_report(workdir, f"Ablation: {c.name}")
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote results.csv, results.md, report.md and {len(out['plots'])} plots to {workdir}")
    print((workdir / "report.md").read_text().split("## Plots")[0])


if __name__ == "__main__":
    app.run(main)
