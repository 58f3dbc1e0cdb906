"""Config validation: each mistake is one line naming the key and the allowed values."""

import math
import re

import jax
import jax.numpy as jnp

from cnnlab import models
from cnnlab.train.losses import SIDE_SCHEDULES
from cnnlab.train.optim import OPTIMIZERS, SCHEDULES, WARMUPS


class ConfigError(ValueError):
    """A config value that cannot work."""


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r} is not allowed; use one of {list(allowed)}")


def validate(c) -> None:
    """Check a training config before any data or compile work."""
    _choice("model.name", c.model.name, models.available())
    kwargs = dict(c.model.kwargs)
    unknown = sorted(set(kwargs) - set(models.fields(c.model.name)))
    if unknown:
        raise ConfigError(
            f"config.model.kwargs has {unknown}, which model {c.model.name!r} does not take; "
            f"allowed: {models.fields(c.model.name)}"
        )
    _choice("optim.optimizer", c.optim.optimizer, OPTIMIZERS)
    _choice("optim.schedule", c.optim.schedule, SCHEDULES)
    _choice("optim.warmup", c.optim.get("warmup", "linear"), WARMUPS)
    for key in ("optim.warmup_steps", "optim.lr_batch", "train.train_subset"):
        group, name = key.split(".")
        if int(c[group].get(name, 0)) < 0:
            raise ConfigError(f"config.{key}={c[group][name]} must be >= 0 (0 = off)")
    _choice("loss.side_schedule", c.loss.side_schedule, SIDE_SCHEDULES)
    _choice("loss.side_head", c.loss.side_head, ("linear", "googlenet"))
    _choice("train.compute_dtype", c.train.compute_dtype, ("float32", "bfloat16"))
    _choice("train.best_mode", c.train.get("best_mode", "max"), ("max", "min"))
    if int(c.train.get("patience", 0)) < 0:
        raise ConfigError(f"config.train.patience={c.train.patience} must be >= 0 (0 = off)")
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
    for key, low, high, what in (
        ("optim.lr", 0.0, math.inf, "> 0 and finite"),
        ("optim.weight_decay", -1e-300, math.inf, ">= 0 and finite"),
        ("optim.momentum", -1e-300, 1.0, "in [0, 1)"),
        ("loss.label_smoothing", -1e-300, 1.0, "in [0, 1)"),
        ("loss.side_weight", -1e-300, math.inf, ">= 0 and finite"),
    ):
        if not low < _number(c, key, float) < high:
            raise ConfigError(f"config.{key}={_get(c, key)} must be {what}")
    metric = c.train.get("best_metric", "accuracy")
    if not re.fullmatch(r"(val_|precise_bn/|train_subset/|side/\w+/)*(accuracy|loss)", str(metric)):
        raise ConfigError(
            f"config.train.best_metric={metric!r} is not a metric a run records; use 'accuracy', "
            f"'loss', 'val_accuracy' or 'val_loss' (with a validation split)"
        )
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


def _get(c, key: str):
    group, name = key.split(".")
    return c[group].get(name)


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
    x = jnp.zeros((1, *image_shape))
    try:
        jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    except ValueError as e:
        raise ConfigError(f"config.model ({type(model).__name__}): {e}") from None
