"""Devices and hosts: data parallelism with `NamedSharding` over a 1-D mesh, multi-host start-up.

One code path for 1..N devices on 1..M hosts (JAX's multi-controller model: every process runs
the same program). Parameters and optimiser state are replicated (`P()`); each batch is split
along its first axis over the 'data' mesh axis (`P('data')`), so under `jax.jit` BatchNorm's
batch mean and variance are reductions over the global batch (sync-BN with no `axis_name`).
Each process reads its own slice of the data (`local_batch_size`) and `global_batch` assembles
the global array with `jax.make_array_from_process_local_data`.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnlab.errors import ConfigError, describe

MODES = ("auto", "on", "off")


def _cluster_detected() -> bool:
    """Several hosts that `jax.distributed.initialize()` can find by itself."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")  # Cloud TPU pod slices (GKE and VMs)
    return (
        "," in hosts
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
        or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or os.environ.get("CNNLAB_DISTRIBUTED") == "1"  # launch/ sets it on every TPU worker
    )


def initialize(mode: str = "auto") -> bool:
    """Start JAX's distributed runtime when configured or detected; -> whether it started.

    Configured: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID in the environment. Detected: a Cloud TPU pod slice, SLURM, Open MPI, or
    CNNLAB_DISTRIBUTED=1. mode='on' always calls it (auto-detection), 'off' never.
    """
    if mode not in MODES:
        raise ConfigError(f"--distributed={mode!r} is not allowed; use one of {list(MODES)}")
    if mode == "off" or jax.distributed.is_initialized():
        return False
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        n, i = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        if n is None or i is None:
            raise ConfigError(
                f"JAX_COORDINATOR_ADDRESS={address} is set but JAX_NUM_PROCESSES / "
                f"JAX_PROCESS_ID are not; set all three on every process"
            )
        if not (n.isdigit() and i.isdigit() and int(i) < int(n)):
            raise ConfigError(
                f"JAX_NUM_PROCESSES={n!r} / JAX_PROCESS_ID={i!r} must be integers with "
                f"0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES"
            )
        _start(address, num_processes=int(n), process_id=int(i))
        return True
    if mode == "on" or _cluster_detected():
        _start()
        return True
    return False


def _start(*args, **kwargs) -> None:
    try:
        jax.distributed.initialize(*args, **kwargs)
    except Exception as e:  # unreachable coordinator, a cluster it cannot detect, ...
        raise ConfigError(
            f"jax.distributed.initialize failed ({describe(e)}); check JAX_COORDINATOR_ADDRESS, "
            f"JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or pass --distributed=off"
        ) from None


def data_mesh() -> Mesh:
    """All devices of all processes on one 'data' axis."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
    """Place a pytree (identical on every process) replicated on every device of the mesh."""
    host = jax.device_get(tree)  # uncommitted host values: valid input on every process
    return jax.jit(_same, out_shardings=replicated(mesh))(host)


def _same(tree):  # one function object, so jax traces each tree structure once
    return tree


def local_batch_size(global_batch: int) -> int:
    """This process's share of a global batch (validated divisible by the device count)."""
    return global_batch // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
    """This process's rows -> one global batch, split over the 'data' axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def compilation_cache(directory) -> str:
    """Persist compiled XLA programs in `directory` so re-runs and sibling runs skip compiles."""
    directory = str(directory)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return directory


def cache_root() -> str:
    """$CNNLAB_CACHE_DIR, else ~/.cache/cnnlab: cnnlab's caches (compiled programs, weights)."""
    return os.environ.get("CNNLAB_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnlab"
    )


def default_cache_dir() -> str:
    """$CNNLAB_CACHE_DIR/jax, else ~/.cache/cnnlab/jax: one cache shared by all workdirs."""
    return os.path.join(cache_root(), "jax")


def start(mode: str = "auto", cache_dir: str | None = None) -> None:
    """What every entry point does first: distributed runtime, compilation cache, fast init.

    `cache_dir`: None -> `default_cache_dir()`; 'off' -> no persistent compilation cache.
    """
    initialize(mode)
    if cache_dir != "off":
        compilation_cache(cache_dir or default_cache_dir())
    # JAX's partitionable threefry compiles model init ~7x slower on CPU; parameters are
    # initialised unsharded here, so the classic stream loses nothing.
    jax.config.update("jax_threefry_partitionable", False)
