"""Config validation: each mistake is one line naming the key and the allowed values."""

import math

import jax
import jax.numpy as jnp

from cnnlab import dotted, models
from cnnlab.errors import ConfigError
from cnnlab.heads import HEADS
from cnnlab.train import names
from cnnlab.train.losses import SIDE_SCHEDULES
from cnnlab.train.optim import DECAY_ON, OPTIMIZERS, SCHEDULES, WARMUPS


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
    _choice("optim.warmup", c.optim.get("warmup", "linear"), WARMUPS)
    _choice("optim.weight_decay_on", c.optim.get("weight_decay_on", "kernels"), DECAY_ON)
    for key in ("optim.warmup_steps", "optim.lr_batch", "train.train_subset", "train.patience",
                "data.train_per_class", "data.val_per_class", "loss.side_drop_step"):  # fmt: skip
        if _number(c, key, int, default=0) < 0:
            raise ConfigError(f"config.{key}={_get(c, key)} must be >= 0 (0 = off)")
    _choice("loss.side_schedule", c.loss.side_schedule, SIDE_SCHEDULES)
    _choice("loss.side_head", c.loss.side_head, HEADS)
    _choice("train.compute_dtype", c.train.compute_dtype, ("float32", "bfloat16"))
    _choice("train.best_mode", c.train.get("best_mode", "max"), ("max", "min"))
    if int(c.train.get("patience", 0)) and not int(c.data.get("val_per_class", 0)):
        raise ConfigError(
            "config.train.patience > 0 (early stopping) needs a validation split; set "
            "config.data.val_per_class (examples per class held out of train)"
        )
    for key in ("train.steps", "train.eval_every", "train.log_every", "data.batch_size",
                "train.keep_checkpoints"):  # fmt: skip
        if _number(c, key, int) < 1:
            raise ConfigError(f"config.{key}={_get(c, key)} must be >= 1")
    if _number(c, "data.image_size", int) < 0:
        raise ConfigError(
            f"config.data.image_size={c.data.image_size} must be >= 0 (0 = as stored)"
        )


def _check_ranges(c) -> None:
    for key, low, high, what, default in (  # default: what the code uses when a key is absent
        ("optim.lr", 0.0, math.inf, "> 0 and finite", None),
        ("optim.weight_decay", -1e-300, math.inf, ">= 0 and finite", None),
        ("optim.momentum", -1e-300, 1.0, "in [0, 1)", None),
        ("loss.label_smoothing", -1e-300, 1.0, "in [0, 1)", None),
        ("loss.side_weight", -1e-300, math.inf, ">= 0 and finite", None),
        ("loss.side_gamma", -1e-300, math.inf, ">= 0 and finite", None),
        ("train.min_delta", -1e-300, math.inf, ">= 0 and finite", 0.0),
        ("optim.warmup_factor", 0.0, 1.0 + 1e-12, "in (0, 1]", 0.1),
        ("train.ema_decay", -1e-300, 1.0, "in [0, 1) (0 = off)", 0.0),
    ):
        if not low < _number(c, key, float, default=default) < high:
            raise ConfigError(f"config.{key}={_get(c, key)} must be {what}")
    if _number(c, "train.ema_decay", float, default=0.0) and not c.train.get("train_subset"):
        raise ConfigError(
            "config.train.ema_decay > 0 needs config.train.train_subset > 0: the weight "
            "average's BatchNorm statistics are recomputed over those training images"
        )
    metric = c.train.get("best_metric", "accuracy")
    if not names.RECORDED.fullmatch(str(metric)):
        raise ConfigError(
            f"config.train.best_metric={metric!r} is not a metric a run records; use 'accuracy', "
            f"'loss', 'val_accuracy' or 'val_loss' (with a validation split)"
        )


def _check_forms(c) -> None:
    for key in ("data.augment", "model.binary", "optim.nesterov", "train.precise_bn"):
        if not isinstance(_get(c, key, False), bool):
            raise ConfigError(f"config.{key}={_get(c, key)!r} must be True or False")
    taps = c.loss.side_taps
    if isinstance(taps, str) or not all(isinstance(t, str) for t in taps):
        raise ConfigError(
            f"config.loss.side_taps={taps!r} must be a tuple of feature names, e.g. "
            f"'stage1,stage2' or () for none"
        )
    bounds = c.optim.get("step_boundaries", ())
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
    classes = c.data.get("classes", ())
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


def _get(c, key: str, default=None):
    return dotted.get(c, key, default)


def _number(c, key: str, kind, default=None):
    """config.<key> as an int or float, or a ConfigError naming the key."""
    value = _get(c, key, default)
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
    x = jnp.zeros((1, *image_shape))
    try:
        jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    except ValueError as e:  # the models' own checks: depth rules, tap names, shapes
        raise ConfigError(f"config.model ({type(model).__name__}): {e}") from None
    except TypeError as e:  # a field of the wrong type, e.g. --config.model.kwargs.width=abc
        raise ConfigError(
            f"config.model.kwargs: {type(model).__name__} cannot be built from these values "
            f"(TypeError: {e}); check the types of the fields set in config.model.kwargs"
        ) from None
