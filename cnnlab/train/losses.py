"""Classification losses, the side-loss kinds and weight schedules of deep supervision.

Weight schedules: Szegedy et al. 2014 (GoogLeNet): constant weight 0.3 on each auxiliary loss.
Lee et al. 2014, "Deeply-Supervised Nets", arXiv:1409.5185: companion losses decayed to zero over
training, and a threshold gamma: a companion term stops counting once its loss falls below gamma.

Side-loss kinds (what each side head learns from, `SIDE_LOSSES`):
- 'ce': the labels, by cross-entropy (GoogLeNet; Inception-v3).
- 'hinge': the labels, by DSN's squared hinge (L2-SVM) loss, one-vs-rest:
  sum_k max(0, 1 - t_k s_k)^2 with t_k = +1 for the label and -1 for every other class (DSN
  section 2, after Tang 2013); with one logit, t = +1 for label 1 and -1 for label 0.
- 'distill': Zhang et al. 2019, "Be Your Own Teacher" (BYOT), arXiv:1905.08094, section 3: the
  labels and the final head's softened outputs, (1 - alpha) CE(s, y) + alpha T^2
  KL(softmax(f / T) || softmax(s / T)) with the final logits f held constant (a teacher, no
  gradient through it), plus lambda times the squared L2 distance from the side head's hint (an
  adapter's output) to the final feature, also held constant (`hint_loss`).
"""

import jax
import jax.numpy as jnp
import optax

SIDE_SCHEDULES = ("constant", "linear", "threshold", "drop")
SIDE_LOSSES = ("ce", "distill", "hinge")


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


def _as_softmax_logits(logits: jnp.ndarray) -> jnp.ndarray:
    """One sigmoid logit z -> the two softmax logits (0, z) of the same distribution."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
    return logits


def squared_hinge(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example one-vs-rest squared hinge (DSN's companion loss): sum over classes of
    max(0, 1 - t_k s_k)^2, t_k = +1 for the label's class, -1 for the others."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        signs = 2.0 * labels.astype(jnp.float32)[:, None] - 1.0
    else:
        signs = 2.0 * jax.nn.one_hot(labels, logits.shape[-1]) - 1.0
    return jnp.sum(jnp.square(jax.nn.relu(1.0 - signs * logits)), axis=-1)


def distillation(student: jnp.ndarray, teacher: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """Per-example T^2 KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al. 2015: T^2
    keeps the gradients' scale as T changes); the teacher is held constant."""
    t = float(temperature)
    teacher = jax.lax.stop_gradient(_as_softmax_logits(teacher))
    log_student = jax.nn.log_softmax(_as_softmax_logits(student) / t, axis=-1)
    return t * t * optax.kl_divergence(log_student, jax.nn.softmax(teacher / t, axis=-1))


def hint_loss(hint: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Per-example squared L2 distance from a side head's hint to the target feature (held
    constant): BYOT's feature term ||F_i - F_C||^2."""
    diff = hint.astype(jnp.float32) - jax.lax.stop_gradient(target.astype(jnp.float32))
    return jnp.sum(jnp.square(diff.reshape(diff.shape[0], -1)), axis=-1)


def side_loss(kind: str, side_logits, labels, *, final_logits=None, label_smoothing: float = 0.0,
              alpha: float = 0.0, temperature: float = 1.0):  # fmt: skip
    """Per-example loss of one side head by `kind` (SIDE_LOSSES), without the hint term."""
    if kind == "ce":
        return cross_entropy(side_logits, labels, label_smoothing)
    if kind == "hinge":
        return squared_hinge(side_logits, labels)
    if kind == "distill":
        ce = cross_entropy(side_logits, labels, label_smoothing)
        return (1.0 - alpha) * ce + alpha * distillation(side_logits, final_logits, temperature)
    raise ValueError(f"side loss must be one of {SIDE_LOSSES}; got {kind!r}")


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
