"""The report's statistics: t intervals, the three verdicts at and around their boundaries,
seeds needed, Holm, exploratory comparisons, claim checking, the two-stage seeds, compare."""

import json
import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cnnlab import ablation
from cnnlab.ablation import run as grid_run
from cnnlab.ablation.aggregate import TIMING
from cnnlab.ablation.claims import RULES, Claim, judge
from cnnlab.errors import ConfigError
from cnnlab.stats import (
    POWER,
    Interval,
    decide_probability,
    holm,
    holm_levels,
    interval,
    p_value,
    paired,
    seeds_needed,
    t_quantile,
)
from experiments import compare
from experiments.configs import ablate_default


def test_t_quantiles_match_the_published_table():
    # Student's t, two-sided 95%, df = n - 1 (any statistics textbook's table)
    for n, t in ((2, 12.706), (3, 4.303), (4, 3.182), (5, 2.776), (10, 2.262), (31, 2.042)):
        assert t_quantile(0.95, n) == pytest.approx(t, abs=5e-4)


def test_paired_interval_equals_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        a, b = rng.normal(0.9, 0.05, n), rng.normal(0.92, 0.05, n)
        ci = interval(paired(dict(enumerate(a)), dict(enumerate(b))), 0.95)
        ref = scipy_stats.ttest_rel(b, a)
        lo, hi = ref.confidence_interval(0.95)
        assert (ci.low, ci.high, ci.n) == (pytest.approx(lo), pytest.approx(hi), n)
        assert p_value(paired(dict(enumerate(a)), dict(enumerate(b)))) == pytest.approx(ref.pvalue)
    assert interval(paired({0: 0.5}, {0: 0.6})).low == -math.inf  # one seed: no interval


def ci(lo, hi, n=3):
    return Interval((lo + hi) / 2, lo, hi, n, 0.01, 0.95)


@pytest.mark.parametrize(
    ("rule", "lo", "hi", "want"),
    [
        # helps, margin 0.02: held iff lo > 0 and hi >= 0.02; negligible iff lo > 0 and
        # hi < 0.02; contradicted iff lo <= 0 and hi < 0.02; else inconclusive
        ("helps", 0.001, 0.05, "held"),
        ("helps", 0.001, 0.02, "held"),  # reaches the margin
        ("helps", 0.0, 0.05, "inconclusive"),  # lo = 0 is not above 0
        ("helps", 0.001, 0.019, "negligible"),  # an effect, but below the margin
        ("helps", 0.0, 0.019, "contradicted"),
        ("helps", -0.01, 0.019, "contradicted"),
        ("helps", -0.01, 0.02, "inconclusive"),  # hi = margin is not wholly below it
        ("helps", -0.2, -0.1, "contradicted"),  # it hurts
        # the example: the same mean gain with a narrow and a wide interval
        ("helps", 0.0025, 0.0075, "negligible"),
        ("helps", -0.0049, 0.0149, "contradicted"),
        # degrades: the same test on the rise in train loss
        ("degrades", 0.5, 2.0, "held"),
        ("degrades", 0.001, 0.019, "negligible"),
        ("degrades", -0.05, 0.019, "contradicted"),
        # does not degrade, margin 0.02: held iff lo > -0.02; contradicted iff hi < -0.02
        ("does_not_degrade", -0.019, 0.01, "held"),
        ("does_not_degrade", -0.02, 0.01, "inconclusive"),
        ("does_not_degrade", -0.1, -0.021, "contradicted"),
        ("does_not_degrade", -0.1, -0.02, "inconclusive"),
    ],
)
def test_each_rule_at_and_around_its_boundaries(rule, lo, hi, want):
    assert RULES[rule].verdict(ci(lo, hi), 0.02) == want


def test_hurts_is_helps_on_the_reversed_difference(tmp_path):
    claim = dict(text="x hurts", rule="hurts", margin=0.02, axis="k", where=())
    c = Claim.of(claim, 0, [("k", ["a", "b"])])
    results = [_cell({"k": k, "seed": s}, acc) for s in range(3)
               for k, acc in (("a", 0.9 + s / 100), ("b", 0.8 + s / 50))]  # fmt: skip
    axes = ablation.axes_of(results)
    v = ablation.findings(results, ablation.aggregate(results), axes,
                          {"claims": [claim]})["verdicts"][0]  # fmt: skip
    assert v.verdict == "held" and v.ci.estimate == pytest.approx(0.09)  # a - b
    assert c.rule.sign == -1


