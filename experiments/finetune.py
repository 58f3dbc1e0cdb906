"""`python -m experiments.finetune --config.finetune.source=RUN --config.data.name=NAME
--workdir=DIR`.

Fine-tunes the source (a cnnlab run's --workdir, or 'torchvision/resnet50:PATH') in two phases
per seed on the named data, with the source's model; pre-trains first when the config has no
source (experiments/configs/finetune_digits.py), trains from scratch for comparison
(config.study.scratch) and writes DIR/report.md. Re-running resumes. --config defaults to
experiments/configs/finetune.py.
"""

from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, runtime

DEFAULT_CONFIG = str(Path(__file__).parent / "configs" / "finetune.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, f"Fine-tuning config file ({DEFAULT_CONFIG})."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where runs, checkpoints and the report go.")
_ACCEPT = cli.accept_changes_flag(
    "Resume runs and phases on a changed recipe (old config.json kept as config.step<N>.json); "
    "without it a resume refuses any change but train.steps and log/keep settings."
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = runtime.workdir(_WORKDIR.value)
    from cnnlab import finetune  # here: flag and workdir errors come before JAX is imported

    runtime.start()  # jax.distributed when configured; compilation cache ~/.cache/cnnlab/jax
    report = finetune.run_study(
        _CONFIG.value, workdir, accept_changes=_ACCEPT.value, overrides=cli.given("model.")
    )
    if not report.exists():  # processes > 0 of a multi-host run: process 0 writes it
        return
    text = report.read_text()
    print("\n".join(line for line in text.splitlines() if line.startswith("| ") and "±" in line))
    if "## Finding" in text:
        print(text.split("## Finding")[1].strip().splitlines()[0])
    print(f"report: {report}")


if __name__ == "__main__":
    cli.run(main, default_config=DEFAULT_CONFIG)
