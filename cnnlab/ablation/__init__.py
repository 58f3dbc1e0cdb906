"""Ablation grids: expand config axes into cells, train each (run), report across seeds.

results = run_grid(config, workdir)   # in a notebook or experiments.ablate
write_report(workdir)                  # results.csv/md, figures, report.md
"""

from cnnlab.ablation.aggregate import aggregate, axes_of
from cnnlab.ablation.diagnostics import activation_sparsity, forward_order, layer_grad_norms
from cnnlab.ablation.findings import findings
from cnnlab.ablation.grid import apply, cell_name, expand, shard
from cnnlab.ablation.report import write_report
from cnnlab.ablation.result import CellResult, load_results
from cnnlab.ablation.run import check_grid, report_grid, run_cell, run_grid, training_groups

__all__ = [
    "CellResult",
    "activation_sparsity",
    "aggregate",
    "apply",
    "axes_of",
    "cell_name",
    "check_grid",
    "expand",
    "findings",
    "forward_order",
    "layer_grad_norms",
    "load_results",
    "report_grid",
    "run_cell",
    "run_grid",
    "shard",
    "training_groups",
    "write_report",
]
