"""`python -m experiments.train --config=experiments/configs/<name>.py --workdir=DIR`.

Re-running the same command resumes from the latest checkpoint in DIR.
"""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = runtime.workdir(_WORKDIR.value)
    from cnnlab import train  # here: flag and workdir errors come before JAX is imported

    runtime.start()  # jax.distributed when configured; compilation cache ~/.cache/cnnlab/jax
    metrics = train.train(_CONFIG.value, workdir).metrics
    print("final test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    cli.run(main)
