"""Default ablation grid: depth x skip x auxiliary loss x seeds, on the embedded digits.

    ./run python -m experiments.ablate            # this grid, into runs/ablate_default

CIFAR ResNets of depth 8, 20 and 56 (plain twins with skip=False; option-A shortcuts, so the twins
have identical parameters), with and without side heads on stage1 and stage2 (GoogLeNet weight
0.3), seeds 0 and 1: 24 cells of 150 SGD steps. 11 min 47 s measured on 2 CPU cores; re-running
skips finished cells and resumes interrupted ones. Writes results.{csv,md}, plots and report.md.
"""

from experiments.configs import base


def get_config():
    c = base.get_config()  # each cell's training config; the grid overrides its keys
    c.name = "ablate_default"
    c.train.steps = 150
    c.train.eval_every = 75
    c.train.log_every = 5
    c.train.keep_checkpoints = 1
    c.grad_norm_steps = (0, 75)  # steps at which per-layer gradient norms are recorded
    # (dotted config key, values): cells are the cartesian product, seeds last
    c.grid = (
        ("model.kwargs.depth", (8, 20, 56)),
        ("model.kwargs.skip", (True, False)),
        ("loss.side_taps", ((), ("stage1", "stage2"))),
        ("seed", (0, 1)),
    )
    return c
