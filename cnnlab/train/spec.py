"""`RunSpec`: the typed view of one training run's config, read once.

`RunSpec.of(config)` validates the config (`cnnlab.train.validate`, the one place its rules
live) and reads its five sections into frozen dataclasses (`cnnlab.train.config`: ModelSpec,
DataSpec, OptimSpec, LossSpec, TrainSpec); the model, the data, the optimiser, the loop, the
evaluation and the checkpoints read the spec, never the config. The resolved config itself
travels along (`spec.config`) to be saved with the run."""

import dataclasses
import json

from cnnlab import dotted
from cnnlab.train.config import DataSpec, LossSpec, ModelSpec, OptimSpec, TrainSpec, validate
from cnnlab.train.step import StepConfig


@dataclasses.dataclass(frozen=True)
class RunSpec:
    seed: int
    model: ModelSpec
    data: DataSpec
    optim: OptimSpec
    loss: LossSpec
    train: TrainSpec
    steps: int  # this run's steps: train.steps, or a fine-tuning phase's own
    step: StepConfig  # the static settings of the train and eval steps
    config: dict  # the resolved config, as JSON: config.json and every checkpoint's meta

    @classmethod
    def of(cls, c) -> "RunSpec":
        """The spec of a run of config `c` (`c.train.steps` steps; `with_steps` for others)."""
        validate(c)
        loss, train = LossSpec.of(c.loss), TrainSpec.of(c.train)
        steps = int(train.steps)
        return cls(
            seed=int(c.seed),
            model=ModelSpec.of(c.model),
            data=DataSpec.of(c.data),
            optim=OptimSpec.of(c.optim),
            loss=loss,
            train=train,
            steps=steps,
            step=StepConfig(
                total_steps=steps,
                label_smoothing=loss.label_smoothing,
                side_weight=loss.side_weight,
                side_schedule=loss.side_schedule,
                side_gamma=loss.side_gamma,
                side_drop_step=loss.side_drop_step,
                side_loss=loss.side_loss,
                side_alpha=loss.side_alpha,
                side_temperature=loss.side_temperature,
                side_hint=loss.side_hint,
                compute_dtype=train.compute_dtype,
                ema_decay=train.ema_decay,
            ),
            config=json.loads(c.to_json_best_effort()),
        )

    def with_steps(self, steps: int) -> "RunSpec":
        """The same run for `steps` steps (a fine-tuning phase's), without reading the config
        again."""
        step = dataclasses.replace(self.step, total_steps=steps)
        return dataclasses.replace(self, steps=steps, step=step)

    @property
    def peak_lr(self) -> float:
        """The optimiser's peak learning rate at this run's batch size."""
        return self.optim.peak_lr(self.data.batch_size)


# What a resumed run may change: settings that do not change what the steps it already ran
# computed: its length (schedules over train.steps continue on the new length from the resume
# point), how it is logged or kept, and where the same data lives. Anything else is another
# recipe: the run refuses to resume on it unless told to accept it (docs/training.md).
RESUMABLE = ("train.steps", "train.log_every", "train.keep_checkpoints", "data.data_dir")


def recipe_change(saved: dict, now: dict, resumable=RESUMABLE):
    """The first dotted key where two resolved configs (JSON) differ, other than `resumable`
    keys, as (key, saved value, value now); None when they are the same recipe."""
    return dotted.first_difference(saved, now, ignore=resumable)
