"""`python -m experiments.evaluate --workdir=RUN [--split=test]`.

Test accuracy, per-class accuracy and the confusion matrix of a run's result checkpoint
(cnnlab.inference.evaluate): printed as a table, and written to RUN/evaluation_<split>.json and
RUN/confusion_<split>.png. RUN is the --workdir of experiments.train or experiments.finetune.
"""

from absl import flags, logging

from experiments import cli, runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "The run (or fine-tune) --workdir to evaluate.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "val", "train"], "The split to evaluate.")
_STEP = flags.DEFINE_integer("step", 0, "A kept checkpoint step (0: the run's result).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = runtime.workdir(_WORKDIR.value)
    from cnnlab import inference
    from cnnlab.records import write_json_atomic

    runtime.start()
    run = inference.load(workdir, step=_STEP.value)
    if _SPLIT.value == "val" and run.ds.val is None:
        raise cli.ConfigError(f"{run.workdir} has no validation split; use --split=test")
    result = inference.evaluate(run, split=_SPLIT.value)
    print(f"{run.workdir}, step {run.step} ({run.why}): {_SPLIT.value} accuracy "
          f"{result['accuracy']:.4f} on {result['examples']} images")  # fmt: skip
    print("\n".join(inference.confusion_table(result)))
    write_json_atomic(workdir / f"evaluation_{_SPLIT.value}.json", result)
    png = inference.plot_confusion(result, workdir / f"confusion_{_SPLIT.value}.png")
    print(f"written: {workdir / f'evaluation_{_SPLIT.value}.json'}, {png}")


if __name__ == "__main__":
    cli.run(main)
