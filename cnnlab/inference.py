"""Use a trained run: predict on image files, evaluate a checkpoint, export a JAX artifact.

    from cnnlab import inference
    run = inference.load("runs/my_images")                  # a run, or a fine-tune's workdir
    inference.predict(run, ["cat.jpg", "dog.png"])          # [(path, class name, probability)]
    inference.evaluate(run)                                 # accuracy, per class, confusion
    inference.export(run, "model.jax")                      # jax.export, batch size symbolic

`load` finds the run's result: the checkpoint its reported metrics come from (the best
validation loss when early stopping was on, else the last step), its model, and its data's
preprocessing and class names (the dataset must be prepared where the run read it). A fine-tune
workdir (report.md, seed<S>/finetune/phase<N>) resolves to its first seed's last phase.
`python -m experiments.predict`, `experiments.evaluate` and `experiments.export` call these.
"""

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import CheckpointError, ConfigError, DataError
from cnnlab.records import write_bytes_atomic, write_json_atomic

__all__ = ["Trained", "evaluate", "export", "load", "predict", "read_images", "run_dir"]


@dataclasses.dataclass
class Trained:
    """A run's model at its result checkpoint, with what its inputs need."""

    workdir: Path  # the run (holding config.json and checkpoints/)
    step: int  # the checkpoint loaded
    why: str  # why that checkpoint: 'best validation loss' (early stopping) or 'last step'
    model: object
    variables: dict  # params and batch_stats
    ds: object  # cnnlab.data.Dataset, normalised as the run saw it
    size: tuple[int, int]  # the model's input height and width (after the run's resize)
    class_names: tuple[str, ...]

    @functools.cached_property
    def apply(self):
        """The model's jitted inference apply (variables, images) -> logits, compiled once per
        input shape for this run."""
        model = self.model
        return jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, C) float32 images, preprocessed as `preprocess` does -> (B, classes)."""
        return np.asarray(self.apply(self.variables, jnp.asarray(images)))

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the data's stored size -> the model's float32 input (the run's
        resize and per-channel normalisation; no augmentation)."""
        from cnnlab.data import Preprocess

        pre = Preprocess(self.ds, self.size[0], augment=False)
        resized = np.stack([pre.image({"image": im}) for im in images])
        zeros = [0] * len(images)
        return pre.batch(resized, zeros, zeros, [False] * len(images))


def run_dir(workdir) -> Path:
    """The run a --workdir names: itself when it holds checkpoints/, else a fine-tune study's
    first seed's last phase (seed<S>/finetune/phase2, or phase1)."""
    w = Path(workdir).expanduser().absolute()
    if (w / "checkpoints").is_dir() and (w / "config.json").is_file():
        return w
    for seed in sorted(w.glob("seed*/finetune"), key=lambda p: p.parent.name):
        for phase in ("phase2", "phase1"):
            if (seed / phase / "checkpoints").is_dir():
                return seed / phase
    if not w.exists():
        raise ConfigError(f"--workdir={w} does not exist; pass the --workdir of a finished run")
    raise ConfigError(
        f"--workdir={w} holds no run (no checkpoints/ and config.json, nor seed*/finetune/"
        f"phase*); pass the --workdir of experiments.train or experiments.finetune"
    )


def _config(run: Path):
    import ml_collections

    try:
        saved = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as e:
        where = run / "config.json"
        raise ConfigError(f"{where} does not read ({e}); is the run complete?") from None
    return ml_collections.ConfigDict(saved)


def _result_step(run: Path, config) -> tuple[int, str]:
    """The step whose metrics the run reported: early stopping's best (validation loss) when
    patience was on and it was kept, else the last checkpoint."""
    from cnnlab.finetune.restore import reading_manager

    manager = reading_manager(run / "checkpoints")
    try:
        steps = manager.all_steps()
        if not steps:
            raise CheckpointError(f"{run}/checkpoints has no checkpoint; train the run first")
        last = max(steps)
        if config.train.patience:
            meta = manager.restore(last, args=_meta_args())["meta"]
            best = (meta.get("early_stopping") or {}).get("best_step")
            if best in steps:
                return best, "best validation loss"
        return last, "last step"
    finally:
        manager.close()


def _meta_args():
    import orbax.checkpoint as ocp

    return ocp.args.Composite(meta=ocp.args.JsonRestore())


def load(workdir, step: int = 0) -> Trained:
    """The run at `workdir` (see run_dir) at its result checkpoint, or at `step` if given."""
    from cnnlab.finetune import load_backbone
    from cnnlab.finetune.recipe import source_data
    from cnnlab.train import RunSpec, build_model, init_variables, input_shape, load_data

    run = run_dir(workdir)
    config = _config(run)
    spec = RunSpec.of(config)
    ds = source_data(config, load_data(spec)) if "finetune" in config else load_data(spec)
    model = build_model(spec, ds)
    variables = init_variables(spec, model, ds)
    variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    why = "as asked"
    if not step:
        step, why = _result_step(run, config)
    variables, _ = load_backbone(run, variables, step=step, new=())
    size = tuple(input_shape(spec, ds)[:2])
    names = tuple(ds.class_names) or tuple(str(k) for k in range(ds.num_classes))
    return Trained(run, step, why, model, variables, ds, size, names)


