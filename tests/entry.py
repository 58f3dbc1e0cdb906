"""Running the entry points from tests: the tiny real run they share and a subprocess helper."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "experiments/configs/base.py"
TINY = [  # a tiny real run: ResNet-8 (width 8) on 8x8 synthetic images, checkpoints at 2 and 4
    "--config.data.name=synthetic", "--config.data.synthetic.image_shape=(8,8,3)",
    "--config.data.synthetic.num_examples=64", "--config.model.kwargs.depth=8",
    "--config.model.kwargs.width=8",  # a model field base.py does not list
    "--config.train.steps=4", "--config.train.eval_every=2", "--config.train.log_every=1",
    "--config.data.batch_size=16", "--config.train.train_subset=0",
]  # fmt: skip


def tiny(*args) -> list[str]:
    """TINY with `args` in place of the flags they set (config_flags concatenates a repeated
    tuple flag instead of replacing it)."""
    keys = {a.split("=")[0] for a in args}
    return [a for a in TINY if a.split("=")[0] not in keys] + list(args)


def cli(module, *args, env=None, cwd=ROOT):
    """`python -m module args` with the session's environment (conftest), CNNLAB_DEBUG off."""
    full = {k: v for k, v in os.environ.items() if k != "CNNLAB_DEBUG"}
    full.update({"JAX_PLATFORMS": "cpu", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def final_state(run_dir):
    """(step, state) of the newest checkpoint in RUN_DIR/checkpoints, read with orbax directly
    (not cnnlab's Checkpointer), as saved."""
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints")
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return step, state
