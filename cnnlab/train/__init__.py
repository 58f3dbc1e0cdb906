"""Training: pure jitted steps, deep-supervision losses, optax optimisers, orbax checkpoints."""

from cnnlab.train.checkpoint import Checkpointer, CheckpointError
from cnnlab.train.config import ConfigError, validate
from cnnlab.train.loop import NonFiniteLoss, TrainResult, train
from cnnlab.train.losses import SIDE_SCHEDULES, cross_entropy, side_weight
from cnnlab.train.optim import make_optimizer, peak_lr
from cnnlab.train.precise_bn import precise_batch_stats
from cnnlab.train.step import StepConfig, TrainState, eval_step, train_step

__all__ = [
    "SIDE_SCHEDULES",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "NonFiniteLoss",
    "StepConfig",
    "TrainResult",
    "TrainState",
    "cross_entropy",
    "eval_step",
    "make_optimizer",
    "peak_lr",
    "precise_batch_stats",
    "side_weight",
    "train",
    "train_step",
    "validate",
]