def _loaded(run) -> Trained:
    return run if isinstance(run, Trained) else load(run)


def read_images(paths, ds) -> np.ndarray:
    """Image files -> uint8 (N, H, W, C) at the dataset's stored size and channels, read as
    `cnnlab.data.prepare folder` reads them (`prepare.read_image`: Pillow, bilinear resize,
    decompression bombs refused)."""
    from cnnlab.data.prepare import read_image

    h, w, channels = ds.image_shape
    return np.stack([read_image(p, (h, w), "L" if channels == 1 else "RGB") for p in paths])


def predict(run, paths) -> list[tuple[str, str, float]]:
    """[(path, class name, probability)] of each image file, by the run's model."""
    run = _loaded(run)
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no image files given; pass one or more paths")
    logits = run.logits(run.preprocess(read_images(paths, run.ds)))
    probs = _probabilities(logits)
    k = probs.argmax(axis=1)
    return [(p, run.class_names[int(i)], float(probs[j, i])) for j, (p, i) in
            enumerate(zip(paths, k, strict=True))]  # fmt: skip


def _probabilities(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:  # binary: one sigmoid logit for class 1
        p1 = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p1, p1], axis=1)
    return np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=1))


def evaluate(run, split: str = "test") -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns:
    predicted) of the run's model on a split of its data, every example counted once."""
    from cnnlab.data import eval_batches

    run = _loaded(run)
    n = len(run.class_names)
    confusion = np.zeros((n, n), np.int64)
    for b in eval_batches(run.ds, 256, image_size=run.size[0], split=split):
        logits = run.logits(b["image"])
        guess = _probabilities(logits).argmax(axis=1)
        keep = b["mask"] > 0
        np.add.at(confusion, (b["label"][keep], guess[keep]), 1)
    total = int(confusion.sum())
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "run": str(run.workdir),
        "step": run.step,
        "checkpoint": run.why,
        "split": split,
        "examples": total,
        "accuracy": float(confusion.diagonal().sum() / max(total, 1)),
        "class_names": list(run.class_names),
        "per_class": {name: float(a) for name, a in zip(run.class_names, per_class, strict=True)},
        "confusion": confusion.tolist(),
    }


def confusion_table(result: dict) -> list[str]:
    """Markdown rows: per class its examples, accuracy and the row of the confusion matrix."""
    names = result["class_names"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " | examples | accuracy |",
             "|---" * (len(names) + 3) + "|"]  # fmt: skip
    for name, row in zip(names, result["confusion"], strict=True):
        acc = result["per_class"][name]
        lines.append(f"| {name} | " + " | ".join(map(str, row)) + f" | {sum(row)} | {acc:.3f} |")
    return lines


def plot_confusion(result: dict, path) -> Path:
    """The confusion matrix as a PNG (counts in the cells, rows normalised for the colour)."""
    from cnnlab.plotting import subplots

    names, m = result["class_names"], np.asarray(result["confusion"])
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.45 * len(names)
    fig, ax = subplots(1, 1, figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted",
           ylabel="true class")  # fmt: skip
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)  # fmt: skip
    ax.set_title(f"{result['split']} accuracy {result['accuracy']:.3f} "
                 f"({result['examples']} images)")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def export(run, out) -> Path:
    """A `jax.export` artifact of the run's model with its normalisation: uint8 images
    (batch, H, W, C) at the model's input size -> float32 logits (batch, classes), the batch
    size symbolic; beside it FILE.json names the classes, the input shape and the checkpoint.
    Load it without cnnlab:
    `jax.export.deserialize(bytearray(open(out, 'rb').read())).call(images)`.
    Resizing to H x W is the caller's (the run used Pillow's bilinear filter)."""
    from jax import export as jax_export

    run = _loaded(run)
    mean = jnp.asarray(run.ds.spec.mean, jnp.float32)
    std = jnp.asarray(run.ds.spec.std, jnp.float32)
    model, variables = run.model, run.variables

    def serve(images):
        x = (images.astype(jnp.float32) / 255.0 - mean) / std
        return model.apply(variables, x, train=False)[0]

    (batch,) = jax_export.symbolic_shape("batch")
    h, w = run.size
    arg = jax.ShapeDtypeStruct((batch, h, w, run.ds.image_shape[-1]), jnp.uint8)
    exported = jax_export.export(jax.jit(serve))(arg)
    out = Path(out).expanduser().absolute()
    write_bytes_atomic(out, bytes(exported.serialize()))
    write_json_atomic(out.with_name(out.name + ".json"), {
        "classes": list(run.class_names), "input": [h, w, run.ds.image_shape[-1]],
        "dtype": "uint8", "mean": list(run.ds.spec.mean), "std": list(run.ds.spec.std),
        "run": str(run.workdir), "step": run.step, "checkpoint": run.why})  # fmt: skip
    return out
