"""Ablation runner: `python -m experiments.ablate [--config=FILE] [--workdir=DIR] [--shard=i/N]`.

Trains every cell of the config's grid (`cnnlab.ablation.run_grid`: real runs with their own
checkpoints under WORKDIR/cells/<cell>/, resumable, failures recorded), then writes results.csv,
results.md, figures and report.md to WORKDIR (default runs/<config name>). Shards of one grid
(--shard=i/N, e.g. on several hosts) write their cells; --report_only merges all cells found.
"""

from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, runtime

DEFAULT_CONFIG = str(Path(__file__).parent / "configs" / "ablate_default.py")
_CONFIG = config_flags.DEFINE_config_file("config", None, f"Grid config file ({DEFAULT_CONFIG}).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config name>).")
_SHARD = flags.DEFINE_string("shard", "0/1", "Run only cells i, i+N, ... of the grid (i/N).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only (re)build the report from cells.")
_ACCEPT = cli.accept_changes_flag(
    "Run a changed grid into a workdir made by another (finished cells are kept as they are, "
    "started ones restart); without it that is an error naming the first difference."
)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # before the imports (matplotlib logs a font cache)
    import jax  # here, not at the top: flag errors come before JAX is imported

    from cnnlab import ablation

    c = _CONFIG.value
    workdir = runtime.workdir(_WORKDIR.value, default=Path("runs") / str(c.get("name", "grid")))
    # first, before any JAX call (jax.distributed); writes nothing. Identical cells across
    # seeds reuse compiled code, also across processes and re-runs.
    runtime.start(default_cache=str(workdir / "jax_cache"))
    if _REPORT_ONLY.value:  # every cell's config is checked before anything is written
        ablation.shard(ablation.expand(c.grid), _SHARD.value)
    else:
        ablation.check_grid(c, _SHARD.value)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {workdir}")
    if not _REPORT_ONLY.value:
        ablation.run_grid(c, workdir, shard=_SHARD.value, accept_changes=_ACCEPT.value)
    elif jax.process_index() == 0:  # the claims judged are grid.json's: this config's, checked
        ablation.report_grid(c, workdir, accept_changes=_ACCEPT.value)
    if jax.process_index() > 0:  # process 0 writes the report (every process ran every cell)
        return
    out = ablation.write_report(workdir, f"Ablation: {c.name}")
    print(f"wrote results.csv, results.md, report.md and {len(out['plots'])} figures to {workdir}")
    print((workdir / "report.md").read_text().split("## Figures")[0])


if __name__ == "__main__":
    cli.run(main, default_config=DEFAULT_CONFIG)
