"""Claims a grid states, checked before anything trains, and judged by stated rules.

A claim names one comparison: along one axis, from value `a` to value `b` (default: a
categorical axis's baseline to its other value, a numeric axis's smallest to its largest), with
every other axis fixed by `where`. Its estimate is the mean paired (same seed) difference b - a
of the rule's metric; its interval is Student's t at the grid's level with n - 1 degrees of
freedom over the n seeds both configurations finished (`cnnlab.stats`). The margin is set in
the claim, in the metric's units, never derived from the spread. Verdicts, with [lo, hi] the
interval and m the margin, the decision regions are disjoint:

- helps (test accuracy b - a), hurts (the same on a - b), degrades (final train loss b - a):
  held when lo > 0 and hi >= m (an effect, possibly as large as matters); negligible when
  0 < lo and hi < m (an effect, but smaller than the margin: "held, below the margin");
  contradicted when lo <= 0 and hi < m (no effect as large as the margin: any benefit is
  smaller than matters, or there is none); inconclusive when lo <= 0 and hi >= m.
- does_not_degrade (test accuracy b - a, non-inferiority): held when lo > -m; contradicted when
  hi < -m; else inconclusive.

An interval inside another never gets the opposite verdict (held vs contradicted): held needs
lo > 0 (or > -m) and hi >= m, which every interval inside a contradicted one (hi < m) lacks,
and contradicted needs lo <= 0, which every interval inside a held one lacks. A wider interval
(a noisier copy of the same means, or fewer seeds) can only move a verdict towards inconclusive
(tests/test_verdicts.py checks both over random nested intervals for every rule).
"""

import dataclasses
import math
from collections.abc import Mapping

from cnnlab import dotted
from cnnlab.ablation.aggregate import Axis
from cnnlab.ablation.grid import label
from cnnlab.errors import ConfigError
from cnnlab.stats import Interval, seeds_needed

