"""What a process traces and compiles once for every run of one model and recipe.

A grid trains one model and recipe for several seeds, and tests and notebooks train the same
small nets again and again. jax keeps a traced and compiled function by the function object and
its static arguments, and a fresh `jax.jit(partial(...))`, a fresh optax chain (its functions
are closures) or a fresh flax module's bound `apply` (bound methods are equal only for one
instance) misses it: each run traced its steps again (~1.5 s for a ResNet-56 step on a 2-core
CPU) and read the compiled step back from the disk cache. So runs share, each kept by value:
the model object (`intern`: equal modules are one object), the optimizer (`optimizer`), the
jitted functions (`init_fn`, `train_fn`, `eval_fn`, `recompute_fn`) and the compiled first step
(`compile_step`). Nothing here changes what a run computes.
"""

import collections
import functools

import jax

from cnnlab import distributed
from cnnlab.train.optim import make_optimizer
from cnnlab.train.precise_bn import precise_batch_stats
from cnnlab.train.step import StepConfig, eval_step, train_step

KEEP = 16  # models / optimizers / functions / executables kept (the newest)
_MODELS: collections.OrderedDict = collections.OrderedDict()
_EXECUTABLES: collections.OrderedDict = collections.OrderedDict()


def _keep(table: collections.OrderedDict, key, value):
    table[key] = value
    table.move_to_end(key)
    while len(table) > KEEP:
        table.popitem(last=False)
    return value


def per_value(fn):
    """`fn` kept per value of its arguments (the newest KEEP results). Arguments that cannot
    be hashed (a module with a list field) call `fn` afresh; exceptions are never kept."""
    kept = functools.lru_cache(maxsize=KEEP)(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return fn(*args, **kwargs)
        return kept(*args, **kwargs)

    return call


def intern(model):
    """The one module equal to `model` that this process has seen (flax modules compare by
    their fields), so that runs of one model share its `apply` and what jax traced with it."""
    try:
        hash(model)
    except TypeError:  # a field holds something unhashable: nothing to share
        return model
    return _MODELS[model] if model in _MODELS else _keep(_MODELS, model, model)


@per_value
def init_fn(model):
    """`model.init`, jitted once per model."""
    return jax.jit(model.init)


@per_value
def optimizer(optim, total_steps: int, lr: float | None):
    """`make_optimizer(optim, total_steps, lr)`, one (transformation, schedule) per value."""
    return make_optimizer(optim, total_steps, lr)


@per_value
def train_fn(cfg: StepConfig, mesh, seeds: bool = False):
    """The jitted train step (vmapped over a leading seed axis when `seeds`), state donated,
    its outputs replicated over `mesh`."""
    repl = distributed.replicated(mesh)
    step = functools.partial(train_step, cfg=cfg)
    return jax.jit(jax.vmap(step) if seeds else step, donate_argnums=0,
                   out_shardings=(repl, repl))  # fmt: skip


@per_value
def eval_fn(cfg: StepConfig, mesh):
    repl = distributed.replicated(mesh)
    return jax.jit(functools.partial(eval_step, cfg=cfg), out_shardings=repl)


@per_value
def recompute_fn(apply_fn, mesh):
    """PreciseBN's jitted recomputation of BatchNorm statistics for `apply_fn`."""
    repl = distributed.replicated(mesh)
    return jax.jit(functools.partial(precise_batch_stats, apply_fn), out_shardings=repl)


def _signature(args) -> tuple:
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple(
        (getattr(x, "shape", None), str(getattr(x, "dtype", type(x))), getattr(x, "sharding", None))
        for x in leaves
    )


def compile_step(step_fn, *args):
    """`step_fn` compiled ahead of time for `args` (their tree, shapes, dtypes and shardings):
    compiled once per process for each."""
    key = (step_fn, _signature(args))
    if key in _EXECUTABLES:
        _EXECUTABLES.move_to_end(key)
        return _EXECUTABLES[key]
    return _keep(_EXECUTABLES, key, step_fn.lower(*args).compile())
