"""Findings in numbers over whatever axes a grid names: the claims' verdicts (rules in
`cnnlab.ablation.claims`) and exploratory comparisons with multiplicity-adjusted intervals; the
statistics live here. `findings()` assembles the report's sections, taking the descriptive ones
(gradients, activations, what twins share) from `cnnlab.ablation.observations`, which infers
nothing.

Exploratory comparisons are every comparison no claim names: along each categorical axis, each
value against the baseline (test accuracy); along each numeric axis, its smallest value against
its largest (test accuracy and final train loss); each in every configuration of the other axes,
paired by seed. With k of them, Holm's step-down procedure (Holm 1979) at α: sorted by p-value,
the r-th (r = 1..k) is tested at α/(k - r + 1), and its interval is the paired t interval at
that level (a Holm-adjusted interval). "differs" is Holm's rejection (adjusted p < α): it implies
that the interval excludes 0; an interval that excludes 0 after the procedure has stopped at an
earlier comparison is not a difference. So none of them reads as a finding by chance.
"""

import dataclasses
import itertools

from cnnlab import dotted
from cnnlab.ablation.aggregate import Axis, by_seed, sort_rows, verdict_acc
from cnnlab.ablation.claims import INCONCLUSIVE, Claim, Verdict, judge
from cnnlab.ablation.observations import gradient_findings, twins_note
from cnnlab.ablation.result import CellResult
from cnnlab.stats import MAX_SEEDS, POWER, holm, holm_levels, interval, p_value, paired

ALPHA = 0.05  # every claim at 1 - ALPHA (1 - ALPHA/2 per look with two-stage seeds)
METRICS = {"accuracy": "test accuracy", "train_loss": "final train loss"}


def rules_text(level: float) -> str:
    return (
        f"Rules: each claim is one comparison, paired by seed: the estimate is the mean "
        f"difference, its interval Student's t at {100 * level:g}% with n - 1 degrees of freedom "
        "(n = seeds both configurations finished), and its margin is stated in the claim. "
        "*helps* / *hurts* / *degrades*: held when the interval lies above 0 and reaches the "
        "margin, negligible when it lies above 0 but wholly below the margin (an effect smaller "
        "than matters), contradicted when it reaches 0 or below and lies wholly below the "
        "margin, else inconclusive (these regions are disjoint: an interval inside a held one is "
        "never contradicted, and the other way round). *does not degrade* (non-inferiority): "
        "held when it lies above -margin, contradicted when wholly below -margin. 'Seeds needed' "
        f"is the fewest seeds with which a run whose true effect and spread are the observed "
        f"ones is decided with probability {POWER:.0%}. Test accuracy is PreciseBN's when the "
        "runs recorded it; final train loss is the mean over the last 10% of steps."
    )


def _metric(name: str):
    return verdict_acc if name == "accuracy" else (lambda r: r.train_loss)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """b - a of a metric along one axis, the other axes fixed by `where` (value labels)."""

    axis: Axis
    a: str
    b: str
    where: tuple[tuple[str, str], ...]
    metric: str

    def config(self, side: str, axes: list[Axis]) -> tuple[str, ...]:
        fixed = dict(self.where) | {self.axis.key: getattr(self, side)}
        return tuple(fixed[x.key] for x in axes)

    def text(self) -> str:
        where = ", ".join(f"{dotted.short(k)}={v}" for k, v in self.where)
        return f"{where + ': ' if where else ''}{self.axis.name} {self.a} -> {self.b}"


def paired_interval(results, axes, a, b, metric: str, level: float, sign: int = 1):
    """The paired t interval of metric(b) - metric(a) (a - b with sign -1) over shared seeds."""
    values = by_seed(results, axes, _metric(metric))
    x, y = values.get(a, {}), values.get(b, {})
    p = paired(y, x) if sign < 0 else paired(x, y)
    return p, interval(p, level)


def verdicts(claims: list[Claim], results, axes: list[Axis], level: float) -> list[Verdict]:
    keys = [a.key for a in axes]
    return [
        judge(c, paired_interval(results, axes, c.config("a", keys), c.config("b", keys),
                                 c.rule.metric, level, c.rule.sign)[1])
        for c in claims
    ]  # fmt: skip


