"""cnnlab.pretrained: every torchvision and Keras architecture gives its source's outputs.

torchvision: golden outputs of the real torchvision models (tests/fixtures/pretrained/
make_torchvision.py, torch 2.13 + torchvision 0.28) on seeded random weights with random
BatchNorm statistics; the tests rebuild the same weights, write them to a weights file and load
it. Keras: keras 3 (JAX backend) builds each application with the same kind of weights here and
saves both file layouts. Tolerance: max |difference| <= 1e-4 x max(1, max |source output|) in
float32 on CPU, and the same argmax.
"""

import io
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnlab import models, pretrained
from cnnlab.pretrained import formats

FIXTURES = Path(__file__).parent / "fixtures" / "pretrained"
sys.path.insert(0, str(FIXTURES))
import seeded  # noqa: E402

GOLDEN = np.load(FIXTURES / "torchvision_golden.npz")
FAST = ["resnet18", "mobilenet_v2", "efficientnet_b0"]
SLOW = ["resnet34", "resnet50", "resnet101", "resnet152",
        *[f"efficientnet_b{i}" for i in range(1, 8)]]  # fmt: skip


def torchvision_case(arch: str, tmp_path: Path):
    """(weights file, input batch, golden logits, golden features) of one arch."""
    from safetensors.numpy import save_file

    names = json.loads(str(GOLDEN[f"{arch}/names"]))
    wseed, xseed, size = (int(v) for v in GOLDEN[f"{arch}/seed"])
    path = tmp_path / f"{arch}.safetensors"
    save_file(seeded.weights(names, wseed), str(path))
    return path, seeded.images(size, xseed), GOLDEN[f"{arch}/logits"], GOLDEN[f"{arch}/features"]


def assert_matches(out, ref):
    out = np.asarray(out)
    assert out.shape == ref.shape
    err, tol = np.abs(out - ref).max(), 1e-4 * max(1.0, np.abs(ref).max())
    assert err <= tol, f"max |difference| {err:.3g} > {tol:.3g}"
    assert (out.argmax(-1) == ref.argmax(-1)).all()


def check_torchvision(arch, tmp_path):
    path, x, logits, features = torchvision_case(arch, tmp_path)
    model, variables = pretrained.load(f"torchvision/{arch}", path)
    assert_matches(jax.jit(model.apply)(variables, x)[0], logits)
    model, variables = pretrained.load(f"torchvision/{arch}", path, include_top=False)
    assert "head" not in variables["params"]
    assert_matches(jax.jit(model.apply)(variables, x)[0], features)


