"""Training: pure jitted steps, deep-supervision losses, optax optimisers, orbax checkpoints."""

from cnnlab.train.batched import train_seeds
from cnnlab.train.checkpoint import Checkpointer, CheckpointError
from cnnlab.train.config import (
    ConfigError,
    DataSpec,
    LossSpec,
    ModelSpec,
    OptimSpec,
    TrainSpec,
    check_model,
    validate,
)
from cnnlab.train.evaluation import Evaluator, RecomputeBN, evaluate, non_finite
from cnnlab.train.loop import (
    NonFiniteLoss,
    TrainResult,
    build_model,
    fit,
    init_variables,
    initial_state,
    input_shape,
    load_data,
    train,
)
from cnnlab.train.losses import SIDE_LOSSES, SIDE_SCHEDULES, cross_entropy, side_weight
from cnnlab.train.optim import make_optimizer
from cnnlab.train.precise_bn import precise_batch_stats
from cnnlab.train.spec import RunSpec
from cnnlab.train.step import StepConfig, TrainState, eval_step, train_step

__all__ = [
    "SIDE_LOSSES",
    "SIDE_SCHEDULES",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "DataSpec",
    "Evaluator",
    "LossSpec",
    "ModelSpec",
    "NonFiniteLoss",
    "OptimSpec",
    "RecomputeBN",
    "RunSpec",
    "StepConfig",
    "TrainResult",
    "TrainSpec",
    "TrainState",
    "build_model",
    "check_model",
    "cross_entropy",
    "eval_step",
    "evaluate",
    "fit",
    "init_variables",
    "initial_state",
    "input_shape",
    "load_data",
    "make_optimizer",
    "non_finite",
    "precise_batch_stats",
    "side_weight",
    "train",
    "train_seeds",
    "train_step",
    "validate",
]
