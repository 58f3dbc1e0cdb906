"""Ablation grids: expansion, cell names, report numbers, and a small real grid end to end."""

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab import ablation
from experiments.configs import ablate_default

ROOT = Path(__file__).resolve().parents[1]


def test_expand_and_names():
    cells = ablation.expand(
        (("model.kwargs.depth", (8, 20)), ("loss.side_taps", ((), ("stage1",))))
    )
    assert cells == [
        {"model.kwargs.depth": 8, "loss.side_taps": ()},
        {"model.kwargs.depth": 8, "loss.side_taps": ("stage1",)},
        {"model.kwargs.depth": 20, "loss.side_taps": ()},
        {"model.kwargs.depth": 20, "loss.side_taps": ("stage1",)},
    ]
    assert ablation.cell_name(cells[1]) == "depth=8,side_taps=stage1"
    assert ablation.shard(list(range(7)), "1/3") == [1, 4]
    with pytest.raises(ValueError, match="--shard must be i/N"):
        ablation.shard([1], "3/3")


def test_apply_sets_dotted_keys_and_rejects_unknown():
    c = ablate_default.get_config()
    c.lock()  # as config_flags hands it over
    d = ablation.apply(c, {"model.kwargs.depth": 56, "loss.side_taps": ("stage1",), "seed": 3})
    assert (d.model.kwargs.depth, tuple(d.loss.side_taps), d.seed) == (56, ("stage1",), 3)
    assert c.model.kwargs.depth == 20  # the base is untouched
    with pytest.raises(ValueError, match=r"grid key 'model\.kwarg\.depth'"):
        ablation.apply(c, {"model.kwarg.depth": 1})
    # model fields not in the base config's kwargs are allowed; validate checks them
    e = ablation.apply(c, {"model.kwargs.conv": "separable"})
    assert e.model.kwargs.conv == "separable"
    from cnnlab import train

    train.validate(e)
    with pytest.raises(train.ConfigError, match=r"kwargs has \['dept'\]"):
        train.validate(ablation.apply(c, {"model.kwargs.dept": 1}))


def fake(depth, skip, seed, acc, taps=(), status="done"):
    curve = [{"step": s, "split": "train", "loss": 2.0 - acc * s / 10} for s in (5, 10)]
    return {
        "name": f"{depth}{skip}{seed}", "status": status,
        "overrides": {"model.kwargs.depth": depth, "model.kwargs.skip": skip,
                      "loss.side_taps": taps, "seed": seed},
        "metrics": {"accuracy": acc, "loss": 1 - acc}, "params": 100, "macs": 1000,
        "step_s": 0.01, "first_step_s": 1.0, "curves": curve,
    }  # fmt: skip


def test_aggregate_and_degradation_finding():
    results = [
        fake(8, False, 0, 0.90), fake(8, False, 1, 0.92), fake(56, False, 0, 0.60),
        fake(56, False, 1, 0.64), fake(8, True, 0, 0.91), fake(8, True, 1, 0.93),
        fake(56, True, 0, 0.94), fake(56, True, 1, 0.96),
    ]  # fmt: skip
    rows = ablation.aggregate(results)
    plain56 = next(r for r in rows if r["depth"] == "56" and r["skip"] == "False")
    assert plain56["test_acc_mean"] == pytest.approx(0.62)
    assert plain56["test_acc_std"] == pytest.approx(math.sqrt(0.0008))  # sample std of .60, .64
    text = " ".join(ablation.findings(rows, results))
    assert "Plain nets: depth 8 -> test accuracy 0.9100" in text
    assert "depth 56 -> 0.6200" in text and "accuracy change -0.2900; worse" in text
    assert "the deepest plain net trains worse" in text and "the effect is reproduced" in text


def test_small_grid_end_to_end_resume_failure_and_shards(tmp_path):
    env = {**os.environ, "CNNLAB_DATA_DIR": str(tmp_path / "data"), "JAX_PLATFORMS": "cpu"}
    grid = (
        "(('model.kwargs.depth',(8,)),('model.kwargs.skip',(True,False)),('optim.lr',(0.05,1e30)))"
    )
    args = [sys.executable, "-m", "experiments.ablate", f"--workdir={tmp_path / 'w'}",
            "--config.train.steps=4", "--config.train.eval_every=2", "--config.train.log_every=1",
            "--config.grad_norm_steps=(0,)", f"--config.grid={grid}",
            "--config.optim.schedule=constant"]  # fmt: skip
    shards = [subprocess.run([*args, f"--shard={i}/2"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900) for i in range(2)]  # fmt: skip
    for out in shards:
        assert out.returncode == 0, out.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text())
               for p in (tmp_path / "w" / "cells").glob("*/result.json")}  # fmt: skip
    assert len(results) == 4  # both shards' cells, merged in one workdir
    failed = [r for r in results.values() if r["status"] == "failed"]
    assert {r["overrides"]["optim.lr"] for r in failed} == {1e30}  # recorded, the grid went on
    assert all("non-finite loss" in r["reason"] for r in failed)
    good = [r for r in results.values() if r["status"] == "done"]
    assert len(good) == 2
    for r in good:
        assert 0 <= r["metrics"]["accuracy"] <= 1 and r["params"] > 0 and r["macs"] > 0
        assert len(r["grad_norms"]["0"]) == 8  # 7 convs + the classifier of a ResNet-8
        assert set(r["sparsity"]) >= {"stem", "stage1_block1", "stage3_block1"}
        assert r["step_s"] > 0 and r["first_step_s"] > r["step_s"]
        t = r["timing"]  # the wall time split: every part measured, the rest is 'other'
        assert t["compile_s"] > 0 and t["compute_s"] > 0 and t["data_s"] > 0 and t["eval_s"] > 0
        parts = sum(t[k] for k in t if k != "wall_s")
        assert parts == pytest.approx(t["wall_s"], abs=0.01) and t["other_s"] >= 0
    rows = list(csv.DictReader((tmp_path / "w" / "results.csv").open()))
    assert len(rows) == 4 and {r["failed"] for r in rows} == {"0", "1"}
    report = (tmp_path / "w" / "report.md").read_text()
    assert "## Findings" in report and "cell(s) failed" in report
    assert re.search(r"- Time: 2 cells took \d+ s: compile \d+ s \(\d+%\), data", report)
    for png in ("accuracy_vs_depth.png", "loss_curves.png", "grad_norms.png"):
        assert (tmp_path / "w" / png).stat().st_size > 1000
    # re-running skips finished cells (failed ones are retried)
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert again.stdout.count("skip (finished)") == 2


def test_side_head_columns_exclude_the_side_taps_axis():
    from cnnlab.ablation.report import _side_acc_keys

    row = {"side_taps": "stage1+stage2", "side_stage2_acc": 0.7, "side_stage1_acc": 0.5}
    assert _side_acc_keys(row) == ["side_stage1_acc", "side_stage2_acc"]
    assert _side_acc_keys({"side_taps": "none", "test_acc_mean": 0.9}) == []
