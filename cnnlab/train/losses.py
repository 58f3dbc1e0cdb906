"""Classification losses and the side-loss weight schedules of deep supervision.

Szegedy et al. 2014 (GoogLeNet): constant weight 0.3 on each auxiliary loss. Lee et al. 2014,
"Deeply-Supervised Nets", arXiv:1409.5185: companion losses decayed to zero over training, and a
threshold gamma: a companion term stops counting once its loss falls below gamma.
"""

import jax
import jax.numpy as jnp
import optax

SIDE_SCHEDULES = ("constant", "linear", "threshold", "drop")


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0):
    """Per-example loss. One logit: sigmoid binary cross-entropy; else softmax cross-entropy."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        targets = labels.astype(jnp.float32)
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
        return optax.sigmoid_binary_cross_entropy(logits[:, 0], targets)
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def predictions(logits: jnp.ndarray) -> jnp.ndarray:
    if logits.shape[-1] == 1:
        return (logits[:, 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1)


def side_weight(
    schedule: str,
    weight: float,
    step,
    total_steps: int,
    *,
    side_loss=None,
    gamma: float = 0.0,
    drop_step: int = 0,
):
    """w_tap(step): 'constant', 'linear' decay to 0 at total_steps, 'threshold' gamma, 'drop'."""
    step = jnp.asarray(step, jnp.float32)
    if schedule == "constant":
        return jnp.float32(weight)
    if schedule == "linear":
        return weight * jnp.clip(1.0 - step / max(total_steps, 1), 0.0, 1.0)
    if schedule == "threshold":
        return jnp.where(jax.lax.stop_gradient(side_loss) > gamma, weight, 0.0)
    if schedule == "drop":
        return jnp.where(step < drop_step, weight, 0.0)
    raise ValueError(f"side schedule must be one of {SIDE_SCHEDULES}; got {schedule!r}")
