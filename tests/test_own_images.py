"""A user's own images to a usable model: prepare, fine-tune adopting the source, evaluate,
predict, export (issue 41). Fast checks of each rule here; the whole path through the entry
points, on a generated 3-class RGB folder, in the full tier."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from entry import cli

from cnnlab import data, inference
from cnnlab.data import prepare as preparing
from cnnlab.errors import ConfigError, DataError
from cnnlab.finetune import recipe
from cnnlab.finetune.restore import adapt_channels, channel_change
from cnnlab.train import Checkpointer, RunSpec, validate
from cnnlab.train.loop import train_iterator
from experiments.configs import finetune as finetune_config


def small(**kw):
    """The fine-tuning config on 48 synthetic 8x8 RGB images of 3 classes (16 each)."""
    c = finetune_config.get_config()
    c.data.name = "synthetic"
    c.data.synthetic.update(num_examples=48, image_shape=(8, 8, 3), num_classes=3)
    c.update_from_flattened_dict(kw)
    return c


def test_validation_split_and_batch_are_capped_by_the_data_and_said():
    c, said = recipe.fit_to_data(small())  # val_per_class=20, batch 64: neither fits 16 a class
    assert (c.data.val_per_class, c.data.batch_size, c.train.patience) == (3, 39, 4)
    assert said == (
        "synthetic: validation 3 per class (config.data.val_per_class=20 capped at a fifth of "
        "the smallest class's 16 training images); batch 39 (config.data.batch_size=64 capped "
        "at the 39 training images)"
    )
    again, nothing = recipe.fit_to_data(c)  # what fits stays, and nothing is said
    assert nothing == "" and again.data.to_dict() == c.data.to_dict()
    c, said = recipe.fit_to_data(small(**{"data.train_per_class": 14}))
    assert c.data.val_per_class == 0 and c.train.patience == 0 and c.train.best_metric == "accuracy"
    assert "no early stopping: test accuracy is the last step's" in said
    validate(c)  # the capped config is a valid one
    ds = data.load("synthetic", synthetic=dict(c.data.synthetic))
    data.subset(ds, (), 14, 0)
    with pytest.raises(DataError, match=r"need more\. Lower config\.data\.val_per_class$"):
        data.subset(ds, (), 0, 20)  # the advice names only a setting in use


def test_the_source_runs_model_is_adopted_and_a_different_model_key_refused(saved_run):
    workdir, _ = saved_run  # ResNet-8 of width 8 (entry.TINY)
    c = small(**{"finetune.source": str(workdir)})
    adopted = recipe.adopt_source(c, {"model.kwargs.depth": 8})
    assert adopted.model.name == "cifar_resnet"
    assert (adopted.model.kwargs.depth, adopted.model.kwargs.width) == (8, 8)
    assert c.model.kwargs.depth == 20  # a copy: the config given is untouched
    with pytest.raises(ConfigError, match=r"--config\.model\.kwargs\.depth=20 but the fine-tuning "
                       r"source's model has 8 \(the source run's config\.json"):  # fmt: skip
        recipe.adopt_source(c, {"model.kwargs.depth": 20})
    with pytest.raises(ConfigError, match=r"model\.kwargs\.groups=2 but .* has 'unset'"):
        recipe.adopt_source(c, {"model.kwargs.groups": 2})


@pytest.mark.parametrize("source, model", [(1, 3), (3, 1)])
def test_the_channel_rule_gives_the_sources_response(source, model, rng):
    """Grey pre-training read by a colour model sees the channels' mean; colour pre-training
    read by a grey model sees the grey image as three equal channels."""
    kernel = jnp.asarray(rng.normal(size=(3, 3, source, 4)), jnp.float32)
    image = jnp.asarray(rng.normal(size=(2, 6, 6, model)), jnp.float32)
    assert channel_change(kernel.shape, (3, 3, model, 4)) == (source, model)
    assert channel_change((3, 3, 2, 4), (3, 3, 3, 4)) is None  # anything else is refused
    seen = image.mean(-1, keepdims=True) if model == 3 else jnp.repeat(image, 3, axis=-1)

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    np.testing.assert_allclose(conv(image, adapt_channels(kernel, (source, model))),
                               conv(seen, kernel), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_a_reinitialised_conv_brings_its_norm():
    order = ["stem_conv", "stem_norm", "stage1_block1", "head"]
    assert recipe.with_partners(order, ("head", "side_*")) == ("head", "side_*")
    assert recipe.with_partners(order, ("head", "stem_conv")) == ("head", "stem_conv", "stem_norm")


def test_a_patience_that_can_never_stop_a_phase_is_refused():
    c = small(**{"train.eval_every": 100})
    with pytest.raises(ConfigError, match=r"patience=4 can never stop config\.phase1 early: its "
                       r"100 steps hold 1 evals .* lower eval_every to at most 20"):  # fmt: skip
        recipe.validate_finetune(c)
    recipe.validate_finetune(small())  # the default: evals every 10 steps, 10 per phase
    with pytest.raises(ConfigError, match=r"patience=2 can never stop the run early"):
        validate(small(**{"train.patience": 2, "train.steps": 20, "train.eval_every": 10}))


def test_of_equally_good_checkpoints_the_earliest_is_kept_as_the_best(tmp_path):
    """Early stopping restores the first step of the lowest validation loss; orbax must keep
    that step when later ones tie with it (a tie had deleted it)."""
    state = {"w": jnp.zeros(3)}
    ckpt = Checkpointer(tmp_path / "c", keep=2, best_metric="val_loss", best_mode="min")
    for step, loss in ((1, 3.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 0.0)):
        ckpt.save(step, state, None, {}, metrics={"val_loss": loss})
    ckpt.wait()
    assert ckpt.manager.all_steps() == [2, 4, 5] and ckpt.best_step() == 2
    ckpt.close()


def test_augmentation_that_would_do_nothing_is_an_error(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, per_class=5, side=16)
    prepared = preparing.prepare("folder", str(root), str(tmp_path / "d"), name="toys")
    meta = json.loads((prepared / "metadata.json").read_text())
    assert (meta["flip"], meta["crop_pad"]) == (True, 2)  # an eighth of 16
    plain = preparing.prepare("folder", str(root), str(tmp_path / "d"), name="plain",
                                 flip=False, crop_pad=0)  # fmt: skip
    c = small(**{"data.name": "plain", "data.data_dir": str(tmp_path / "d")})
    c.data.batch_size = 4
    ds = data.load("plain", str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"config\.data\.augment=True does nothing for 'plain'"):
        train_iterator(RunSpec.of(c), ds)
    c.data.augment = False
    next(train_iterator(RunSpec.of(c), ds))
    assert plain.is_dir()


def write_folder(root: Path, per_class: int, side: int, seed: int = 0) -> None:
    """Three classes of coloured shapes on noise, RGB PNGs (the tutorial's, smaller)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    c = side // 2
    masks = {
        "circle": (yy - c) ** 2 + (xx - c) ** 2 < (side // 3) ** 2,
        "square": (abs(yy - c) < side // 3) & (abs(xx - c) < side // 3),
        "stripes": (xx // 2) % 2 == 0,
    }
    for name, mask in masks.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (side, side, 3))
            pixels[mask] += rng.integers(100, 160, 3)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


def test_a_finished_run_evaluates_predicts_and_exports(saved_run, tmp_path):
    workdir, _ = saved_run  # synthetic 8x8 RGB, 10 classes, checkpoints at 2 and 4
    run = inference.load(workdir)
    assert (run.step, run.why, run.size) == (4, "last step", (8, 8))
    result = inference.evaluate(run)
    saved = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    logged = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    test4 = next(m for m in logged if m.get("split") == "test" and m["step"] == 4)
    assert result["examples"] == 256 and saved
    assert abs(result["accuracy"] - test4["accuracy"]) < 1e-9  # the run's own number
    m = np.asarray(result["confusion"])
    assert m.sum() == 256 and np.trace(m) == round(result["accuracy"] * 256)
    assert result["class_names"] == [str(k) for k in range(10)]
    # predict: image files, read and preprocessed as the run's data
    from PIL import Image

    images = np.stack([run.ds.test[i]["image"] for i in range(3)])
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im).save(paths[-1])
    logits = run.logits(run.preprocess(images))
    got = inference.predict(run, paths)
    probs = np.asarray(jax.nn.softmax(logits, axis=1))
    for (path, name, prob), row in zip(got, probs, strict=True):
        assert name == str(int(row.argmax())) and abs(prob - row.max()) < 1e-6, path
    with pytest.raises(DataError, match=r"nope\.png: no such image file$"):
        inference.predict(run, [tmp_path / "nope.png"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        inference.predict(run, [tmp_path / "bad.png"])  # read as prepare reads a folder
    # export: plain JAX, any batch size, the run's logits
    out = inference.export(run, tmp_path / "model.jax")
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    for batch in (images, images[:1]):
        np.testing.assert_allclose(exported.call(batch), run.logits(run.preprocess(batch)),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    sidecar = json.loads((tmp_path / "model.jax.json").read_text())
    assert sidecar["input"] == [8, 8, 3] and sidecar["step"] == 4


@pytest.mark.slow  # five entry points, two trainings: full tier
def test_own_images_end_to_end_through_the_entry_points(tmp_path, monkeypatch):
    """The issue's path: prepare a generated folder; fine-tune with only the source, the data
    name and a workdir; evaluate; predict; export and reload with plain JAX."""
    images, data_dir = tmp_path / "my_images", tmp_path / "data"
    write_folder(images, per_class=20, side=32)
    env = {"CNNLAB_DATA_DIR": str(data_dir)}
    out = cli("cnnlab.data.prepare", "folder", "--name=shapes", f"--source={images}", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    source = tmp_path / "source"  # a grey pre-training run on the embedded digits
    out = cli("experiments.train", "--config=experiments/configs/base.py",
              "--config.model.kwargs.depth=8", "--config.train.steps=40",
              "--config.train.eval_every=20", f"--workdir={source}", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "run"
    out = cli("experiments.finetune", f"--config.finetune.source={source}",
              "--config.data.name=shapes", f"--workdir={run}", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shapes: validation 3 per class" in out.stdout and "batch 39" in out.stdout
    report = (run / "report.md").read_text()
    assert "Adapted `params/stem_conv/kernel`: 1 -> 3 input channels" in report
    assert "The test set: 12 images of 3 classes (circle, square, stripes)" in report
    assert "test accuracy from step" in report and (run / "confusion.png").stat().st_size
    out = cli("experiments.evaluate", f"--workdir={run}", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    evaluation = json.loads((run / "evaluation_test.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert evaluation["accuracy"] == results["summary"]["finetune"]["accuracy"][0]
    assert "| circle |" in out.stdout
    out = cli("experiments.predict", f"--workdir={run}", str(images / "square"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.strip().splitlines()]
    assert len(rows) == 20 and all(r[1] in ("circle", "square", "stripes") for r in rows)
    assert all(0 < float(r[2]) <= 1 for r in rows)
    artifact = tmp_path / "model.jax"
    out = cli("experiments.export", f"--workdir={run}", f"--out={artifact}", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    again = cli("experiments.export", f"--workdir={run}", f"--out={artifact}", env=env)
    assert again.returncode == 1 and "exists; pass --overwrite" in again.stderr
    plain = (  # plain JAX, in a process that never imports cnnlab
        "import sys, json, numpy as np, jax\n"
        "from PIL import Image\n"
        f"e = jax.export.deserialize(bytearray(open({str(artifact)!r}, 'rb').read()))\n"
        f"x = np.stack([np.asarray(Image.open({str(images)!r} + f'/circle/{{i}}.png')) "
        "for i in range(4)])\n"
        "print(json.dumps(np.asarray(e.call(x)).tolist()))\n"
        "assert not any(m.startswith('cnnlab') for m in sys.modules)\n"
    )
    got = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)  # fmt: skip
    assert got.returncode == 0, got.stderr[-2000:]
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(data_dir))  # the run's logits, in this process
    trained = inference.load(run)
    x = inference.read_images([images / "circle" / f"{i}.png" for i in range(4)], trained.ds)
    want = trained.logits(trained.preprocess(x))
    np.testing.assert_allclose(json.loads(got.stdout), want, rtol=1e-5, atol=1e-5)
