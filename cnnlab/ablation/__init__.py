"""Ablation grids: expand config axes into cells, diagnose each run, report across seeds."""

from cnnlab.ablation.diagnostics import activation_sparsity, layer_grad_norms
from cnnlab.ablation.grid import apply, cell_name, expand, shard, write_json_atomic
from cnnlab.ablation.report import aggregate, findings, load_results, write_report

__all__ = [
    "activation_sparsity",
    "aggregate",
    "apply",
    "cell_name",
    "expand",
    "findings",
    "layer_grad_norms",
    "load_results",
    "shard",
    "write_json_atomic",
    "write_report",
]