def claim_text(v: Verdict) -> str:
    c, ci = v.claim, v.ci
    name = dotted.short(c.axis)
    head = f"**{c.text}**: **{v.verdict}**. {name} {c.a} -> {c.b} at {c.where_text()}: "
    what = METRICS[c.rule.metric] + (" (a - b)" if c.rule.sign < 0 else "")
    if ci.n < 2:
        return head + f"{what}: {ci.n} paired seed(s) finished, too few for an interval."
    out = (
        f"{head}{what} {ci.estimate:+.3f}, {100 * ci.level:g}% CI [{ci.low:+.3f}, "
        f"{ci.high:+.3f}] over {ci.n} paired seeds (std of the differences {ci.std:.3f}); rule "
        f"*{c.rule.name.replace('_', ' ')}*, margin {c.margin:g}: "
        f"{c.rule.says.format(m=f'{c.margin:g}')}."
    )
    if v.verdict == INCONCLUSIVE:
        out += (
            f" Seeds needed: {v.seeds_needed} (with that many, a run whose true effect and "
            f"spread are these is decided {POWER:.0%} of the time)."
            if v.seeds_needed
            else f" No number of seeds up to {MAX_SEEDS} would decide it {POWER:.0%} of the "
            "time at this estimate and spread."
        )
    return out


def comparisons(axes: list[Axis], claims: list[Claim]) -> list[Comparison]:
    """Every comparison the grid allows that no claim names (see the module docstring)."""
    out = []
    for ax in axes:
        others = [b for b in axes if b is not ax]
        if ax.numeric:
            pairs = [(ax.values[0], ax.values[-1], m) for m in METRICS]
        else:
            pairs = [(ax.baseline, v, "accuracy") for v in ax.values[1:]]
        for combo in itertools.product(*(b.values for b in others)):
            where = tuple((b.key, v) for b, v in zip(others, combo, strict=True))
            out += [Comparison(ax, a, b, where, m) for a, b, m in pairs]
    named = {(c.axis, c.a, c.b, c.where, c.rule.metric) for c in claims}
    named |= {(c.axis, c.b, c.a, c.where, c.rule.metric) for c in claims}
    return [c for c in out if (c.axis.key, c.a, c.b, c.where, c.metric) not in named]


def exploratory(results, axes: list[Axis], claims: list[Claim]) -> list[dict]:
    """The exploratory comparisons with >= 2 paired seeds: estimate, Holm-adjusted interval
    and p-value, and whether Holm's test finds a difference."""
    found = []
    for c in comparisons(axes, claims):
        p, _ = paired_interval(results, axes, c.config("a", axes), c.config("b", axes),
                               c.metric, 0.95)  # fmt: skip
        if p.n >= 2:
            found.append((c, p))
    raw = [p_value(p) for _, p in found]
    adjusted = holm(raw)
    levels = holm_levels(raw, ALPHA)  # an interval excludes 0 exactly when Holm rejects
    out = []
    for i, ((c, p), p_adj) in enumerate(zip(found, adjusted, strict=True)):
        ci = interval(p, levels[i])
        differs = p_adj < ALPHA
        out.append({
            "comparison": c.text(), "metric": c.metric, "estimate": ci.estimate,
            "ci_low": ci.low, "ci_high": ci.high, "level": ci.level, "seeds": ci.n,
            "p_holm": p_adj, "differs": differs,
            "text": (
                f"{c.text()}: {METRICS[c.metric]} {ci.estimate:+.3f}, {100 * ci.level:.4g}% CI "
                f"[{ci.low:+.3f}, {ci.high:+.3f}] over {ci.n} paired seeds; Holm-adjusted "
                f"p {p_adj:.2g}: {'differs' if differs else 'no difference shown'}."
            ),
        })  # fmt: skip
    return out


def findings(
    results: list[CellResult], rows: list[dict], axes: list[Axis], spec: dict | None = None
) -> dict:
    """Sections of the report (claims, exploratory, gradients, notes) and the verdicts."""
    from cnnlab.ablation.claims import parse_claims

    spec = spec or {}
    rows = sort_rows(rows, axes)
    level = spec.get("level", 1 - ALPHA)
    claims = parse_claims(spec.get("claims", ()), [(a.key, a.values) for a in axes])
    judged = verdicts(claims, results, axes, level)
    explored = exploratory(results, axes, claims)
    failed = [r for r in results if not r.done]
    notes = twins_note(rows, axes, spec.get("recipe", {}))
    if failed:
        notes.append(
            f"{len(failed)} cell(s) failed: "
            + "; ".join(f"{r.name}: {r.reason or '?'}" for r in failed[:5])
        )
    return {
        "level": level,
        "rules": rules_text(level),
        "claims": [claim_text(v) for v in judged],
        "verdicts": judged,
        "exploratory": [e["text"] for e in explored],
        "exploratory_records": explored,
        "gradients": gradient_findings(results, axes),
        "notes": notes,
    }
