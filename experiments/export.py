"""`python -m experiments.export --workdir=RUN --out=FILE`.

Writes a `jax.export` artifact of the run's result checkpoint (cnnlab.inference.export): uint8
images (batch, H, W, C) at the model's input size in, logits out, the normalisation inside,
the batch size symbolic. Plain JAX loads it, no cnnlab needed:

    exported = jax.export.deserialize(bytearray(open(FILE, "rb").read()))
    logits = exported.call(images)
"""

from pathlib import Path

from absl import flags, logging

from experiments import cli, runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "The run (or fine-tune) --workdir to export.")
_OUT = flags.DEFINE_string("out", None, "The artifact file to write.")
_STEP = flags.DEFINE_integer("step", 0, "A kept checkpoint step (0: the run's result).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    out = Path(_OUT.value).expanduser().absolute()
    if out.exists() and not _OVERWRITE.value:
        raise cli.ConfigError(f"--out={out} exists; pass --overwrite to replace it, or another "
                              f"--out")  # fmt: skip
    if not out.parent.is_dir():
        raise cli.ConfigError(f"--out={out}: no folder {out.parent}; create it first")
    from cnnlab import inference

    runtime.start()
    run = inference.load(_WORKDIR.value, step=_STEP.value)
    inference.export(run, out)
    h, w = run.size
    print(f"exported {run.workdir}, step {run.step} ({run.why}) to {out}: uint8 images "
          f"(batch, {h}, {w}, {run.ds.image_shape[-1]}) -> logits (batch, "
          f"{len(run.class_names)}); classes {list(run.class_names)}")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
