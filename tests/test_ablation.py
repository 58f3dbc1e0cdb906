"""Ablation grids: expansion, cell names, report numbers, and a small real grid end to end."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab import ablation
from cnnlab.errors import ConfigError
from experiments.configs import ablate_default

ROOT = Path(__file__).resolve().parents[1]
ABLATE_DEFAULT = str(ROOT / "experiments" / "configs" / "ablate_default.py")


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


def cell(depth, skip, seed, acc, loss, taps=(), status="done"):
    """A hand-made finished cell: test accuracy `acc` (PreciseBN too), final train loss."""
    return ablation.CellResult(
        name=f"{depth}{skip}{taps}{seed}",
        overrides={"model.kwargs.depth": depth, "model.kwargs.skip": skip,
                   "loss.side_taps": taps, "seed": seed},
        status=status,
        metrics={"accuracy": acc - 0.01, "loss": 1 - acc, "precise_bn/accuracy": acc,
                 "train_subset/accuracy": acc},
        train_loss=loss, params=100, macs=1000, step_s=0.01, first_step_s=1.0,
        curves=[{"step": s, "split": sp, "accuracy": acc, "loss": loss}
                for s in (5, 10) for sp in ("train", "test")],
    )  # fmt: skip


SPEC = {
    "axes": [["model.kwargs.depth", ["8", "56"]], ["model.kwargs.skip", ["False", "True"]],
             ["loss.side_taps", ["none", "stage1"]], ["seed", ["0", "1", "2"]]],
    "claims": [
        dict(text="Plain nets degrade", rule="degrades", margin=0.1, axis="model.kwargs.depth",
             where=[["model.kwargs.skip", False], ["loss.side_taps", []]]),
        dict(text="Residual nets do not degrade", rule="does_not_degrade", margin=0.02,
             axis="model.kwargs.depth", where=[["model.kwargs.skip", True],
                                               ["loss.side_taps", []]]),
        dict(text="Side heads help plain-8", rule="helps", margin=0.02, axis="loss.side_taps",
             where=[["model.kwargs.depth", 8], ["model.kwargs.skip", False]]),
        dict(text="Side heads help plain-56", rule="helps", margin=0.02, axis="loss.side_taps",
             where=[["model.kwargs.depth", 56], ["model.kwargs.skip", False]]),
    ],
    "recipe": {"zero_init_residual": True},
}  # fmt: skip


def hand_made():
    """Plain: train loss 0.10, 0.12, 0.11 at depth 8 -> 2.20, 2.30, 2.25 at 56 (rise 2.14 ±
    0.04). Residual: test acc 0.95, 0.96, 0.94 -> 0.94, 0.95, 0.93 (-0.01 on every seed). Side
    heads on plain-8: paired +0.08, +0.05, +0.04; on plain-56: +0.05, -0.04, +0.01."""
    r = []
    for seed, (pl8, pl56, re8, re56) in enumerate(
        [(0.10, 2.20, 0.95, 0.94), (0.12, 2.30, 0.96, 0.95), (0.11, 2.25, 0.94, 0.93)]
    ):
        r += [cell(8, False, seed, 0.80 + seed / 100, pl8), cell(56, False, seed, 0.2, pl56),
              cell(8, True, seed, re8, 0.3), cell(56, True, seed, re56, 0.2)]  # fmt: skip
        r.append(
            cell(8, False, seed, 0.80 + seed / 100 + (0.08, 0.05, 0.04)[seed], 0.1, ("stage1",))
        )
        r.append(cell(56, False, seed, 0.2 + (0.05, -0.04, 0.01)[seed], 2.2, ("stage1",)))
        r += [
            cell(8, True, seed, re8, 0.3, ("stage1",)),
            cell(56, True, seed, re56, 0.2, ("stage1",)),
        ]
    return r


def test_verdict_rules_on_hand_made_results():
    results = hand_made()
    axes = ablation.axes_of(results, SPEC)
    assert [a.name for a in axes] == ["depth", "skip", "side_taps"]
    rows = ablation.aggregate(results, SPEC)
    plain56 = next(
        r for r in rows if (r["depth"], r["skip"], r["side_taps"]) == ("56", "False", "none")
    )
    assert plain56["train_loss_mean"] == pytest.approx(2.25)
    assert plain56["train_loss_std"] == pytest.approx(0.05)  # sample std of 2.20, 2.30, 2.25
    side = next(
        r for r in rows if (r["depth"], r["skip"], r["side_taps"]) == ("8", "False", "stage1")
    )
    assert side["side_gain_mean"] == pytest.approx(0.17 / 3)
    assert side["side_gain_std"] == pytest.approx(np.std([0.08, 0.05, 0.04], ddof=1))
    f = ablation.findings(results, rows, axes, SPEC)
    v = {x.claim.text: x for x in f["verdicts"]}
    # rise 2.14 ± 0.04 (std of 2.10, 2.18, 2.14): 2.14 ± 4.303 · 0.04 / √3 = [2.041, 2.239]
    d = v["Plain nets degrade"]
    assert d.verdict == "held"
    assert (d.ci.low, d.ci.high) == (
        pytest.approx(2.0406, abs=1e-3),
        pytest.approx(2.2394, abs=1e-3),
    )
    # -0.01 on every seed: a zero-width interval above -0.02
    assert v["Residual nets do not degrade"].verdict == "held"
    # +0.0567 ± 4.303 · 0.0208 / √3 = [0.005, 0.108]: above 0
    assert v["Side heads help plain-8"].verdict == "held"
    # +0.0067 ± 4.303 · 0.0451 / √3 = [-0.105, +0.119]: straddles 0 and the margin
    s56 = v["Side heads help plain-56"]
    assert s56.verdict == "inconclusive" and s56.seeds_needed > 3
    claims = f["claims"]
    assert claims[0].startswith("**Plain nets degrade**: **held**. depth 8 -> 56 at skip=False")
    assert "final train loss +2.140, 95% CI [+2.041, +2.239] over 3 paired seeds" in claims[0]
    assert f"Seeds needed: {s56.seeds_needed} (with that many, a run whose" in claims[3]
    explored = " ".join(f["exploratory"])
    assert "skip=True, side_taps=none: depth 8 -> 56: final train loss -0.100" in explored
    assert "zero_init_residual" in " ".join(f["notes"]) and "checked" in " ".join(f["notes"])


def test_a_residual_drop_beyond_the_margin_is_contradicted():
    results = [cell(8, True, s, 0.95 + d, 0.3) for s, d in enumerate((0, 0.01, -0.01))]
    results += [cell(56, True, s, 0.92 + d, 0.2) for s, d in enumerate((0, 0.01, -0.01))]
    where = (("model.kwargs.skip", True), ("loss.side_taps", ()))
    spec = {"claims": [dict(text="r", rule="does_not_degrade", margin=0.02,
                            axis="model.kwargs.depth", where=where)]}  # fmt: skip
    axes = ablation.axes_of(results)
    f = ablation.findings(results, ablation.aggregate(results), axes, spec)
    assert f["verdicts"][0].verdict == "contradicted"  # -0.03 on every seed, below -0.02
    assert "test accuracy -0.030, 95% CI [-0.030, -0.030]" in f["claims"][0]


def test_tables_list_every_axis_and_sort_numerically(tmp_path):
    from cnnlab.ablation.aggregate import write_tables

    results = [cell(d, False, 0, 0.9, 0.1) for d in (110, 8, 20)]  # 110 sorts last, not first
    axes = ablation.axes_of(results)
    rows = ablation.aggregate(results)
    assert [r["depth"] for r in rows] == ["8", "20", "110"]
    write_tables(rows, axes, tmp_path)
    md = (tmp_path / "results.md").read_text().splitlines()
    assert md[0].startswith("| depth | skip | side_taps | test acc | test acc, PreciseBN |")
    assert [line.split(" | ")[0] for line in md[2:]] == ["| 8", "| 20", "| 110"]
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    for col in ("depth", "skip", "side_taps", "seeds", "test_acc_mean", "test_acc_std",
                "train_loss_mean", "train_loss_std", "train_acc_mean",
                "test_acc_precise_bn_mean"):  # fmt: skip
        assert col in header


def test_report_on_another_axis_set(tmp_path):
    """A width x conv grid (no depth, skip or side heads) still gets tables, figures, findings."""
    results = []
    for seed in (0, 1):
        for width, conv, acc in ((8, "standard", 0.9), (8, "separable", 0.85),
                                 (16, "standard", 0.93), (16, "separable", 0.9)):  # fmt: skip
            r = cell(8, True, seed, acc + seed / 100, 0.2)
            r.overrides = {"model.kwargs.width": width, "model.kwargs.conv": conv, "seed": seed}
            r.name = f"{width}{conv}{seed}"
            results.append(r)
    for r in results:
        (tmp_path / "cells" / r.name).mkdir(parents=True)
        r.save(tmp_path / "cells" / r.name / "result.json")
    axes = [["model.kwargs.width", [8, 16]], ["model.kwargs.conv", ["standard", "separable"]]]
    (tmp_path / "grid.json").write_text(json.dumps({"axes": axes}))  # as run_grid writes it
    out = ablation.write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "conv standard -> separable" in text and "width 8 -> 16" in text
    assert {"curves.png", "accuracy_vs_width.png"} <= set(out["plots"])
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_grid_in_process_and_through_the_entry_point_into_one_workdir(tmp_path, capsys):
    """One grid of four cells, as two shards into one workdir: shard 0 (lr 0.05) in this process,
    as a notebook would run it (typed results, files, diagnostics); shard 1 (lr 1e30: both cells
    fail) through `python -m experiments.ablate`, whose report merges all four cells; re-running
    shard 0 skips its finished cells and returns the same results."""
    from experiments import cli

    grid = (
        "(('model.kwargs.depth',(8,)),('model.kwargs.skip',(False,True)),('optim.lr',(0.05,1e30)))"
    )
    flags = ["--config.train.steps=4", "--config.train.eval_every=2", "--config.train.log_every=1",
             "--config.grad_norm_steps=(0,2)", f"--config.grid={grid}", "--config.claims=()",
             "--config.optim.schedule=constant", "--config.train.train_subset=64",
             "--config.data.batch_size=32"]  # fmt: skip
    config = cli.config_from_args(f"--config={ABLATE_DEFAULT}", *flags)
    workdir = tmp_path / "w"
    results = ablation.run_grid(config, workdir, shard="0/2", progress=False)
    assert [r.name for r in results] == ["depth=8,skip=False,lr=0.05", "depth=8,skip=True,lr=0.05"]
    for r in results:
        assert isinstance(r, ablation.CellResult) and r.done
        # final train loss = mean of the final head's loss over the last 10% of steps (step 4)
        logged = {m["step"]: m["loss"] for m in r.curves if m["split"] == "train"}
        assert sorted(logged) == [1, 2, 3, 4] and r.train_loss == pytest.approx(logged[4], rel=1e-6)
        for k in ("accuracy", "train_subset/accuracy", "precise_bn/accuracy",
                  "precise_bn/train_subset/accuracy"):  # fmt: skip
            assert 0 <= r.metrics[k] <= 1
        assert r.params > 0 and r.macs > 0
        assert sorted(r.grad_norms, key=int) == ["0", "2"]
        assert len(r.grad_norms["0"]) == 8  # 7 convs + the classifier of a ResNet-8
        assert set(r.sparsity) >= {"stem", "stage1_block1", "stage3_block1"}
        assert r.step_s > 0 and r.first_step_s > r.step_s
        t = r.timing  # the wall time split: every part measured, the rest is 'other'
        assert t["compile_s"] > 0 and t["compute_s"] > 0 and t["data_s"] > 0 and t["eval_s"] > 0
        measured = sum(t[k] for k in t if k not in ("wall_s", "other_s"))
        assert measured <= t["wall_s"] + 0.01  # the parts, timed separately, fit in the wall
        assert ablation.CellResult.load(workdir / "cells" / r.name / "result.json") == r
    # the entry point, with the session's data dir and caches (conftest)
    out = subprocess.run(
        [sys.executable, "-m", "experiments.ablate", f"--workdir={workdir}", *flags, "--shard=1/2"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    saved = {p.parent.name: json.loads(p.read_text())
             for p in (workdir / "cells").glob("*/result.json")}  # fmt: skip
    assert len(saved) == 4  # both shards' cells, merged in one workdir
    failed = [r for r in saved.values() if r["status"] == "failed"]
    assert {r["overrides"]["optim.lr"] for r in failed} == {1e30}  # recorded, the grid went on
    assert all("non-finite loss" in r["reason"] for r in failed)
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert len(rows) == 4 and {r["failed"] for r in rows} == {"0", "1"}
    report = (workdir / "report.md").read_text()
    assert "## Notes" in report and "cell(s) failed" in report
    # provenance: the cells' commit, packages and machine; one process and one machine here
    assert "Provenance: commit " in report and "Mixed provenance" not in report
    assert "| skip gain |" in report  # residual minus plain twin, per configuration
    recipe = next(line for line in report.splitlines() if line.startswith("Recipe"))
    assert "sgd lr per cell (a grid axis)," in recipe and "peak lr" not in recipe  # lr: an axis
    assert re.search(r"- Time: 2 cells took \d+ s: compile \d+ s \(\d+%\), data", report)
    # grad_norms.png: at lr=0.05, the largest lr whose cells finished
    for png in ("curves.png", "accuracy_vs_lr.png", "grad_norms.png"):
        assert (workdir / png).stat().st_size > 1000
    capsys.readouterr()
    again = ablation.run_grid(config, workdir, shard="0/2")  # finished: skipped, not retrained
    assert capsys.readouterr().out.count("skip (finished)") == 2
    assert again == results


def test_paper_config_is_valid_and_warms_up_only_resnet110():
    from cnnlab import train
    from cnnlab.ablation.grid import cell_config
    from experiments.configs import resnet_cifar10_paper

    c = resnet_cifar10_paper.get_config()
    cells = ablation.check_grid(c)  # every cell's config validates (no data needed)
    assert len(cells) == 10
    for overrides in cells:
        cfg = cell_config(c, overrides)
        assert (cfg.data.batch_size, cfg.train.steps, cfg.optim.lr) == (128, 64_000, 0.1)
        optim = train.OptimSpec.of(cfg.optim)
        _, lr = train.make_optimizer(optim, cfg.train.steps, optim.peak_lr(128))
        first = 0.01 if overrides["model.kwargs.depth"] == 110 else 0.1
        got = [float(lr(s)) for s in (0, 399, 400, 32_000, 48_000)]
        assert got == pytest.approx([first, first, 0.1, 0.01, 0.001])
    # the default grid: one budget at every depth, the cells its claims read
    d = ablate_default.get_config()
    cells = ablation.check_grid(d)
    assert len(cells) == 22  # residual nets 5 seeds, plain nets and side heads 3
    # each claim compares what its text says (a grid of products orders values as first seen)
    from cnnlab.ablation.run import claims_of

    ends = [(c.axis.rsplit(".", 1)[-1], c.a, c.b) for c in claims_of(d)]
    assert ends == [("depth", "8", "56"), ("depth", "8", "56"), ("skip", "False", "True"),
                    ("side_taps", "none", "stage1+stage2")]  # fmt: skip
    assert {cell_config(d, o).train.steps for o in cells} == {150}


def test_fashion_mnist_study_config_is_valid():
    from cnnlab.ablation.grid import cell_config
    from experiments.configs import ablate_fashion_mnist

    c = ablate_fashion_mnist.get_config()
    cells = ablation.check_grid(c)
    assert len(cells) == 36
    cfgs = [cell_config(c, o) for o in cells]
    assert {(x.data.name, x.data.image_size, x.train.steps, x.train.eval_every) for x in cfgs} == {
        ("fashion_mnist", 14, 400, 400)
    }


def test_aux_loss_study_config_is_valid_and_its_claims_pair_the_right_cells():
    from cnnlab.ablation.grid import cell_config
    from cnnlab.ablation.run import claims_of
    from experiments.configs import ablate_aux_loss

    c = ablate_aux_loss.get_config()
    cells = ablation.check_grid(c)
    assert len(cells) == 54  # 3 (norm, lr) settings x (no heads, heads) x 3 kinds x 3 seeds
    cfgs = [cell_config(c, o) for o in cells]
    assert {(x.model.kwargs.depth, x.model.kwargs.skip, x.train.steps) for x in cfgs} == {
        (20, False, 300)
    }
    claims = claims_of(c)
    assert len(claims) == 9
    for claim in claims:  # each compares no heads with heads, one kind at one setting
        where = dict(claim.where)
        assert (claim.a, claim.b) == ("none", "stage1+stage2")
        word = {"ce": "cross-entropy", "hinge": "squared-hinge", "distill": "self-distilling"}
        assert claim.text.startswith(word[where["loss.side_loss"]])
        assert ("no norm" in claim.text) == (where["model.kwargs.norm"] == "none")


def test_sigterm_stops_a_grid_in_its_cell_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """SIGTERM during the first step of a grid's second cell: that cell saves its step, the grid
    stops with Preempted naming the cell (the first cell's result kept), and running the grid
    again skips the finished cell and resumes the other from its checkpoint. Then a garbled
    result.json: moved aside with a warning, the cell collected again from its run."""
    import signal

    from cnnlab.ablation import run as grid_run
    from cnnlab.train.preempt import Preempted
    from experiments import cli

    flags = ["--config.train.steps=4", "--config.train.eval_every=2", "--config.train.log_every=1",
             "--config.grid=(('model.kwargs.depth',(8,)),('model.kwargs.skip',(False,True)))",
             "--config.claims=()", "--config.grad_norm_steps=(0,)",
             "--config.train.train_subset=0", "--config.data.batch_size=32"]  # fmt: skip
    config = cli.config_from_args(f"--config={ABLATE_DEFAULT}", *flags)
    real_call = grid_run.Diagnostics.__call__

    def signalled(self, step, state, metrics):
        if step == 0 and "skip=True" in str(self.path):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, step, state, metrics)

    monkeypatch.setattr(grid_run.Diagnostics, "__call__", signalled)
    with pytest.raises(Preempted) as caught:
        ablation.run_grid(config, tmp_path / "w", progress=False)
    message = str(caught.value)
    assert message.startswith("grid stopped in cell depth=8,skip=True (1 of 2 cells finished")
    assert "stopped by SIGTERM after step 1 of 4: checkpoint 1 saved in" in message
    cells = tmp_path / "w" / "cells"
    assert (cells / "depth=8,skip=False" / "result.json").exists()
    assert not (cells / "depth=8,skip=True" / "result.json").exists()
    assert (cells / "depth=8,skip=True" / "run" / "checkpoints" / "1").is_dir()
    monkeypatch.undo()
    results = ablation.run_grid(config, tmp_path / "w", progress=False)
    assert [r.done for r in results] == [True, True]
    logged = [
        json.loads(x)["step"]
        for x in (cells / "depth=8,skip=True" / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sorted(set(logged)) == [1, 2, 3, 4] and len(logged) == len(set(logged)) + 2  # 2 evals
    # a garbled result.json (a hand edit, a disk error) is kept aside and its cell runs again:
    # from its checkpoints, so nothing retrains
    done = cells / "depth=8,skip=True" / "result.json"
    before = json.loads(done.read_text())
    done.write_text(done.read_text()[:100])
    again = ablation.run_grid(config, tmp_path / "w", progress=False)
    assert "result.json is garbled (JSONDecodeError" in capsys.readouterr().err
    assert (cells / "depth=8,skip=True" / "result.json.garbled").read_text() == json.dumps(
        before, indent=1
    )[:100]
    assert [r.done for r in again] == [True, True]
    assert again[1].metrics == before["metrics"] and again[1].params == before["params"]
    # a workdir belongs to one grid: a changed recipe, or a changed cell config, is one line
    # naming the first difference; --accept_changes runs the grid into it anyway
    longer = cli.config_from_args(f"--config={ABLATE_DEFAULT}", *flags, "--config.train.steps=6")
    with pytest.raises(ConfigError) as caught:
        ablation.run_grid(longer, tmp_path / "w", progress=False)
    assert str(caught.value) == (
        f"{tmp_path / 'w'} holds results of another grid: grid.json recipe.steps is 4 there and 6 "
        f"in this config; use another --workdir for this grid, or pass --accept_changes to run it "
        f"into this one (finished cells are kept as they are)"
    )
    wider = cli.config_from_args(f"--config={ABLATE_DEFAULT}", *flags,
                                 "--config.model.kwargs.width=8")  # fmt: skip
    with pytest.raises(ConfigError, match=r"cell depth=8,skip=False: config model\.kwargs\.width "
                       r"is '<absent>' there and 8 in this config"):  # fmt: skip
        ablation.run_grid(wider, tmp_path / "w", progress=False)
    kept = ablation.run_grid(wider, tmp_path / "w", progress=False, accept_changes=True)
    assert [r.metrics for r in kept] == [r.metrics for r in again]  # finished: kept as they are
    # a started, unfinished cell of another recipe restarts under accept_changes (its folder
    # kept in replaced/), never resumes its checkpoints on the mixed recipe
    cell = cells / "depth=8,skip=True"
    (cell / "result.json").unlink()
    old_log = (cell / "run" / "metrics.jsonl").read_text()
    restarted = ablation.run_grid(wider, tmp_path / "w", progress=False, accept_changes=True)
    err = capsys.readouterr().err
    assert "cell depth=8,skip=True had started on another recipe (model.kwargs.width: " in err
    assert "it restarts" in err
    (aside,) = (tmp_path / "w" / "replaced").iterdir()
    assert (aside / "depth=8,skip=True" / "run" / "metrics.jsonl").read_text() == old_log
    log = (cell / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in log]
    assert steps[0] == 1 and sorted(set(steps)) == [1, 2, 3, 4]  # trained from the start
    assert json.loads((cell / "run" / "config.json").read_text())["model"]["kwargs"]["width"] == 8
    assert [r.done for r in restarted] == [True, True]


def test_cells_that_would_train_identically_are_found_before_training():
    """Settings the code does not read for a cell (side_loss without side heads, momentum under
    AdamW, zero_init_residual on a plain twin, lr spelled two ways) make duplicates; settings
    it reads do not."""
    from cnnlab.ablation import duplicates

    c = ablate_default.get_config()
    c.claims = ()
    c.grid = (
        (("model.kwargs.skip", (False, True)), ("model.kwargs.zero_init_residual", (False, True)),
         ("loss.side_taps", ((),)), ("loss.side_loss", ("ce", "hinge")), ("seed", (0,))),
        (("model.kwargs.skip", (False,)), ("model.kwargs.zero_init_residual", (False,)),
         ("loss.side_taps", (("stage1",),)), ("loss.side_loss", ("ce", "hinge")), ("seed", (0,))),
    )  # fmt: skip
    cells = ablation.check_grid(c)
    same = duplicates.find(c, cells)
    n = lambda skip, zero, loss: (
        f"skip={skip},zero_init_residual={zero},side_taps=none,side_loss={loss},seed=0"
    )
    assert same == {  # with side heads the kind matters; with the skip, zero-init matters
        n(False, False, "hinge"): n(False, False, "ce"),
        n(False, True, "ce"): n(False, False, "ce"),
        n(False, True, "hinge"): n(False, False, "ce"),
        n(True, False, "hinge"): n(True, False, "ce"),
        n(True, True, "hinge"): n(True, True, "ce"),
    }
    lines = duplicates.explain(cells, same)
    assert any(x.startswith("loss.side_loss change nothing for 3 cell(s)") for x in lines)
    assert any(x.startswith("model.kwargs.zero_init_residual change nothing for 1") for x in lines)
    from cnnlab import train

    spec = lambda *o: train.RunSpec.of(ablation.apply(ablate_default.get_config(), dict(o)))
    sgd, adamw = spec(("optim.momentum", 0.5)), spec(("optim.optimizer", "adamw"))
    other_adamw = spec(("optim.optimizer", "adamw"), ("optim.momentum", 0.5))
    assert duplicates.effective(sgd) != duplicates.effective(spec())  # SGD reads momentum
    assert duplicates.effective(adamw) == duplicates.effective(other_adamw)  # AdamW does not
    # lr 0.1 at lr_batch 0 is the same peak lr as lr 0.05 at batch 64 with lr_batch 32
    a = spec(("optim.lr", 0.1), ("optim.lr_batch", 0))
    b = spec(("optim.lr", 0.05), ("optim.lr_batch", 32))
    assert duplicates.effective(a) == duplicates.effective(b)


def test_a_duplicate_cell_reuses_its_twin_and_the_report_says_so(tmp_path, capsys):
    from experiments import cli

    flags = ["--config.train.steps=4", "--config.train.eval_every=2", "--config.train.log_every=1",
             "--config.grid=(('model.kwargs.depth',(8,)),('model.kwargs.skip',(False,)),"
             "('model.kwargs.zero_init_residual',(False,True)))",
             "--config.claims=()", "--config.grad_norm_steps=(0,)",
             "--config.train.train_subset=0", "--config.data.batch_size=32"]  # fmt: skip
    config = cli.config_from_args(f"--config={ABLATE_DEFAULT}", *flags)
    first, second = ablation.run_grid(config, tmp_path / "w", progress=False)
    assert "model.kwargs.zero_init_residual change nothing for 1 cell(s)" in capsys.readouterr().err
    assert (first.same_as, second.same_as) == (None, first.name)
    assert second.metrics == first.metrics and second.timing == {}
    assert not (tmp_path / "w" / "cells" / second.name / "run").exists()  # never trained
    report = ablation.write_report(tmp_path / "w")
    text = (tmp_path / "w" / "report.md").read_text()
    assert "1 cell(s) would have trained exactly as another cell" in text
    assert f"{second.name} = {first.name}" in text and report["rows"]


def test_a_value_keeps_one_colour_in_every_panel(monkeypatch, tmp_path):
    """The default grid's shape: panels hold different subsets of the line axis's values (plain
    nets with side heads only at depth 20). Each value is drawn in one colour in every panel of
    curves.png, different values in different colours, and every panel names its lines."""
    from matplotlib.colors import to_hex

    from cnnlab.ablation import plots

    results = [cell(d, skip, s, 0.9, 0.2, taps) for s in (0, 1)
               for d, skip, taps in ((8, True, ()), (56, True, ()), (20, False, ("stage1",)),
                                     (8, False, ()), (20, False, ()), (56, False, ()))]  # fmt: skip
    axes = ablation.axes_of(results)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, made: figures.append((path.name, fig)))
    plots.curves(results, axes, tmp_path, [])
    ((name, fig),) = figures
    assert name == "curves.png"
    seen: dict[str, set] = {}
    for ax in fig.axes:
        labelled = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        for ln in labelled:
            seen.setdefault(ln.get_label(), set()).add(to_hex(ln.get_color()))
        if labelled and ax.get_title():  # a top panel: its lines are named in its legend
            assert ax.get_legend() is not None
            assert {t.get_text() for t in ax.get_legend().get_texts()} == {
                ln.get_label() for ln in labelled
            }
    assert set(seen) == {"depth=8", "depth=20", "depth=56"}
    assert all(len(c) == 1 for c in seen.values()), seen  # one colour per value
    assert len({next(iter(c)) for c in seen.values()}) == 3  # and different values differ
