"""Transfer learning: load a pre-trained backbone, freeze by selection, fine-tune in two phases.

    from cnnlab import finetune
    variables, info = finetune.load_backbone("runs/pretrain", variables)   # new head kept
    frozen = finetune.select_frozen(variables["params"], order, unfreeze_last=2, unit="block")
    state = TrainState.create(finetune.FrozenApply(model.apply, frozen, norms), variables, tx)

`python -m experiments.finetune` runs the recipe and the from-scratch comparison.
"""

from cnnlab.finetune.freeze import FrozenApply, group_optimizer
from cnnlab.finetune.recipe import PHASES, PhaseResult, finetune, phase_state, validate_finetune
from cnnlab.finetune.restore import checkpoint_dir, load_backbone
from cnnlab.finetune.select import (
    NEW,
    UNITS,
    call_order,
    frozen_norms,
    is_new,
    param_labels,
    paths,
    select_frozen,
    units,
)
from cnnlab.finetune.study import run_study, scratch_config

__all__ = [
    "NEW",
    "PHASES",
    "UNITS",
    "FrozenApply",
    "PhaseResult",
    "call_order",
    "checkpoint_dir",
    "finetune",
    "frozen_norms",
    "group_optimizer",
    "is_new",
    "load_backbone",
    "param_labels",
    "paths",
    "phase_state",
    "run_study",
    "scratch_config",
    "select_frozen",
    "units",
    "validate_finetune",
]
