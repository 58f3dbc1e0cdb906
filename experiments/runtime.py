"""Flags every entry point shares: the distributed runtime and the compilation cache.

Nothing here imports JAX: a bad flag or config is reported before the heavy imports (the entry
points import cnnlab's training code inside `main`)."""

from pathlib import Path

from absl import flags

from cnnlab.errors import ConfigError

DISTRIBUTED = flags.DEFINE_string(  # checked against cnnlab.distributed.MODES by start()
    "distributed",
    "auto",
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
    from cnnlab import distributed

    distributed.start(DISTRIBUTED.value, COMPILE_CACHE.value or default_cache)


def workdir(value: str | None, default: Path | None = None) -> Path:
    """--workdir as an absolute path; empty (it would write into the current directory) or a
    file where the directory should be is a ConfigError. Creates nothing."""
    if value is not None and not value.strip():
        raise ConfigError("--workdir is empty; pass the directory for checkpoints and logs")
    path = Path(value or default).expanduser().absolute()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(
                    f"--workdir={path}: {p} is a file, not a directory; pass another --workdir"
                )
            break
    return path
