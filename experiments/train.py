"""`python -m experiments.train --config=experiments/configs/<name>.py --workdir=DIR`.

Re-running the same command resumes from the latest checkpoint in DIR, on the same recipe (a
changed one is refused, naming the first difference, unless --accept_changes).
"""

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
_ACCEPT = cli.accept_changes_flag(
    "Resume a run on a changed recipe (its old config.json is kept as config.step<N>.json); "
    "without it a resume refuses any change but train.steps and log/keep settings."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = runtime.workdir(_WORKDIR.value)
    from cnnlab import train  # here: flag and workdir errors come before JAX is imported

    runtime.start()  # jax.distributed when configured; compilation cache ~/.cache/cnnlab/jax
    metrics = train.train(_CONFIG.value, workdir, accept_changes=_ACCEPT.value).metrics
    print("final test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    cli.run(main)