def test_nested_intervals_never_get_opposite_verdicts():
    """For every rule and many random pairs of nested intervals, around 0 and the margin: an
    interval inside one that is held is never contradicted, and the other way round; inside a
    decided one it is decided (never inconclusive); inside a negligible one, negligible."""
    rng = random.Random(1)
    for _ in range(20000):
        rule = RULES[rng.choice(sorted(RULES))]
        m = rng.choice((0.01, 0.02, 0.5))
        pts = sorted(rng.uniform(-3 * m, 3 * m) for _ in range(4))
        if rng.random() < 0.2:  # on the boundaries themselves
            pts = sorted(rng.choice((-m, 0.0, m, pts[0], pts[3])) for _ in range(4))
        outer = rule.region(pts[0], pts[3], m)
        inner = rule.region(pts[1], pts[2], m)
        assert {outer, inner} != {"held", "contradicted"}, (rule.name, pts, m)
        if outer != "inconclusive":
            assert inner != "inconclusive", (rule.name, pts, m)
        if outer == "negligible":
            assert inner == "negligible"


def test_a_noisier_copy_never_becomes_more_decided_and_more_seeds_never_less():
    rng = random.Random(0)
    rank = {"inconclusive": 0, "held": 1, "negligible": 1, "contradicted": 1}
    for _ in range(3000):
        rule = RULES[rng.choice(sorted(RULES))]
        mean, std, n, m = rng.uniform(-0.1, 0.1), rng.uniform(0, 0.05), rng.randint(2, 9), 0.02

        def verdict(s, k, rule=rule, mean=mean, m=m):
            return rule.verdict(interval(_p(mean, s, k)), m)

        base, noisy = verdict(std, n), verdict(std * rng.uniform(1, 4), n)
        assert not (base == "inconclusive" and noisy != "inconclusive")
        assert not (base == "contradicted" and noisy == "held")
        more = verdict(std, n + rng.randint(1, 10))
        assert rank[more] >= rank[base]  # decided stays decided with more seeds


def _p(mean, std, n):
    from cnnlab.stats import Paired

    return Paired(mean, std, n)


def test_decide_probability_against_a_hand_computation():
    """With a huge n the interval is a point: decided unless the effect sits in the undecided
    band; with std 0 exactly decided. One value by hand: n = 2, 95%: t = 12.706, so the band
    [m - w, w] (u = 0, v = m) is wide; the effect 0 at std 0.01 with m = 1 is decided only when
    the interval's top falls below 1: P(mean + 12.706 s / sqrt(2) < 1) ~ 1."""
    assert decide_probability(0.0, 0.01, 2, 0.0, 1.0, 0.95) == pytest.approx(1.0, abs=1e-6)
    assert decide_probability(0.01, 0.0, 3, 0.0, 0.02, 0.95) == 1.0
    assert decide_probability(0.01, 0.05, 900, 0.0, 0.02, 0.95) > 0.99  # w = 0.0033 < 0.01
    # non-inferiority with the effect on -m: undecided while |mean + m| <= w, ~95% of runs
    assert decide_probability(-0.02, 0.05, 900, -0.02, -0.02, 0.95) < 0.1


