"""Per-cell diagnostics: per-layer gradient norms and activation sparsity.

Gradient norms per conv/dense kernel in forward order show the vanishing-gradient picture that
skip connections change (He et al. 2015; Glorot & Bengio 2010). Activation sparsity is the
fraction of exactly-zero ReLU outputs of each block, which the notes say grows with depth.
"""

import functools

import jax
import jax.numpy as jnp

from cnnlab.train import compiled
from cnnlab.train.diagnostics import kernels


def _rank(name: str, rows: list[str]) -> int:
    """Where layer or block `name` first runs: the index of the first summary row that is it or
    inside it ('stage1_block1' holds 'stage1_block1/conv1', 'stem' holds 'stem_conv')."""
    for i, row in enumerate(rows):
        if row == name or row.startswith((name + "/", name + "_")):
            return i
    return len(rows)


def forward_order(names, rows: list[str]) -> list[str]:
    """`names` in forward (execution) order, given the model summary's row paths in that order
    (`[r.path for r in cnnlab.summary(model, x).rows]`). Dicts that come out of jax are sorted
    by key instead: 'head' before 'stem_conv', 'stage1_block10' before 'stage1_block2'."""
    return sorted(names, key=lambda n: (_rank(n, rows), n))


def layer_grad_norms(state, metrics) -> list[tuple[str, float]]:
    """(kernel path, gradient norm) in sorted path order, from a train step's metrics."""
    paths = [path for path, _ in kernels(state.params)]
    norms = jax.device_get(metrics["layer_grad_norms"])
    return [(p, float(n)) for p, n in zip(paths, norms, strict=True)]


def activation_sparsity(model, state, images, rows: list[str]) -> dict[str, float]:
    """Fraction of zeros in the stem's and each block's output (eval mode), in forward order
    (`rows`: as for forward_order)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, features = _forward(model)(variables, images)
    taps = [k for k in features if k == "stem" or "_block" in k]
    return {k: float(jnp.mean(features[k] == 0)) for k in forward_order(taps, rows)}


@compiled.per_value
def _forward(model):
    """The model's jitted eval-mode forward, one per model: a grid's seeds share its trace."""
    return jax.jit(functools.partial(model.apply, train=False))
