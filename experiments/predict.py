"""`python -m experiments.predict --workdir=RUN IMAGE_OR_FOLDER...`.

Prints, per image, its path, the class the run's model gives it and that class's probability,
with the run's own preprocessing (cnnlab.inference.predict). RUN is the --workdir of
experiments.train or experiments.finetune; a folder stands for every image under it.
"""

from pathlib import Path

from absl import flags, logging

from experiments import cli, runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "The run (or fine-tune) --workdir to use.")
_STEP = flags.DEFINE_integer("step", 0, "A kept checkpoint step (0: the run's result).")
flags.mark_flags_as_required(["workdir"])

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def images(args: list[str]) -> list[Path]:
    """The files named, and every image file under the folders named, in order."""
    from cnnlab.errors import DataError

    if not args:
        raise DataError("no images given; pass image files or folders after the flags")
    out = []
    for a in map(Path, args):
        if a.is_dir():
            found = sorted(p for p in a.rglob("*") if p.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{a}: a folder with no image files ({', '.join(SUFFIXES)})")
            out += found
        else:
            out.append(a)
    return out


def main(argv):
    logging.set_verbosity(logging.WARNING)
    paths = images(argv[1:])
    from cnnlab import inference

    runtime.start()
    run = inference.load(_WORKDIR.value, step=_STEP.value)
    width = max(len(str(p)) for p in paths)
    for path, name, prob in inference.predict(run, paths):
        print(f"{path:<{width}}  {name}  {prob:.3f}")


if __name__ == "__main__":
    cli.run(main)