HELD, NEGLIGIBLE, CONTRADICTED, INCONCLUSIVE = "held", "negligible", "contradicted", "inconclusive"
VERDICTS = (HELD, NEGLIGIBLE, CONTRADICTED, INCONCLUSIVE)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a claim is judged: the metric, the sign of the estimate, and the test."""

    name: str
    metric: str  # 'accuracy' (the verdict test accuracy) or 'train_loss'
    sign: int  # estimate = sign · (b - a)
    non_inferiority: bool  # else superiority with a relevance margin
    says: str  # the rule in words, {m} for the margin

    def verdict(self, ci: Interval, margin: float) -> str:
        return self.region(ci.low, ci.high, margin)

    def region(self, low: float, high: float, margin: float) -> str:
        """The verdict of the interval [low, high] (the module docstring's regions)."""
        if self.non_inferiority:
            return HELD if low > -margin else CONTRADICTED if high < -margin else INCONCLUSIVE
        if low > 0:
            return HELD if high >= margin else NEGLIGIBLE
        return CONTRADICTED if high < margin else INCONCLUSIVE

    def undecided(self, margin: float) -> tuple[float, float]:
        """(u, v): an interval centred at c with half-width w is inconclusive exactly when
        c - w <= u and c + w >= v (superiority: u = 0, v = m; non-inferiority: u = v = -m)."""
        return (-margin, -margin) if self.non_inferiority else (0.0, margin)


_SUPERIORITY = (
    "held when the interval of the {what} lies above 0 and reaches the margin {m}; "
    "negligible when it lies above 0 but wholly below {m}; contradicted when it "
    "reaches 0 or below and lies wholly below {m}"
)
RULES = {
    r.name: r
    for r in (
        Rule("helps", "accuracy", 1, False,
             _SUPERIORITY.replace("{what}", "test-accuracy gain")),
        Rule("hurts", "accuracy", -1, False,
             _SUPERIORITY.replace("{what}", "test-accuracy loss")),
        Rule("degrades", "train_loss", 1, False,
             _SUPERIORITY.replace("{what}", "rise in final train loss")),
        Rule("does_not_degrade", "accuracy", 1, True,
             "non-inferiority: held when the interval of the change in test accuracy lies above "
             "-{m}; contradicted when it lies wholly below -{m}"),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a grid config, typed and checked against the grid's axes."""

    text: str
    rule: Rule
    margin: float
    axis: str  # dotted key
    a: str  # value labels on `axis`: the estimate is b - a
    b: str
    where: tuple[tuple[str, str], ...]  # every other axis: (dotted key, value label)

    def config(self, side: str, axis_keys: list[str]) -> tuple[str, ...]:
        """The compared configuration ('a' or 'b') as value labels in axis order."""
        fixed = dict(self.where) | {self.axis: getattr(self, side)}
        return tuple(fixed[k] for k in axis_keys)

    def where_text(self) -> str:
        return ", ".join(f"{dotted.short(k)}={v}" for k, v in self.where) or "all cells"

    @classmethod
    def of(cls, raw, index: int, axes: list[tuple[str, list[str]]]) -> "Claim":
        """From a config entry dict(text=, rule=, margin=, axis=, where=((key, value), ...),
        compare=(a, b) optional); `axes`: the grid's (key, value labels) without the seed.
        Every mistake is a one-line ConfigError naming the claim."""
        name = f"config.claims[{index}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{name} must be dict(text=, rule=, margin=, axis=, where=((key, value), ...)); "
                f"got {raw!r}"
            )
        keys = {"text", "rule", "margin", "axis", "where", "compare"}
        if unknown := sorted(set(raw) - keys):
            raise ConfigError(f"{name} has unknown keys {unknown}; valid: {sorted(keys)}")
        text = raw.get("text")
        if not isinstance(text, str) or not text:
            raise ConfigError(f"{name} needs text='what the claim says'")
        name = f"{name} ({text!r})"
        rule = raw.get("rule")
        if rule not in RULES:
            raise ConfigError(f"{name}: unknown rule {rule!r}; use one of {sorted(RULES)}")
        margin = raw.get("margin")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise ConfigError(
                f"{name} needs margin=<positive number> in its metric's units (e.g. 0.02 test "
                f"accuracy, 0.1 train loss): the smallest difference that matters"
            )
        if not (math.isfinite(margin) and margin > 0):
            raise ConfigError(f"{name}: margin={margin!r} must be a positive finite number")
        values = dict(axes)
        axis = raw.get("axis")
        if axis not in values:
            raise ConfigError(f"{name}: axis={axis!r} is not a grid axis; axes: {list(values)}")
        where = raw.get("where", ())
        where = dict(where.items() if isinstance(where, Mapping) else where)
        for k, v in where.items():
            if k == axis or k not in values:
                raise ConfigError(
                    f"{name}: where names {k!r}, which is "
                    + ("the claim's own axis" if k == axis else f"not a grid axis {list(values)}")
                )
            if label(v) not in values[k]:
                raise ConfigError(
                    f"{name}: where {k}={label(v)}, but the grid's {k} values are {values[k]}"
                )
        if missing := [k for k in values if k != axis and k not in where]:
            raise ConfigError(
                f"{name}: where must fix every other axis (one comparison per claim); "
                f"missing {missing}"
            )
        ends = raw.get("compare") or _default_ends(values[axis], name, axis)
        if len(ends) != 2 or any(label(v) not in values[axis] for v in ends):
            raise ConfigError(
                f"{name}: compare={ends!r} must be two of the grid's {axis} values {values[axis]}"
            )
        a, b = (label(v) for v in ends)
        if a == b:
            raise ConfigError(f"{name}: compare names {a} twice; give two different values")
        where_labels = tuple((k, label(where[k])) for k, _ in axes if k in where)
        return cls(text, RULES[rule], float(margin), axis, a, b, where_labels)

    def record(self) -> dict:
        where = [list(w) for w in self.where]
        return {"text": self.text, "rule": self.rule.name, "margin": self.margin,
                "axis": self.axis, "a": self.a, "b": self.b, "where": where}  # fmt: skip


def _default_ends(values: list[str], name: str, axis: str) -> tuple[str, str]:
    ordered = Axis(axis, values)  # the numeric order the report uses
    if len(values) < 2:
        raise ConfigError(f"{name}: the grid has one {axis} value; a claim compares two")
    if not ordered.numeric and len(values) > 2:
        raise ConfigError(
            f"{name}: {axis} has {len(values)} values {values}; say which two with compare=(a, b)"
        )
    return ordered.values[0], ordered.values[-1]


def parse_claims(raw_claims, axes: list[tuple[str, list[str]]], configs=None) -> list[Claim]:
    """Every claim of a config, checked; `configs`: the grid's configurations (value-label
    tuples in axis order, without the seed), so that both compared ones must be cells."""
    if not isinstance(raw_claims, (tuple, list)):
        raise ConfigError(f"config.claims must be a tuple of dict(...); got {raw_claims!r}")
    claims = [Claim.of(raw, i, axes) for i, raw in enumerate(raw_claims)]
    keys = [k for k, _ in axes]
    for c in claims if configs is not None else ():
        for side in "ab":
            if c.config(side, keys) not in configs:
                raise ConfigError(
                    f"claim {c.text!r}: the grid has no cells with {c.axis}={getattr(c, side)}, "
                    f"{c.where_text()}; add them to a product of config.grid"
                )
    if len({c.text for c in claims}) < len(claims):
        raise ConfigError("config.claims: two claims have the same text; name each once")
    return claims


@dataclasses.dataclass
class Verdict:
    """A judged claim, as verdicts.json records it."""

    claim: Claim
    verdict: str
    ci: Interval
    seeds_needed: int | None  # inconclusive only: for POWER at the observed estimate and std

    def record(self, axis_keys: list[str]) -> dict:
        c, ci = self.claim, self.ci
        finite = lambda x: x if math.isfinite(x) else None
        return {
            **c.record(),
            "verdict": self.verdict,
            "metric": c.rule.metric,
            "test": "paired t",
            "level": ci.level,
            "estimate": finite(ci.estimate),
            "ci_low": finite(ci.low),
            "ci_high": finite(ci.high),
            "std": finite(ci.std),
            "seeds": ci.n,
            "seeds_needed": self.seeds_needed,
            "compared": [dict(zip(axis_keys, c.config(s, axis_keys), strict=True)) for s in "ab"],
        }


def judge(claim: Claim, ci: Interval) -> Verdict:
    """The verdict of a claim on its interval; when inconclusive, the seeds with which a run
    whose true effect and spread are the observed ones is decided with probability POWER."""
    verdict = claim.rule.verdict(ci, claim.margin) if ci.n >= 2 else INCONCLUSIVE
    needed = None
    if verdict == INCONCLUSIVE and ci.n >= 2:
        u, v = claim.rule.undecided(claim.margin)
        needed = seeds_needed(ci.estimate, ci.std, u, v, ci.level, at_least=ci.n + 1)
    return Verdict(claim, verdict, ci, needed)
