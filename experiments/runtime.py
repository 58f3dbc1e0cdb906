"""Flags every entry point shares: the distributed runtime and the compilation cache."""

from absl import flags

from cnnlab import distributed

DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    list(distributed.MODES),
    "Start jax.distributed: 'auto' when JAX_COORDINATOR_ADDRESS is set or a TPU pod slice / "
    "SLURM / MPI job is detected; 'on' always (auto-detection); 'off' never.",
)
COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache",
    "",
    "Persistent XLA compilation cache directory ('' = the entry point's default, 'off' = none).",
)


def start(default_cache: str | None = None) -> None:
    """Call first in main(): distributed runtime, compilation cache, fast init."""
    distributed.start(DISTRIBUTED.value, COMPILE_CACHE.value or default_cache)
