"""`python -m experiments.train --config=experiments/configs/<name>.py --workdir=DIR`.

Re-running the same command resumes from the latest checkpoint in DIR.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cnnlab import data, train
from experiments import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not _WORKDIR.value.strip():  # '' would write checkpoints into the current directory
        sys.exit("error: --workdir is empty; pass the directory for checkpoints and logs")
    runtime.start()  # jax.distributed when configured; compilation cache ~/.cache/cnnlab/jax
    try:
        metrics = train.train(_CONFIG.value, _WORKDIR.value).metrics
    except (train.ConfigError, data.DataError, train.CheckpointError, train.NonFiniteLoss) as e:
        sys.exit(f"error: {e}")
    print("final test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    app.run(main)
