"""`RunSpec`: what one training run needs from its config, derived once.

`RunSpec.of(config)` validates the config (`cnnlab.train.validate`, the one place its rules
live) and reads every value the loop, the evaluation and the checkpoints use; they read the spec,
never the config. The resolved config itself travels along (`spec.config`) to be saved with the
run."""

import dataclasses
import json

from cnnlab.train.config import validate
from cnnlab.train.step import StepConfig


def step_config(c, steps: int | None = None) -> StepConfig:
    """The static settings of the train and eval steps for config `c` (over `steps` steps)."""
    return StepConfig(
        total_steps=int(steps or c.train.steps),
        label_smoothing=c.loss.label_smoothing,
        side_weight=c.loss.side_weight,
        side_schedule=c.loss.side_schedule,
        side_gamma=c.loss.side_gamma,
        side_drop_step=c.loss.side_drop_step,
        compute_dtype=c.train.compute_dtype,
        ema_decay=float(c.train.get("ema_decay", 0.0)),
    )


def best_rule(train) -> tuple[str, str]:
    """(metric, mode) of the checkpoint a run keeps besides its last N, from its `train` config
    (a ConfigDict or the JSON saved with it): with early stopping (patience > 0) the best
    validation loss, where the run ends; else train.best_metric by train.best_mode."""
    if int(train.get("patience", 0)):
        return "val_loss", "min"
    return train.get("best_metric", "accuracy"), train.get("best_mode", "max")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    steps: int
    seed: int
    batch_size: int  # global, split over the devices
    image_size: int | None  # resize to image_size² (None: as stored)
    augment: bool
    eval_every: int  # also the checkpoint interval
    log_every: int
    keep_checkpoints: int
    best_metric: str  # the checkpoint kept besides the last `keep_checkpoints`
    best_mode: str
    patience: int  # early stopping on validation loss (0: off)
    min_delta: float
    train_subset: int  # training images for eval-mode subset metrics and BN recomputation
    precise_bn: bool
    step: StepConfig
    model_name: str
    config: dict  # the resolved config, as JSON: config.json and every checkpoint's meta

    @classmethod
    def of(cls, c, steps: int | None = None) -> "RunSpec":
        """The spec of a run of config `c` (for `steps` steps, default `c.train.steps`)."""
        validate(c)
        t = c.train
        patience = int(t.get("patience", 0))
        best = best_rule(t)
        return cls(
            steps=int(steps or t.steps),
            seed=int(c.seed),
            batch_size=int(c.data.batch_size),
            image_size=int(c.data.image_size) or None,
            augment=bool(c.data.augment),
            eval_every=int(t.eval_every),
            log_every=int(t.log_every),
            keep_checkpoints=int(t.keep_checkpoints),
            best_metric=best[0],
            best_mode=best[1],
            patience=patience,
            min_delta=float(t.get("min_delta", 0.0)),
            train_subset=int(t.get("train_subset", 0)),
            precise_bn=bool(t.get("precise_bn", False)),
            step=step_config(c, steps),
            model_name=c.model.name,
            config=json.loads(c.to_json_best_effort()),
        )