def simulated_decided(rule, effect, std, n, m, trials=4000, seed=0):
    """The fraction of `trials` runs of n Normal(effect, std) differences whose claim is
    decided: the report's own interval and verdict, independent of decide_probability."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, std, (trials, n))
    mean, sd = d.mean(1), d.std(1, ddof=1)
    w = scipy_stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    verdicts = [rule.region(lo, hi, m) for lo, hi in zip(mean - w, mean + w, strict=True)]
    return np.mean([v != "inconclusive" for v in verdicts])


@pytest.mark.parametrize(
    ("rule", "effect", "std", "n0"),
    [("helps", 0.01, 0.05, 3), ("helps", 0.035, 0.03, 3), ("helps", -0.01, 0.04, 5),
     ("degrades", 0.03, 0.02, 3), ("does_not_degrade", 0.0, 0.05, 3),
     ("does_not_degrade", -0.04, 0.03, 4)],
)  # fmt: skip
def test_seeds_needed_decides_the_claim_at_least_as_often_as_it_says(rule, effect, std, n0):
    """'Seeds needed' means: with that many seeds a run whose true effect and spread are the
    observed ones is decided with probability >= POWER (80%). A simulation of the report's
    own rule checks it, and one seed fewer falls short (the n is the fewest)."""
    c = Claim.of(dict(text="t", rule=rule, margin=0.02, axis="k", where=()), 0,
                 [("k", ["a", "b"])])  # fmt: skip
    v = judge(c, interval(_p(effect, std, n0)))
    n = v.seeds_needed
    assert v.verdict == "inconclusive" and n is not None and n > n0
    assert simulated_decided(c.rule, effect, std, n, 0.02) >= POWER - 0.02  # 4000 trials: se 0.006
    if n - 1 > n0:
        assert simulated_decided(c.rule, effect, std, n - 1, 0.02, seed=1) < POWER + 0.02


def test_seeds_needed_edges():
    assert seeds_needed(-0.02, 0.05, -0.02, -0.02, 0.95) is None  # non-inferiority, on -m
    assert seeds_needed(1e-4, 1.0, 0.0, 0.02, 0.95) is None  # beyond MAX_SEEDS
    assert seeds_needed(0.01, 0.0, 0.0, 0.02, 0.95) == 2  # no spread: decided at once


def test_holm_against_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _cell(overrides, acc, loss=0.5, wall=10.0):
    name = ablation.cell_name(overrides)
    return ablation.CellResult(
        name=name, overrides=overrides, status="done",
        metrics={"accuracy": acc, "precise_bn/accuracy": acc}, train_loss=loss,
        params=1, macs=1, timing={f"{k}_s": wall if k == "wall" else 0.0 for k in TIMING},
    )  # fmt: skip


def test_exploratory_comparisons_are_adjusted_and_exclude_claims():
    results = []
    for s in range(4):
        for d in (8, 56):
            for skip in (False, True):
                acc = 0.9 if skip else (0.9 if d == 8 else 0.1 + s / 100)
                results.append(_cell({"depth": d, "skip": skip, "seed": s}, acc + s / 1000))
    spec = {"claims": [dict(text="skip helps at 56", rule="helps", margin=0.02, axis="skip",
                            where=(("depth", 56),))]}  # fmt: skip
    axes = ablation.axes_of(results)
    f = ablation.findings(results, ablation.aggregate(results), axes, spec)
    assert f["verdicts"][0].verdict == "held"
    names = [e["comparison"] for e in f["exploratory_records"]]
    assert "depth=56: skip False -> True" not in names  # the claim's own comparison
    assert "depth=8: skip False -> True" in names
    k = len(names)
    assert k == 5  # 2 depths x (accuracy, loss) + skip at depth 8
    # Holm: the r-th smallest p-value is tested at 0.05 / (k - r + 1), its interval at that
    # level; after the first comparison Holm does not reject, the rest keep that step's level
    for e in f["exploratory_records"]:
        assert e["differs"] == (e["ci_low"] > 0 or e["ci_high"] < 0)


def test_holm_step_down_levels_agree_with_its_rejections():
    """The step-down case: the smallest p-value (0.009 of 6) is not rejected (6 x 0.009 >= 0.05),
    so Holm rejects nothing; the second (0.0095) is below its own rank's 0.05 / 5 = 0.01, so an
    interval at its rank's level would exclude 0 for a difference Holm does not find. Every
    interval takes the stopping step's level instead."""
    ps = [0.5, 0.0095, 0.6, 0.009, 0.7, 0.8]
    levels = holm_levels(ps)
    assert levels == pytest.approx([1 - 0.05 / 6] * 6)
    assert 0.0095 < 0.05 / 5  # what the rank's own level would have shown
    for p, level, adj in zip(ps, levels, holm(ps), strict=True):
        assert (p < 1 - level) == (adj < 0.05)
    # rejections first, then the stop: 0.001 (x4 = 0.004), 0.01 (x3 = 0.03) rejected; 0.03 not
    ps = [0.03, 0.001, 0.5, 0.01]
    assert holm_levels(ps) == pytest.approx([1 - 0.05 / 2, 1 - 0.05 / 4, 1 - 0.05 / 2,
                                             1 - 0.05 / 3])  # fmt: skip
    for p, level, adj in zip(ps, holm_levels(ps), holm(ps), strict=True):
        assert (p < 1 - level) == (adj < 0.05)


