"""The README's main command and the benchmarks run end to end (tiny shapes, no timing checks)."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


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
