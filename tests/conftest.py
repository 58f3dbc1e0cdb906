"""What every test shares, set up once per session:

- **Hermetic**: HOME, the XDG/matplotlib caches, cnnlab's data dir and compilation cache point
  into pytest's temp dir for this process and every subprocess it starts; nothing is written
  under the real home or the repository (the README's snippets run in a temp dir).
- **One data dir**: the embedded digits are prepared once into it ($CNNLAB_DATA_DIR), so no test
  or subprocess prepares them again.
- **One compilation cache** ($CNNLAB_CACHE_DIR/jax) for the test process and every entry point it
  starts: a model compiled by one run is loaded by the next.

Tiers: the default run deselects `slow` (see pyproject); `pytest -m slow` runs exactly those
(the full tier: deep model compiles, notebooks, SIGKILL/resume, multi-process, tmpfs mounts).
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")
# The partitionable threefry PRNG (JAX's default) compiles model init ~7x slower on XLA:CPU
# (ResNet-20: 12 s vs 1.7 s); the tests need fast inits, not bit-compatibility with it.
jax.config.update("jax_threefry_partitionable", False)


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory):
    """The environment above, for the whole session; yields its root directory."""
    from cnnlab import distributed
    from cnnlab.data import digits

    root = tmp_path_factory.mktemp("session")
    dirs = {
        "HOME": root / "home",
        "XDG_CACHE_HOME": root / "home" / ".cache",
        "MPLCONFIGDIR": root / "home" / ".config" / "matplotlib",
        "CNNLAB_DATA_DIR": root / "data",
        "CNNLAB_CACHE_DIR": root / "cache",
    }
    patch = pytest.MonkeyPatch()
    for key, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        patch.setenv(key, str(path))
    patch.setenv("JAX_PLATFORMS", "cpu")
    patch.setenv("MPLBACKEND", "Agg")
    patch.delenv("CNNLAB_DEBUG", raising=False)
    digits.prepare(str(dirs["CNNLAB_DATA_DIR"]))
    distributed.compilation_cache(distributed.default_cache_dir())
    yield root
    patch.undo()


@pytest.fixture
def data_dir(session_env):
    """The session's data dir, the digits in it (read-only: prepare other data elsewhere)."""
    return session_env / "data"


@pytest.fixture
def rng():
    return np.random.default_rng(0)