def grid_config(max_seeds=8, budget_s=0.0):
    c = ablate_default.get_config()
    c.grid = (("model.kwargs.depth", (8,)), ("model.kwargs.skip", (False, True)),
              ("loss.side_taps", ((), ("stage1",))), ("seed", (0, 1, 2)))  # fmt: skip
    c.claims = (dict(text="skip helps", rule="helps", margin=0.02, axis="model.kwargs.skip",
                     where=(("model.kwargs.depth", 8), ("loss.side_taps", ()))),)  # fmt: skip
    c.two_stage.max_seeds, c.two_stage.budget_s = max_seeds, budget_s
    return c


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda cl, ts: cl.update(rule="improves"), "unknown rule 'improves'"),
        (lambda cl, ts: cl.pop("margin"), "needs margin="),
        (lambda cl, ts: cl.update(margin=-0.1), "margin=-0.1 must be a positive"),
        (lambda cl, ts: cl.update(where=(("model.kwargs.depth", 20), ("loss.side_taps", ()))),
         r"where model.kwargs.depth=20, but the grid's model.kwargs.depth values are \['8'\]"),
        (lambda cl, ts: cl.update(where=(("model.kwargs.depth", 8),)),
         r"where must fix every other axis .* missing \['loss.side_taps'\]"),
        (lambda cl, ts: cl.update(axis="model.kwargs.width"), "is not a grid axis"),
        (lambda cl, ts: ts.update(max_seeds=3), "must exceed the grid's 3 pilot seeds"),
        (lambda cl, ts: ts.update(budget_s=-1.0), "budget_s=-1.0 must be seconds >= 0"),
    ],
)  # fmt: skip
def test_bad_claims_and_seed_caps_are_one_line_errors_before_training(tmp_path, change, message):
    c = grid_config()
    claim, ts = dict(c.claims[0]), dict(c.two_stage)
    change(claim, ts)
    c.claims, c.two_stage.max_seeds, c.two_stage.budget_s = (
        (claim,),
        ts["max_seeds"],
        ts["budget_s"],
    )
    with pytest.raises(ConfigError, match=message) as e:
        ablation.run_grid(c, tmp_path / "w", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "w").exists()  # nothing written


def test_a_claim_on_cells_the_grid_lacks_is_an_error():
    c = grid_config()
    c.grid = ((("model.kwargs.depth", (8,)), ("model.kwargs.skip", (False,)),
               ("loss.side_taps", ((),)), ("seed", (0, 1, 2))),
              (("model.kwargs.depth", (8,)), ("model.kwargs.skip", (True,)),
               ("loss.side_taps", (("stage1",),)), ("seed", (0, 1, 2))))  # fmt: skip
    with pytest.raises(ConfigError, match=r"the grid has no cells with model\.kwargs\.skip=True"):
        ablation.check_grid(c)


class FakeTraining:
    """Stands in for training: each cell's accuracy is a fixed number per configuration and
    seed, so that the pilot (seeds 0-2) is inconclusive and seeds 0-7 decide."""

    GAIN = (0.05, -0.01, 0.04, 0.03, 0.02, 0.04, 0.03, 0.02)  # skip's paired gain per seed

    def __init__(self):
        self.trained = []

    def acc(self, o):
        base = 0.8 + o["seed"] / 100
        return base + (self.GAIN[o["seed"]] if o["model.kwargs.skip"] else 0)

    def cell(self, config, overrides, cell_dir):
        self.trained.append(ablation.cell_name(overrides))
        cell_dir.mkdir(parents=True, exist_ok=True)
        return _cell(overrides, self.acc(overrides))

    def seeds(self, config, group, workdir):
        self.trained += [ablation.cell_name(o) for o in group]
        for o in group:
            (workdir / "cells" / ablation.cell_name(o)).mkdir(parents=True, exist_ok=True)
        return [_cell(o, self.acc(o)) for o in group]