@pytest.mark.parametrize("arch", FAST)
def test_torchvision_outputs_equal_the_source(arch, tmp_path):
    check_torchvision(arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_torchvision_outputs_equal_the_source_deep(arch, tmp_path):
    check_torchvision(arch, tmp_path)


def test_padding_and_epsilon_matter(tmp_path):
    """The check is sharp: the same weights in the default 'SAME' ResNet-18, or with another
    BatchNorm epsilon, miss the source by more than 10x the tolerance."""
    path, x, logits, _ = torchvision_case("resnet18", tmp_path)
    _, variables = pretrained.load("torchvision/resnet18", path)
    for kwargs in ({}, {"padding": "SYMMETRIC", "bn_epsilon": 1e-3}):
        out = np.asarray(models.create("resnet18", **kwargs).apply(variables, x)[0])
        assert np.abs(out - logits).max() > 10 * 1e-4 * np.abs(logits).max(), kwargs


def test_new_head_on_the_loaded_backbone(tmp_path):
    path, x, _, features = torchvision_case("resnet18", tmp_path)
    model, variables = pretrained.load("torchvision/resnet18", path, num_classes=5, seed=3)
    assert variables["params"]["head"]["kernel"].shape == (512, 5)
    assert not np.any(variables["params"]["head"]["bias"])  # cnnlab's heads start at bias 0
    logits, taps = model.apply(variables, x)
    assert logits.shape == (2, 5)
    assert_matches(taps["pre_logits"], features)  # the backbone is the source's
    again = pretrained.load("torchvision/resnet18", path, num_classes=5, seed=3)[1]
    np.testing.assert_array_equal(again["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])  # fmt: skip


def test_a_real_torch_save_file_is_read_without_torch():
    """small_state_dict.pth was written by torch.save (float32, float16, bfloat16, int64, a 0-d
    tensor, and a transposed view sharing its storage with another tensor)."""
    assert "torch" not in sys.modules
    kind, got = formats.read(FIXTURES / "small_state_dict.pth")
    want = np.load(FIXTURES / "small_state_dict.npz")
    assert kind == "torch_zip" and sorted(got) == sorted(want.files)
    for k in want.files:
        np.testing.assert_array_equal(np.asarray(got[k], np.float64), want[k].astype(np.float64))
    assert got["half"].dtype == np.float16 and got["index"].dtype == np.int64
    assert got["strided"].shape == (6, 4) and got["count"].shape == ()


def crafted_pth(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    return path


def test_a_crafted_pth_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = crafted_pth(tmp_path, pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(pretrained.WeightsError) as e:
        pretrained.load("torchvision/resnet18", path)
    msg = str(e.value)
    assert "refused" in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()
    bare = tmp_path / "old.pth"
    bare.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))  # pre-1.6 torch.save: a bare pickle
    with pytest.raises(pretrained.WeightsError, match="bare pickle"):
        pretrained.load("torchvision/resnet18", bare)
    assert not marker.exists()


def test_files_that_do_not_fit_are_one_line_errors(tmp_path):
    from safetensors.numpy import save_file

    path, *_ = torchvision_case("resnet18", tmp_path)
    weights = formats.read(path)[1]

    def load_with(w, arch="torchvision/resnet18"):
        p = tmp_path / "w.safetensors"
        save_file(w, str(p))
        with pytest.raises(pretrained.WeightsError) as e:
            pretrained.load(arch, p)
        assert "\n" not in str(e.value)
        return str(e.value)

    msg = load_with(weights, "torchvision/resnet34")  # resnet18's file as resnet34
    assert "no weight for torchvision/resnet34's" in msg and "stage1_block3" in msg
    msg = load_with(weights, "torchvision/mobilenet_v2")
    assert "has no place in torchvision/mobilenet_v2" in msg
    wrong = {**weights, "layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)}
    msg = load_with(wrong)
    assert "'layer1.0.conv1.weight' has shape (64, 64, 1, 1)" in msg and "(3, 3, 64, 64)" in msg
    missing = {k: v for k, v in weights.items() if k != "bn1.running_var"}
    assert "batch_stats/stem_norm/var (64,)" in load_with(missing)
    assert "'extra.weight'" in load_with({**weights, "extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(pretrained.WeightsError, match="unknown pretrained arch"):
        pretrained.load("torchvision/resnet19", path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights at all")
    with pytest.raises(pretrained.WeightsError, match="not a weights file"):
        pretrained.load("torchvision/resnet18", junk)
    with pytest.raises(pretrained.WeightsError, match="no such weights file"):
        pretrained.load("torchvision/resnet18", tmp_path / "absent.pth")
    with pytest.raises(pretrained.WeightsError, match="PyTorch-style file"):
        pretrained.load("keras/ResNet50", path)


def test_preprocess_equals_torchvision_transforms():
    rng = np.random.default_rng(5)  # the images make_torchvision.py drew
    pics = [rng.integers(0, 256, (250, 300, 3), dtype=np.uint8),
            rng.integers(0, 256, (320, 180, 3), dtype=np.uint8)]  # fmt: skip
    for arch, weights in (("resnet50", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2"),
                          ("efficientnet_b3", "IMAGENET1K_V1")):  # fmt: skip
        want = GOLDEN[f"preprocess/{arch}/{weights}"]
        got = pretrained.preprocess(f"torchvision/{arch}", pics, weights=weights)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_keras_preprocessing_by_hand():
    grey = np.full((224, 224, 3), (10, 20, 30), np.uint8)
    caffe = pretrained.preprocess("keras/ResNet50", grey)[0, 0, 0]
    np.testing.assert_allclose(caffe, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    tf = pretrained.preprocess("keras/MobileNetV2", grey)[0, 0, 0]
    np.testing.assert_allclose(tf, [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)


def keras_case(name: str, tmp_path: Path):
    """A Keras application with seeded weights (random BatchNorm statistics), saved in the
    applications' legacy .h5 layout and as Keras 3 .weights.h5, and its output on a batch."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    km = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3),
                                           classifier_activation=None)  # fmt: skip
    var = lambda layer, w: f"{layer.name}/{w.path.split('/')[-1]}"
    names = [(var(layer, w), list(w.shape)) for layer in km.layers for w in layer.weights]
    w = seeded.weights(names, 7)
    for layer in km.layers:
        if layer.weights:
            layer.set_weights([w[var(layer, v)] for v in layer.weights])
    x = seeded.images(64, 8) * 50
    ref = np.asarray(km.predict(x, verbose=0))
    legacy, k3 = tmp_path / f"{name}.h5", tmp_path / f"{name}.weights.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, km)
    km.save_weights(str(k3))
    return (legacy, k3), x, ref


def check_keras(name, tmp_path):
    files, x, ref = keras_case(name, tmp_path)
    for path in files:
        model, variables = pretrained.load(f"keras/{name}", path)
        assert_matches(jax.jit(model.apply)(variables, x)[0], ref)
    model, variables = pretrained.load(f"keras/{name}", files[0], include_top=False)
    assert model.apply(variables, x)[0].shape == (2, 2048 if name == "ResNet50" else 1280)


@pytest.mark.slow  # keras builds and predicts: ~20 s
def test_keras_mobilenet_v2_equals_the_source(tmp_path):
    check_keras("MobileNetV2", tmp_path)


@pytest.mark.slow
def test_keras_resnet50_equals_the_source(tmp_path):
    check_keras("ResNet50", tmp_path)


def test_every_source_is_tested():
    tested = {f"torchvision/{a}" for a in FAST + SLOW} | {"keras/MobileNetV2", "keras/ResNet50"}
    assert tested == set(pretrained.SOURCES)


def test_a_pth_without_tensors_is_refused(tmp_path):
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump({"w": 1})
    path = crafted_pth(tmp_path, buf.getvalue())
    with pytest.raises(pretrained.WeightsError, match="not a state dict of tensors"):
        formats.read(path)


def image_folder(root: Path, per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (40, 48, 3)) + 150 * c  # the classes differ in brightness
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow  # two processes, two phases of ResNet-18: about a minute
def test_finetune_command_from_a_pretrained_file(tmp_path):
    """The documented commands: prepare a folder, fine-tune torchvision/resnet18 from a weights
    file (seeded random weights) without naming a model; a file of another arch is one line."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CNNLAB_DATA_DIR": str(tmp_path / "data")}
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=root, env=env,
                                    capture_output=True, text=True, timeout=900)  # fmt: skip
    out = run("cnnlab.data.prepare", "folder", "--name=pets",
              f"--source={image_folder(tmp_path / 'imgs')}", "--image_size=40")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    path, *_ = torchvision_case("resnet18", tmp_path)
    args = ("experiments.finetune", "--config=experiments/configs/finetune_pretrained.py",
            f"--workdir={tmp_path / 'w'}", f"--config.finetune.source=torchvision/resnet18:{path}",
            "--config.data.name=pets", "--config.data.image_size=32", "--config.data.batch_size=4",
            "--config.phase1.steps=3", "--config.phase2.steps=3", "--config.train.eval_every=3",
            "--config.train.log_every=1")  # fmt: skip
    out = run(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "w" / "report.md").exists() and "report: " in out.stdout
    summary = (tmp_path / "w" / "seed0" / "finetune" / "phase1" / "summary.txt").read_text()
    assert "Trainable params:     1,026" in summary  # the new 2-way head on 512 features
    bad = run(*args[:-1], f"--config.finetune.source=torchvision/resnet34:{path}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: config.finetune.source: ")


def test_fetch_checks_the_published_hash_over_a_loopback_mirror(tmp_path, capsys, monkeypatch):
    """`python -m cnnlab.pretrained fetch` from an HTTP server on 127.0.0.1 serving a fixture
    under the published name: the right bytes land in the cache; other bytes under that name
    fail the SHA-256 prefix the name carries and nothing is kept."""
    import hashlib
    import http.server
    import threading

    from cnnlab.pretrained import __main__ as cli
    from cnnlab.pretrained import fetch

    url, algo, prefix = fetch.published("torchvision/resnet18")
    name = url.rsplit("/", 1)[1]
    assert (algo, name) == ("sha256", "resnet18-f37072fd.pth")
    served = tmp_path / "served"
    served.mkdir()
    body = b"weights " * 1000
    # no small fixture has a SHA-256 starting with the published f37072fd: the same bytes are
    # first fetched as published (refused), then with the expected prefix set to their own
    real = hashlib.sha256(body).hexdigest()[:8]
    (served / name).write_bytes(body)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = lambda *a, **k: Quiet(*a, directory=str(served), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cache = tmp_path / "cache"
        code = cli.main(["fetch", "torchvision/resnet18", f"--base_url={base}",
                         f"--cache_dir={cache}"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
        assert code == 1 and err.startswith("error: ") and "SHA256 is" in err
        assert f"the published one {prefix}" in err
        assert not any(cache.iterdir())  # nothing kept, not even the .part
        monkeypatch.setattr(fetch, "published", lambda *a, **k: (url, "sha256", real))
        code = cli.main(["fetch", "torchvision/resnet18", f"--base_url={base}",
                         f"--cache_dir={cache}"])  # fmt: skip
        out = capsys.readouterr().out.strip()
        assert code == 0 and out == str(cache / name)
        assert (cache / name).read_bytes() == body
        code = cli.main(["fetch", "torchvision/resnet18", f"--base_url={base}/absent",
                         f"--cache_dir={tmp_path / 'c2'}"])  # fmt: skip
        assert code == 1 and "download failed" in capsys.readouterr().err
    finally:
        server.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[1] / ".venv-torch").exists(),
    reason="needs .venv-torch (benchmarks/setup_torch.sh, then pip install torchvision there)",
)
def test_goldens_are_what_torchvision_computes_here(tmp_path):
    """Where PyTorch and torchvision are installed, the committed golden outputs are made again
    by the real torchvision code and compared."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    script = FIXTURES / "make_torchvision.py"
    subprocess.run([str(root / ".venv-torch" / "bin" / "python"), str(script), str(tmp_path)],
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    again = np.load(tmp_path / "torchvision_golden.npz")
    for key in GOLDEN.files:
        if key.endswith(("logits", "features")) or key.startswith("preprocess/"):
            np.testing.assert_allclose(again[key], GOLDEN[key], rtol=1e-5, atol=1e-5, err_msg=key)
