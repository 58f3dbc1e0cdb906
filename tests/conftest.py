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

import os

import jax
import numpy as np
import pytest

# Tests check values, not speed: XLA:CPU compiles with LLVM's cheap passes only (the suite's
# hundreds of small jits compile ~30% faster; measured side by side on the heavy tests, 138 s ->
# 99 s). Set before JAX starts its backend (it reads XLA_FLAGS then, not at import), so the test
# process and every subprocess it starts (they inherit os.environ) use it; benchmarks never do.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

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


@pytest.fixture(scope="session")
def saved_run(session_env):
    """A finished tiny run (entry.TINY: checkpoints at steps 2 and 4) made by the real entry
    point as the README writes it (a relative workdir), and its stdout; read-only: tests copy it
    before they touch it."""
    import json
    import os

    from entry import BASE, ROOT, TINY, cli

    workdir = session_env / "saved" / "run"
    relative = os.path.relpath(workdir, ROOT)
    out = cli("experiments.train", f"--config={BASE}", f"--workdir={relative}", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    assert json.loads((workdir / "config.json").read_text())["model"]["kwargs"]["width"] == 8
    return workdir, out.stdout