@pytest.mark.parametrize("batch_seeds", [False, True])
def test_two_stage_adds_seeds_only_where_a_claim_is_undecided(tmp_path, monkeypatch, batch_seeds):
    fake = FakeTraining()
    monkeypatch.setattr(grid_run, "run_cell", fake.cell)
    monkeypatch.setattr(grid_run, "run_seeds", fake.seeds)
    c = grid_config(max_seeds=8)
    c.batch_seeds = batch_seeds
    w = tmp_path / "w"
    results = ablation.run_grid(c, w, progress=False)
    assert len(results) == 12 + 10  # the pilot, then seeds 3-7 of the two compared configs
    plan = json.loads((w / "seeds_plan.json").read_text())
    assert plan["level"] == 0.975
    assert plan["claims"][0]["pilot_verdict"] == "inconclusive"
    # pilot: d = 0.0267, std 0.0321 -> 17 seeds for 80% power at 97.5% (capped at 8)
    assert plan["claims"][0]["seeds_needed"] == 17 and plan["claims"][0]["seeds"] == 8
    added = {ablation.cell_name(o) for o in plan["cells"]}
    assert added == {f"depth=8,skip={s},side_taps=none,seed={k}"
                     for s in (False, True) for k in range(3, 8)}  # fmt: skip
    ablation.write_report(w)
    v = json.loads((w / "verdicts.json").read_text())["claims"][0]
    assert (v["verdict"], v["seeds"], v["level"]) == ("held", 8, 0.975)
    # all 8 seeds: mean 0.0275, std 0.0183, t(0.9875, 7) = 2.841 -> low 0.0091
    assert v["ci_low"] == pytest.approx(0.0275 - 2.841 * 0.018313 / 8**0.5, abs=2e-4)
    report = (w / "report.md").read_text()
    assert "pilot (3 seeds) inconclusive; extended to 8 seeds" in report
    # a re-run (resume) trains nothing and keeps the saved plan
    n = len(fake.trained)
    ablation.run_grid(c, w, progress=False)
    assert len(fake.trained) == n


def test_two_stage_budget_and_shards(tmp_path, monkeypatch):
    fake = FakeTraining()
    monkeypatch.setattr(grid_run, "run_cell", fake.cell)
    c = grid_config(max_seeds=8, budget_s=50.0)  # 10 cells of 10 s would be needed
    w = tmp_path / "w"
    ablation.run_grid(c, w, shard="0/2", progress=False)
    assert not (w / "seeds_plan.json").exists()  # the other shard's pilot is missing
    ablation.run_grid(c, w, shard="1/2", progress=False)
    plan = json.loads((w / "seeds_plan.json").read_text())
    assert plan["cells"] == [] and "past the budget" in plan["claims"][0]["why"]
    ablation.write_report(w)
    v = json.loads((w / "verdicts.json").read_text())["claims"][0]
    assert v["verdict"] == "inconclusive" and v["seeds_needed"] == 17  # 80% power at 97.5%


def _verdicts(path, verdict):
    path.mkdir()
    rec = {"text": "c1", "verdict": verdict, "estimate": 0.1, "ci_low": 0.05, "ci_high": 0.15,
           "seeds": 3}  # fmt: skip
    same = {"text": "c2", "verdict": "held", "estimate": None, "ci_low": None, "ci_high": None,
            "seeds": 1}  # fmt: skip
    (path / "verdicts.json").write_text(json.dumps({"claims": [rec, same]}))
    return str(path)


def test_compare_flags_differing_verdicts(tmp_path, capsys):
    a, b, c = (_verdicts(tmp_path / n, v) for n, v in (("a", "held"), ("b", "held"),
                                                        ("c", "inconclusive")))  # fmt: skip
    assert compare.main([a, b]) == 0
    assert "all 2 claims agree" in capsys.readouterr().out
    assert compare.main([a, c]) == 1
    out = capsys.readouterr().out
    assert "| c1 | held +0.100 [+0.050, +0.150] n=3 | inconclusive +0.100" in out
    assert "**NO**" in out and "1 of 2 claims differ" in out
    assert compare.main([a, str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_two_stage_counts_each_configurations_own_pilot_seeds():
    """A grid of products may give configurations different pilot seeds (the default grid:
    residual nets 0-4, plain 0-2): each is extended to the planned total from its own count."""
    from cnnlab.ablation import two_stage

    claim = dict(text="t", rule="helps", margin=0.02, axis="k", where=())
    c = Claim.of(claim, 0, [("k", ["a", "b"])])
    pilot = [_cell({"k": "a", "seed": s}, 0.8) for s in range(5)]
    pilot += [_cell({"k": "b", "seed": s}, 0.8 + (0.05, -0.01, 0.04)[s]) for s in range(3)]
    ts = two_stage.TwoStage(max_seeds=8, budget_s=0.0, pilot=(0, 1, 2, 3, 4))
    v = judge(c, interval(_p(0.0267, 0.0321, 3), ts.level))
    plan = two_stage.make_plan(ts, [c], [v], pilot)
    added = sorted((o["k"], o["seed"]) for o in plan["cells"])
    # b first gets the seeds 3, 4 that a has, so both stay paired on seeds 0-7
    assert added == [("a", 5), ("a", 6), ("a", 7)] + [("b", s) for s in range(3, 8)]
