"""Metric names in one place: what the train step and the evaluator write, and what config
validation, the ablation tables and the plots read back.

A run's final metrics: `accuracy`, `loss` (final head, test split), `side/<tap>/accuracy` ...
(each side head), `val_...` (validation split), `ema/...` (the weight average),
`train_subset/...` (eval mode on the first train_subset training images) and `precise_bn/...`
(with BatchNorm statistics recomputed over them); prefixes combine, e.g.
`precise_bn/train_subset/accuracy`.
"""

import re

SIDE, VAL, EMA, TRAIN_SUBSET, PRECISE_BN = "side/", "val_", "ema/", "train_subset/", "precise_bn/"
# every name a run records that ends in accuracy or loss (what best_metric may name)
RECORDED = re.compile(rf"({VAL}|{EMA}|{PRECISE_BN}|{TRAIN_SUBSET}|{SIDE}\w+/)*(accuracy|loss)")


def side(tap: str, what: str = "") -> str:
    """'side/<tap>/<what>' (what='': the head's prefix)."""
    return f"{SIDE}{tap}/{what}"


def prefixed(prefix: str, metrics: dict) -> dict:
    return {prefix + k: v for k, v in metrics.items()}


def side_tap(key: str) -> str | None:
    """'side/stage1/accuracy' -> 'stage1'; None for a key of no side head."""
    return key.split("/")[1] if key.startswith(SIDE) else None


# the parts of a run's wall time it records (cnnlab.train.loop; the report's time columns)
TIMING_KEYS = ("compile_s", "data_s", "compute_s", "eval_s", "checkpoint_s")
