"""The README's main command and the benchmarks run end to end (tiny shapes, no timing checks)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow  # a benchmark end to end: the full tier
def test_conv_variants_benchmark_writes_results(tmp_path):
    out = run(
        "-m",
        "benchmarks.conv_variants",
        f"--workdir={tmp_path}",
        "--config.batch=2",
        "--config.size=8",
        "--config.in_channels=8",
        "--config.out_channels=8",
        "--config.repeats=1",
    )
    assert out.returncode == 0, out.stderr
    assert str(tmp_path) in out.stdout
    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "results.csv").open())}
    assert set(rows) >= {"standard", "depthwise", "separable", "spatial_separable"}
    # analytic MACs: 3·3·8·8·8·8 for the standard conv, (9·8 + 8·8)·8·8 for the separable one
    assert int(rows["standard"]["macs"]) == 9 * 8 * 8 * 64
    assert int(rows["separable"]["macs"]) == (9 * 8 + 8 * 8) * 64
    assert "| separable |" in (tmp_path / "results.md").read_text()


def test_ablate_bad_config_is_one_line_error(tmp_path):
    out = run(
        "-m", "benchmarks.conv_variants", f"--workdir={tmp_path}", "--config.variants=('nope',)"
    )
    assert out.returncode != 0
    assert "config.variants: unknown ['nope']; allowed:" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow  # a benchmark end to end: the full tier
def test_depthwise_benchmark_smoke():
    out = run("-m", "benchmarks.depthwise", "--quick")
    assert out.returncode == 0, out.stderr
    assert "| depthwise shifted |" in out.stdout and "auto picks: shifted" in out.stdout


def test_ruff_lint_and_format_are_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, f"ruff {' '.join(args)}:\n{out.stdout}{out.stderr}"


@pytest.mark.slow  # a benchmark end to end: the full tier
def test_vs_torch_benchmark_smoke(tmp_path):
    out = run(
        "-m", "benchmarks.vs_torch", f"--workdir={tmp_path}", "--torch_python=",
        "--workloads=conv_standard,conv_separable", "--rounds=1", "--steps=1",
        "--compile_depths=8",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    layers = results["workloads"]
    assert layers["conv_standard"]["params"] == 3 * 3 * 64 * 64 + 64 * 10 + 10
    assert layers["conv_separable"]["params"] == 3 * 3 * 64 + 64 * 64 + 64 * 10 + 10
    # the theoretical speed-up: 9·C·C / (9·C + C·C) MACs per position
    assert layers["conv_standard"]["layer_macs"] == 9 * 64 * 64 * 32 * 32
    # FLOPs of the step: the conv forward and its kernel gradient (the input needs none), each
    # 2 x MACs over the in-bounds taps of a SAME 3x3 conv on 32x32 (94² of 9 x 32² positions)
    conv_flops = 2 * 2 * 94**2 * 64 * 64 * 32
    assert layers["conv_standard"]["step_gflop"] == pytest.approx(conv_flops / 1e9, rel=0.01)
    assert "| separable | 7.9 |" in (tmp_path / "results.md").read_text()
    assert set(results["compile_vs_depth"]) == {"8"} and results["matmul_peak_gflops"] > 0


@pytest.mark.slow  # a benchmark end to end: the full tier
def test_gpu_benchmark_smoke_runs_every_path_and_reruns_one_row(tmp_path):
    """benchmarks.gpu --smoke on this CPU (no PyTorch side): every model row with the published
    parameter counts (10-class heads), both grid modes, the probe; --only reruns one row and
    keeps the others."""
    out = run("-m", "benchmarks.gpu", "--smoke", f"--workdir={tmp_path}", "--torch_python=none")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    params = {name: r["params"] for name, r in res["rows"].items()}
    assert params == {  # torchvision's ResNet-50 / MobileNetV2 with 10 instead of 1000 classes
        "resnet50_224": 25_557_032 - 2049 * 1000 + 2049 * 10,
        "mobilenet_v2_224": 3_504_872 - 1281 * 1000 + 1281 * 10,
        "resnet20_32": 269_722, "resnet56_32": 75_290,  # the smoke run's ResNet-56 row is depth 8
    }  # fmt: skip
    assert all(r["cnnlab_img_s"] > 0 and r["step_tflop"] > 0 for r in res["rows"].values())
    assert {k: v["cells"] for k, v in res["grid"].items()} == {"separate": 2, "batched": 2}
    assert res["probe"] == {"8": 2} and res["smoke"] is True
    assert "| resnet50_224 | 2 x 32² | 23,528,522 |" in (tmp_path / "results.md").read_text()
    again = run("-m", "benchmarks.gpu", "--smoke", f"--workdir={tmp_path}", "--torch_python=none",
                "--only=resnet20_32")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads((tmp_path / "results.json").read_text())
    assert set(merged["rows"]) == set(res["rows"]) and merged["grid"] == res["grid"]
    assert merged["rows"]["resnet20_32"] != res["rows"]["resnet20_32"]  # timed again


TORCH = ROOT / ".venv-torch" / "bin" / "python"


@pytest.mark.skipif(not TORCH.exists(), reason="no PyTorch env (bash benchmarks/setup_torch.sh)")
def test_torch_side_builds_the_same_architectures():
    """Parameter counts of the PyTorch twins equal cnnlab's, workload by workload."""
    from benchmarks.vs_torch import WORKLOADS

    expected = {  # cnnlab's counts (tests/test_models.py checks them against the papers)
        "resnet20": 269_722, "resnet56": 853_018, "mobilenet_v2_224": 3_504_872,
        "conv_depthwise": 3 * 3 * 64 + 64 * 10 + 10,
        "conv_spatial_separable": 3 * 64 * 64 * 2 + 64 * 10 + 10,
    }  # fmt: skip
    requests = [{"op": "build", "workload": {**WORKLOADS[k], "in_channels": 64 if
                 k.startswith("conv_") else 3}} for k in expected]  # fmt: skip
    out = subprocess.run(
        [str(TORCH), str(ROOT / "benchmarks" / "torch_worker.py")],
        input="\n".join(json.dumps(r) for r in requests) + "\n",
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    counts = [json.loads(line)["params"] for line in out.stdout.splitlines()]
    assert counts == list(expected.values()), out.stderr[-2000:]


@pytest.mark.skipif(not TORCH.exists(), reason="no PyTorch env (bash benchmarks/setup_torch.sh)")
def test_gpu_torch_side_builds_the_same_architectures():
    """benchmarks.gpu's PyTorch twins (torchvision's ResNet-50 and MobileNetV2, the CIFAR ResNet)
    have cnnlab's parameter counts at the full rows' class counts."""
    from cnnlab import models

    # benchmarks.gpu defines absl flags that other benchmarks imported here define too
    rows = run("-c", "import json; from benchmarks.gpu import ROWS; print(json.dumps(ROWS))")
    ROWS = json.loads(rows.stdout)
    expected, x = {}, jnp.zeros((1, 32, 32, 3))
    for name, w in ROWS.items():
        kwargs = {"depth": w["depth"]} if "depth" in w else {}
        model = models.create(w["model"], num_classes=w["num_classes"], **kwargs)
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), x))
        expected[name] = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
    requests = [{"op": "build", "mode": "eager", "workload": {**ROWS[k], "batch": 2, "size": 32}}
                for k in expected]  # fmt: skip
    out = subprocess.run(
        [str(TORCH), str(ROOT / "benchmarks" / "gpu_torch_worker.py")],
        input="\n".join(json.dumps(r) for r in requests) + "\n",
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    counts = [json.loads(line).get("params") for line in out.stdout.splitlines()]
    assert counts == list(expected.values()), (out.stdout[-2000:], out.stderr[-2000:])
    assert expected["resnet50_224"] == 25_557_032 and expected["mobilenet_v2_224"] == 3_504_872


def test_scan_blocks_benchmark_compares_the_same_computation():
    """Scanned blocks with the unrolled blocks' parameters stacked give the same output."""
    from benchmarks.scan_blocks import Scanned, Unrolled, main

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    vu = Unrolled(3).init(jax.random.key(1), x)
    stacked = {
        col: {"blocks": {"block": jax.tree.map(lambda *a: jnp.stack(a), *tree.values())}}
        for col, tree in vu.items()
    }
    yu = Unrolled(3).apply(vu, x, mutable=["batch_stats"])[0]
    ys = Scanned(3).apply(stacked, x, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(np.asarray(ys), np.asarray(yu), rtol=1e-5, atol=1e-5)
    report = main(["--blocks=2", "--batch=2", "--size=8", "--repeats=1"])
    assert "| 2 |" in report and "compile s scanned" in report
