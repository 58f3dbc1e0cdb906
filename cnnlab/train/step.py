"""The pure train and eval steps. Jit once in the loop: jax.jit(partial(train_step, cfg=cfg),
donate_argnums=0). Loss = CE(final) + sum over taps of w_tap(step) · side term, the side term
by `side_loss` (cnnlab.train.losses): CE, DSN's squared hinge, or BYOT's distillation from the
final head (+ lambda · hint distance to the final feature)."""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cnnlab.train import names
from cnnlab.train.diagnostics import layer_grad_norms
from cnnlab.train.losses import cross_entropy, hint_loss, predictions, side_loss, side_weight


class TrainState(flax.struct.PyTreeNode):
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    ema_params: Any = None  # the parameters' moving average, when StepConfig.ema_decay > 0

    @classmethod
    def create(cls, apply_fn, variables, tx, ema: bool = False):
        params = variables["params"]
        return cls(
            jnp.zeros((), jnp.int32),
            params,
            variables.get("batch_stats", {}),
            tx.init(params),
            apply_fn,
            tx,
            jax.tree.map(jnp.copy, params) if ema else None,
        )


def ema_update(ema, params, step, decay: float):
    """ema <- d·ema + (1 - d)·params with d = min(decay, (1 + step) / (10 + step)): TensorFlow's
    `ExponentialMovingAverage(num_updates=step)`, so that a short run's average is not
    dominated by the initial weights."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static (hashable) settings of the train and eval steps: the loss, the compute dtype and
    the weight average."""

    total_steps: int = 1
    label_smoothing: float = 0.0
    side_weight: float = 0.3  # GoogLeNet's 0.3
    side_schedule: str = "constant"
    side_gamma: float = 0.0
    side_drop_step: int = 0
    side_loss: str = "ce"  # 'ce', 'distill' (BYOT) or 'hinge' (DSN)
    side_alpha: float = 0.3  # distill: the soft targets' share
    side_temperature: float = 3.0  # distill
    side_hint: float = 1.0  # distill: lambda, the hint term's weight (base.py says why 1)
    compute_dtype: str = "float32"  # 'bfloat16': bf16 compute, f32 params and updates
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the parameters
    layer_grad_norms: bool = False  # also return each kernel's gradient norm (diagnostics.py)


def _cast(tree, dtype):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _losses(logits, features, labels, cfg, step):
    """Total loss and per-head metrics (mean over the batch)."""
    final = cross_entropy(logits, labels, cfg.label_smoothing).mean()
    metrics = {"loss": final, "accuracy": jnp.mean(predictions(logits) == labels)}
    total = final
    hints = features.get("side_hints", {})
    for tap, side_logits in features.get("side_logits", {}).items():
        side = side_loss(
            cfg.side_loss,
            side_logits,
            labels,
            final_logits=logits,
            label_smoothing=cfg.label_smoothing,
            alpha=cfg.side_alpha,
            temperature=cfg.side_temperature,
        ).mean()
        if cfg.side_loss == "distill" and tap in hints:
            hint = hint_loss(hints[tap], features["hint_target"]).mean()
            metrics[names.side(tap, "hint")] = hint
            side = side + cfg.side_hint * hint
        w = side_weight(
            cfg.side_schedule,
            cfg.side_weight,
            step,
            cfg.total_steps,
            side_loss=side,
            gamma=cfg.side_gamma,
            drop_step=cfg.side_drop_step,
        )
        total = total + w * side
        metrics[names.side(tap, "loss")] = side
        metrics[names.side(tap, "accuracy")] = jnp.mean(predictions(side_logits) == labels)
        metrics[names.side(tap, "weight")] = w
    metrics["total_loss"] = total
    return total, metrics


def train_step(state: TrainState, batch: dict, rng, *, cfg: StepConfig):
    """One SGD step in train mode (BatchNorm batch statistics, dropout). -> (state, metrics)."""
    dtype = jnp.dtype(cfg.compute_dtype)

    def loss_fn(params):
        variables = {"params": _cast(params, dtype), "batch_stats": state.batch_stats}
        (logits, features), updates = state.apply_fn(
            variables,
            batch["image"].astype(dtype),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        total, metrics = _losses(logits, features, batch["label"], cfg, state.step)
        return total, (metrics, updates.get("batch_stats", {}))

    (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=jax.tree.map(lambda n, o: n.astype(o.dtype), batch_stats, state.batch_stats),
        opt_state=opt_state,
    )
    if state.ema_params is not None:
        new_state = new_state.replace(
            ema_params=ema_update(state.ema_params, params, state.step, cfg.ema_decay)
        )
    metrics["grad_norm"] = optax.tree.norm(grads)
    if cfg.layer_grad_norms:  # only when a diagnostic asks (the ablation runner does)
        metrics["layer_grad_norms"] = layer_grad_norms(grads)
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, cfg: StepConfig):
    """Sums over the batch's real rows (mask) with running BatchNorm statistics, per head."""
    dtype = jnp.dtype(cfg.compute_dtype)
    variables = {"params": _cast(state.params, dtype), "batch_stats": state.batch_stats}
    logits, features = state.apply_fn(variables, batch["image"].astype(dtype), train=False)
    mask, labels = batch["mask"], batch["label"]
    heads = {"": logits, **{names.side(t): v for t, v in features.get("side_logits", {}).items()}}
    sums = {"count": mask.sum()}
    for prefix, out in heads.items():
        sums[f"{prefix}loss"] = (cross_entropy(out, labels) * mask).sum()
        sums[f"{prefix}accuracy"] = ((predictions(out) == labels) * mask).sum()
    return sums
