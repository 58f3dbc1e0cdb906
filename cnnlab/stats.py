"""Seed statistics shared by reports: mean and sample std, paired differences, Student-t
intervals, the seeds a claim needs to be decided with a stated power, Holm's adjustment.

Every interval here is the textbook paired t interval: for the differences d_k = b_k - a_k over
the n seeds both sides finished, mean(d) ± t(1 - α/2, n - 1) · std(d) / √n (std with n - 1).
"""

import math
import statistics
from typing import NamedTuple

import numpy as np
from scipy import stats as _scipy

MAX_SEEDS = 1000  # seeds_needed searches up to here; beyond it answers None


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (std 0 for one, nan for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


class Paired(NamedTuple):
    """Paired differences b - a (same seed): mean, sample std, count, standard error."""

    mean: float
    std: float
    n: int

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n else math.nan


def paired(a: dict, b: dict) -> Paired:
    """Differences b[k] - a[k] over the keys (seeds) both have with finite values."""
    keys = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    mean, std = mean_std([b[k] - a[k] for k in keys])
    return Paired(mean, std, len(keys))


def t_quantile(level: float, n: int) -> float:
    """Two-sided Student-t critical value: t(1 - (1 - level) / 2, n - 1); 4.303 for 95%, n=3."""
    return float(_scipy.t.ppf(0.5 + level / 2, n - 1))


def half_width(std: float, n: int, level: float) -> float:
    """Half-width of the t interval of a mean of n values with sample std `std` (n >= 2)."""
    return t_quantile(level, n) * std / math.sqrt(n)


class Interval(NamedTuple):
    """A paired t interval: estimate (mean difference), [low, high] at `level`, n, std."""

    estimate: float
    low: float
    high: float
    n: int
    std: float
    level: float


def interval(p: Paired, level: float = 0.95) -> Interval:
    """The t interval of a paired mean difference; [-inf, inf] with fewer than 2 seeds."""
    if p.n < 2:
        return Interval(p.mean, -math.inf, math.inf, p.n, p.std, level)
    w = half_width(p.std, p.n, level)
    return Interval(p.mean, p.mean - w, p.mean + w, p.n, p.std, level)


def p_value(p: Paired) -> float:
    """Two-sided paired t-test of 'mean difference = 0' (1.0 with fewer than 2 seeds)."""
    if p.n < 2:
        return 1.0
    if p.std == 0:
        return 0.0 if p.mean != 0 else 1.0
    return float(2 * _scipy.t.sf(abs(p.mean) / p.se, p.n - 1))


POWER = 0.8  # seeds_needed: the probability with which the printed n decides the claim


def decide_probability(effect: float, std: float, n: int, u: float, v: float,
                       level: float) -> float:  # fmt: skip
    """P(a paired t interval over n seeds is decided) when the differences are Normal(effect,
    std): it is undecided exactly when low <= u and high >= v (u <= v; cnnlab.ablation.claims'
    rules). Exact for Normal differences: the sample mean and std are independent, so this
    averages, over 400 quantiles of std's chi distribution, the Normal probability that the
    mean falls in [v - w, u + w] (w the half-width that std gives)."""
    if std == 0:
        return 1.0 if (effect > u or effect < v) else 0.0
    se = std / math.sqrt(n)
    t = t_quantile(level, n)
    q = (np.arange(400) + 0.5) / 400
    s = std * np.sqrt(_scipy.chi2.ppf(q, n - 1) / (n - 1))
    w = t * s / math.sqrt(n)
    lo, hi = v - w, u + w  # the mean's undecided band, empty when hi < lo
    undecided = np.clip(_scipy.norm.cdf((hi - effect) / se) - _scipy.norm.cdf((lo - effect) / se),
                        0, None)  # fmt: skip
    return float(1 - undecided.mean())


def seeds_needed(effect: float, std: float, u: float, v: float, level: float,
                 at_least: int = 2, power: float = POWER) -> int | None:  # fmt: skip
    """Fewest seeds n >= at_least with which the claim is decided with probability >= `power`
    when the true mean difference is `effect` and its std `std` (the observed ones): see
    `decide_probability`. None when no n up to MAX_SEEDS reaches it (an effect on a boundary)."""
    if not (math.isfinite(std) and math.isfinite(effect)):
        return None
    ok = lambda n: decide_probability(effect, std, n, u, v, level) >= power
    lo, hi = max(2, at_least), MAX_SEEDS
    if not ok(hi):
        return None
    while lo < hi:  # the probability grows with n (narrower intervals, a tighter mean)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    out, running = [0.0] * k, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        out[i] = running
    return out


def holm_levels(p_values: list[float], alpha: float = 0.05) -> list[float]:
    """The confidence level of each comparison's interval that agrees with Holm's step-down
    test: the r-th smallest p-value (from 0) at 1 - alpha / (k - r) while Holm rejects, and
    every comparison from the first it does not reject on at that step's level. An interval
    then excludes 0 exactly when Holm rejects (p < 1 - level)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    rank = {i: r for r, i in enumerate(order)}
    stop = next((r for r, i in enumerate(order) if p_values[i] >= alpha / (k - r)), k)
    return [1 - alpha / (k - min(rank[i], stop)) for i in range(k)]
