"""The training config's typed sections and its validation: each mistake is one line naming
the key and the allowed values.

A training config has five sections (model, data, optim, loss, train) whose keys
experiments/configs/base.py defines, each with its default and a comment; `validate` checks that
a config has exactly those keys, then their values. `RunSpec.of` (cnnlab.train.spec) reads the
validated sections once into the dataclasses below, and code below the entry points reads them:
no default is repeated outside base.py."""

import dataclasses
import math

import jax
import jax.numpy as jnp

from cnnlab import dotted, models
from cnnlab.errors import ConfigError
from cnnlab.heads import HEADS
from cnnlab.train import compiled, names
from cnnlab.train.losses import SIDE_LOSSES, SIDE_SCHEDULES
from cnnlab.train.optim import DECAY_ON, OPTIMIZERS, SCHEDULES, WARMUPS


class Section:
    """A config section read into a frozen dataclass: every field is a key of the section."""

    @classmethod
    def of(cls, node):
        """The section `node` (a ConfigDict, or the dict a run saved) as this dataclass."""
        return cls(**{f.name: _plain(node[f.name]) for f in dataclasses.fields(cls)})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value):
    """ConfigDicts -> dicts, lists -> tuples (a section is frozen and hashable where it can)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return tuple(value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class ModelSpec(Section):
    name: str  # a name in cnnlab.models.available()
    kwargs: dict  # the model's fields
    binary: bool  # two classes -> one sigmoid logit


@dataclasses.dataclass(frozen=True)
class DataSpec(Section):
    name: str
    data_dir: str  # '' = the default data dir
    batch_size: int  # global, split over the devices
    image_size: int  # 0 = as stored
    augment: bool
    classes: tuple  # () = all
    train_per_class: int  # 0 = all
    val_per_class: int  # 0 = no validation split
    synthetic: dict  # SyntheticSource's arguments, for name 'synthetic'

    @property
    def resize(self) -> int | None:
        """The side images are resized to, or None for as stored."""
        return self.image_size or None


@dataclasses.dataclass(frozen=True)
class OptimSpec(Section):
    optimizer: str
    lr: float  # peak lr at lr_batch examples per step
    lr_batch: int  # 0 = lr as it is
    momentum: float
    nesterov: bool
    weight_decay: float
    weight_decay_on: str
    schedule: str
    step_boundaries: tuple
    warmup_steps: int
    warmup: str
    warmup_factor: float

    def peak_lr(self, batch_size: int) -> float:
        """`lr` at `lr_batch` examples, scaled linearly to `batch_size` (Goyal et al.);
        `lr_batch=0` takes `lr` as it is."""
        return self.lr * batch_size / self.lr_batch if self.lr_batch else self.lr


@dataclasses.dataclass(frozen=True)
class LossSpec(Section):
    label_smoothing: float
    side_taps: tuple
    side_head: str
    side_weight: float
    side_schedule: str
    side_gamma: float
    side_drop_step: int
    side_loss: str  # 'ce', 'distill', 'hinge'
    side_alpha: float
    side_temperature: float
    side_hint: float
    side_hint_target: str

    @property
    def hint_target(self) -> str:
        """The feature the side heads' hint adapters match, or '' when there are none (only
        distillation with a hint weight > 0 and side heads has them)."""
        wanted = self.side_loss == "distill" and self.side_hint > 0 and self.side_taps
        return self.side_hint_target if wanted else ""


@dataclasses.dataclass(frozen=True)
class TrainSpec(Section):
    steps: int
    eval_every: int  # also the checkpoint interval
    log_every: int
    keep_checkpoints: int
    best_metric: str
    best_mode: str
    patience: int  # early stopping on validation loss (0: off)
    min_delta: float
    compute_dtype: str
    ema_decay: float
    train_subset: int
    precise_bn: bool

    @property
    def best_rule(self) -> tuple[str, str]:
        """(metric, mode) of the checkpoint a run keeps besides its last N: with early stopping
        (patience > 0) the best validation loss, where the run ends; else best_metric by
        best_mode."""
        return ("val_loss", "min") if self.patience else (self.best_metric, self.best_mode)


SECTIONS = {"model": ModelSpec, "data": DataSpec, "optim": OptimSpec, "loss": LossSpec,
            "train": TrainSpec}  # fmt: skip


def _complete(c) -> None:
    """Each section has exactly the keys base.py defines (a typo is not silently ignored)."""
    for name, section in SECTIONS.items():
        node = c.get(name)
        if not hasattr(node, "keys"):
            raise ConfigError(
                f"config.{name} is missing; start from experiments/configs/base.py, which "
                f"defines every key"
            )
        missing = [k for k in section.keys() if k not in node]
        if missing:
            raise ConfigError(
                f"config.{name} lacks {missing}; start from experiments/configs/base.py "
                f"(base.get_config()), which defines every key with its default"
            )
        unknown = sorted(set(node.keys()) - set(section.keys()))
        if unknown:
            raise ConfigError(
                f"config.{name} has {unknown}, which no code reads; its keys are "
                f"{list(section.keys())}"
            )
    if "seed" not in c:
        raise ConfigError("config.seed is missing; start from experiments/configs/base.py")


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r} is not allowed; use one of {list(allowed)}")


def _finite(node, prefix: str = "config") -> None:
    """No NaN or infinite number anywhere in the config (it would surface as a NaN loss)."""
    for key, value in node.items():
        if hasattr(value, "items"):
            _finite(value, f"{prefix}.{key}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}.{key}={value} must be a finite number")


def validate(c) -> None:
    """Check a training config before any data or compile work (in this order: the model, the
    choices and counts, the numeric ranges, the forms of tuples and flags, the data)."""
    _complete(c)
    _finite(c)
    _number(c, "seed", int)
    _check_model(c)
    _check_choices_and_counts(c)
    _check_ranges(c)
    _check_forms(c)
    _check_data(c)


def _check_model(c) -> None:
    _choice("model.name", c.model.name, models.available())
    kwargs = dict(c.model.kwargs)
    unknown = sorted(set(kwargs) - set(models.fields(c.model.name)))
    if unknown:
        raise ConfigError(
            f"config.model.kwargs has {unknown}, which model {c.model.name!r} does not take; "
            f"allowed: {models.fields(c.model.name)}"
        )
    defaults = models.defaults(c.model.name)
    for key, value in kwargs.items():
        _same_kind(f"model.kwargs.{key}", value, defaults.get(key))


def _check_choices_and_counts(c) -> None:
    _choice("optim.optimizer", c.optim.optimizer, OPTIMIZERS)
    _choice("optim.schedule", c.optim.schedule, SCHEDULES)
    _choice("optim.warmup", c.optim.warmup, WARMUPS)
    _choice("optim.weight_decay_on", c.optim.weight_decay_on, DECAY_ON)
    for key in ("optim.warmup_steps", "optim.lr_batch", "train.train_subset", "train.patience",
                "data.train_per_class", "data.val_per_class", "loss.side_drop_step"):  # fmt: skip
        if _number(c, key, int) < 0:
            raise ConfigError(f"config.{key}={_get(c, key)} must be >= 0 (0 = off)")
    _choice("loss.side_schedule", c.loss.side_schedule, SIDE_SCHEDULES)
    _choice("loss.side_head", c.loss.side_head, HEADS)
    _choice("loss.side_loss", c.loss.side_loss, SIDE_LOSSES)
    _choice("train.compute_dtype", c.train.compute_dtype, ("float32", "bfloat16"))
    _choice("train.best_mode", c.train.best_mode, ("max", "min"))
    if c.train.patience and not c.data.val_per_class:
        raise ConfigError(
            "config.train.patience > 0 (early stopping) needs a validation split; set "
            "config.data.val_per_class (examples per class held out of train)"
        )
    for key in ("train.steps", "train.eval_every", "train.log_every", "data.batch_size",
                "train.keep_checkpoints"):  # fmt: skip
        if _number(c, key, int) < 1:
            raise ConfigError(f"config.{key}={_get(c, key)} must be >= 1")
    evals = c.train.steps // c.train.eval_every
    if c.train.patience and evals < c.train.patience + 1:
        raise ConfigError(
            f"config.train.patience={c.train.patience} can never stop the run early: its "
            f"{c.train.steps} steps hold {evals} evals of config.train.eval_every="
            f"{c.train.eval_every}; lower eval_every (or set patience=0)"
        )
    if _number(c, "data.image_size", int) < 0:
        raise ConfigError(
            f"config.data.image_size={c.data.image_size} must be >= 0 (0 = as stored)"
        )


def _check_ranges(c) -> None:
    for key, low, high, what in (
        ("optim.lr", 0.0, math.inf, "> 0 and finite"),
        ("optim.weight_decay", -1e-300, math.inf, ">= 0 and finite"),
        ("optim.momentum", -1e-300, 1.0, "in [0, 1)"),
        ("loss.label_smoothing", -1e-300, 1.0, "in [0, 1)"),
        ("loss.side_weight", -1e-300, math.inf, ">= 0 and finite"),
        ("loss.side_gamma", -1e-300, math.inf, ">= 0 and finite"),
        ("loss.side_alpha", -1e-300, 1.0 + 1e-12, "in [0, 1]"),
        ("loss.side_temperature", 0.0, math.inf, "> 0 and finite (softmax(logits / T))"),
        ("loss.side_hint", -1e-300, math.inf, ">= 0 and finite (0 = no hint)"),
        ("train.min_delta", -1e-300, math.inf, ">= 0 and finite"),
        ("optim.warmup_factor", 0.0, 1.0 + 1e-12, "in (0, 1]"),
        ("train.ema_decay", -1e-300, 1.0, "in [0, 1) (0 = off)"),
    ):
        if not low < _number(c, key, float) < high:
            raise ConfigError(f"config.{key}={_get(c, key)} must be {what}")
    if c.train.ema_decay and not c.train.train_subset:
        raise ConfigError(
            "config.train.ema_decay > 0 needs config.train.train_subset > 0: the weight "
            "average's BatchNorm statistics are recomputed over those training images"
        )
    metric = c.train.best_metric
    if not names.RECORDED.fullmatch(str(metric)):
        raise ConfigError(
            f"config.train.best_metric={metric!r} is not a metric a run records; use 'accuracy', "
            f"'loss', 'val_accuracy' or 'val_loss' (with a validation split)"
        )


def _check_forms(c) -> None:
    for key in ("data.augment", "model.binary", "optim.nesterov", "train.precise_bn"):
        if not isinstance(_get(c, key), bool):
            raise ConfigError(f"config.{key}={_get(c, key)!r} must be True or False")
    taps = c.loss.side_taps
    if isinstance(taps, str) or not all(isinstance(t, str) for t in taps):
        raise ConfigError(
            f"config.loss.side_taps={taps!r} must be a tuple of feature names, e.g. "
            f"'stage1,stage2' or () for none"
        )
    if not isinstance(c.loss.side_hint_target, str) or not c.loss.side_hint_target:
        raise ConfigError(
            f"config.loss.side_hint_target={c.loss.side_hint_target!r} must name a feature of "
            f"the model, e.g. 'pre_logits' (the pooled final feature) or 'stage3'"
        )
    bounds = c.optim.step_boundaries
    if c.optim.schedule == "step" and not (
        all(isinstance(b, (int, float)) and 0 < b < 1 for b in bounds)
        and list(bounds) == sorted(bounds)
    ):
        raise ConfigError(
            f"config.optim.step_boundaries={bounds!r} must be increasing fractions of "
            f"train.steps in (0, 1), e.g. (0.5, 0.75)"
        )


def _check_data(c) -> None:
    if c.data.name == "synthetic":
        _check_synthetic(c.data.synthetic)
    classes = c.data.classes
    if isinstance(classes, str) or not all(isinstance(k, int) for k in classes):
        raise ConfigError(
            f"config.data.classes={classes!r} must be a tuple of integer labels, e.g. '(5,6,7)'"
        )
    n = jax.device_count()
    if c.data.batch_size % n:
        raise ConfigError(
            f"config.data.batch_size={c.data.batch_size} is not divisible by the {n} devices "
            f"(jax.device_count()); use a multiple of {n}"
        )


def _same_kind(key: str, value, default) -> None:
    """A model field set to a value of another kind than its default (bool, int, float, str)."""
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
    want = kinds.get(type(default))
    bool_for_number = type(default) is not bool and isinstance(value, bool)
    if want and (not isinstance(value, want) or bool_for_number):
        raise ConfigError(
            f"config.{key}={value!r} must be of type {type(default).__name__} "
            f"(its default is {default!r})"
        )


def _check_synthetic(s) -> None:
    shape = s.get("image_shape")
    if not (
        isinstance(shape, (tuple, list))
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise ConfigError(
            f"config.data.synthetic.image_shape={shape!r} must be (H, W, C) with every size >= 1"
        )
    for key, low in (("num_examples", 1), ("num_classes", 2), ("seed", 0), ("num_test", 1)):
        value = s.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"config.data.synthetic.{key}={value!r} must be an integer >= {low}")


def _get(c, key: str):
    return dotted.get(c, key)


def _number(c, key: str, kind):
    """config.<key> as an int or float, or a ConfigError naming the key."""
    value = _get(c, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = kind(value)
        if kind is int and number != value:
            raise TypeError
        return number
    except (TypeError, ValueError):
        raise ConfigError(
            f"config.{key}={value!r} must be a{'n integer' if kind is int else ' number'}"
        ) from None


def check_model(model, image_shape) -> None:
    """Trace the model once (no compile) so depth rules and tap names fail here, clearly."""
    try:
        _traced(model, tuple(image_shape))
    except ValueError as e:  # the models' own checks: depth rules, tap names, shapes
        raise ConfigError(f"config.model ({type(model).__name__}): {e}") from None
    except TypeError as e:  # a field of the wrong type, e.g. --config.model.kwargs.width=abc
        raise ConfigError(
            f"config.model.kwargs: {type(model).__name__} cannot be built from these values "
            f"(TypeError: {e}); check the types of the fields set in config.model.kwargs"
        ) from None


@compiled.per_value  # a grid's seeds trace their model once
def _traced(model, image_shape: tuple) -> None:
    x = jnp.zeros((1, *image_shape))
    jax.eval_shape(lambda: model.init(jax.random.key(0), x))
